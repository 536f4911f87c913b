"""Stage keys: each knob moves exactly the keys of the stages it decides."""

from qa_lib.config import PipelineConfig
from qa_lib.plan import TRAIN_PARAMS, train_keys


def test_every_training_knob_is_a_config_field():
    assert set(TRAIN_PARAMS) <= set(PipelineConfig.model_fields)


def test_training_knobs_change_the_model_key_only(tiny_model):
    base = PipelineConfig(model=str(tiny_model), train_data={"path": "data/squad/train-v1.1.sample.json"})
    keys = train_keys(base, str(tiny_model))
    for change in ({"hidden_dropout": 0.1}, {"attention_dropout": None}, {"freeze_word_embeddings": False},
                   {"learning_rate": 1e-4}, {"batching": "packed"}, {"tokens_per_batch": 4096}):
        other = train_keys(base.model_copy(update=change), str(tiny_model))
        assert other.features == keys.features and other.data == keys.data, change
        assert other.model != keys.model, change
    # A memory setting that trains the same weights (tests/test_train.py) keeps the stored model.
    assert train_keys(base.model_copy(update={"activation_checkpointing": True}), str(tiny_model)) == keys
    windows = train_keys(base.model_copy(update={"doc_stride": 32}), str(tiny_model))
    assert windows.features != keys.features and windows.model != keys.model


def test_precision_changes_logits_but_not_features(tiny_model):
    """Evaluating one model in bf16 and in fp32 gives different logits: they must not share a cache key."""
    from qa_lib.plan import eval_keys

    base = PipelineConfig(model=str(tiny_model), eval_data={"path": "data/squad/dev-v1.1.super_bowl_50.json"})
    fp32 = eval_keys(base, "model-x", "tok-x")
    bf16 = eval_keys(base.model_copy(update={"precision": "bf16"}), "model-x", "tok-x")
    assert bf16.features == fp32.features and bf16.logits != fp32.logits
