"""Prefect flows: train_qa, evaluate_qa, retrain."""
