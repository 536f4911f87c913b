import pytest
from transformers import TrainerCallback

from qa_lib.config import PipelineConfig
from qa_lib.features import build_train_features
from qa_lib.modeling import load_tokenizer
from qa_lib.train import fine_tune, last_checkpoint, resolve_precision


class _Interrupt(TrainerCallback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt("simulated interruption")


def _config(tiny_model, tmp_path, **kw):
    return PipelineConfig(model=str(tiny_model), output_dir=str(tmp_path), per_device_train_batch_size=8,
                          max_steps=6, save_steps=2, logging_steps=1, learning_rate=1e-3, **kw)


def test_resume_after_interrupted_training(tiny_model, train_examples, tmp_path):
    tok = load_tokenizer(str(tiny_model))
    feats = build_train_features(train_examples.select(range(80)), tok, 128, 48)
    cfg = _config(tiny_model, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(cfg, feats, tmp_path, callbacks=[_Interrupt(5)])
    ckpt = last_checkpoint(tmp_path / "checkpoints")
    assert ckpt is not None and ckpt.endswith("checkpoint-4")
    assert not (tmp_path / "model").exists()
    result = fine_tune(cfg, feats, tmp_path)
    assert result.resumed_from.endswith("checkpoint-4")
    steps = [h["step"] for h in result.log_history if "loss" in h]
    assert max(steps) == 6 and 5 in steps and 6 in steps
    from transformers import AutoModelForQuestionAnswering

    AutoModelForQuestionAnswering.from_pretrained(result.model_dir)  # a standard model folder
    assert (tmp_path / "model" / "tokenizer.json").exists()


def test_precision_auto_is_fp32_on_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    assert resolve_precision("auto") == "fp32"
    from qa_lib.errors import ConfigError

    with pytest.raises(ConfigError, match="fp16"):
        resolve_precision("fp16")
