"""Stage keys: each knob moves exactly the keys of the stages it decides."""

from qa_lib.config import PipelineConfig
from qa_lib.plan import TRAIN_PARAMS, train_keys


def test_every_training_knob_is_a_config_field():
    assert set(TRAIN_PARAMS) <= set(PipelineConfig.model_fields)


def test_training_knobs_change_the_model_key_only(tiny_model):
    base = PipelineConfig(model=str(tiny_model), train_data={"path": "data/squad/train-v1.1.sample.json"})
    keys = train_keys(base)
    for change in ({"hidden_dropout": 0.1}, {"attention_dropout": None}, {"freeze_word_embeddings": False},
                   {"learning_rate": 1e-4}):
        other = train_keys(base.model_copy(update=change))
        assert other.features == keys.features and other.data == keys.data, change
        assert other.model != keys.model, change
    windows = train_keys(base.model_copy(update={"doc_stride": 32}))
    assert windows.features != keys.features and windows.model != keys.model
