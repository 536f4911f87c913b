"""A model card whose model-index carries the eval dataset and EM/F1."""

from __future__ import annotations


def model_card(model_name: str, base_model: str, dataset_name: str, metrics: dict, v2: bool) -> str:
    em = metrics.get("exact", metrics.get("exact_match", 0.0))
    f1 = metrics.get("f1", 0.0)
    dataset_id = "squad_v2" if v2 else "squad"
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: question-answering
tags:
- question-answering
- qa-pipeline
datasets:
- {dataset_id}
model-index:
- name: {model_name}
  results:
  - task:
      type: question-answering
      name: Extractive Question Answering
    dataset:
      type: {dataset_id}
      name: {dataset_name}
    metrics:
    - type: exact_match
      value: {em:.4f}
      name: Exact Match
    - type: f1
      value: {f1:.4f}
      name: F1
---

# {model_name}

Fine-tuned from `{base_model}` for extractive question answering
({'SQuAD v2.0 style, with unanswerable questions' if v2 else 'SQuAD v1.1 style'}) by qa-pipeline.

| metric | value |
| --- | --- |
| exact match | {em:.2f} |
| F1 | {f1:.2f} |

Evaluated on `{dataset_name}` with the official SQuAD rules. Load it with
`AutoModelForQuestionAnswering.from_pretrained(...)` or `qa_lib.answer.QuestionAnswerer`.
"""
