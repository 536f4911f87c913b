import os
import signal
from pathlib import Path

import pytest
from transformers import TrainerCallback

from qa_lib.config import PipelineConfig
from qa_lib.features import build_train_features
from qa_lib.modeling import load_tokenizer
from qa_lib.predict import resolve_precision
from qa_lib.train import fine_tune, last_checkpoint


class _Interrupt(TrainerCallback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt("simulated interruption")


def _config(tiny_model, tmp_path, **kw):
    raw = dict(model=str(tiny_model), output_dir=str(tmp_path), per_device_train_batch_size=8,
               max_steps=6, save_steps=2, logging_steps=1, learning_rate=1e-3)
    return PipelineConfig(**{**raw, **kw})


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


class _Terminate(TrainerCallback):
    """SIGTERM to this process at a step's end, as a stopping pod's process gets it (`times` in a row)."""

    def __init__(self, at_step, times=1):
        self.at_step, self.times = at_step, times

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGTERM)


class _SeesSaves(TrainerCallback):
    """Each save's step, and whether the signal was still held then (not yet passed on to `handler`)."""

    def __init__(self, handler=None):
        self.saves, self.handler = [], handler or _raise_terminated

    def on_save(self, args, state, control, **kwargs):
        self.saves.append((state.global_step, signal.getsignal(signal.SIGTERM) is not self.handler))


class _Terminated(BaseException):
    """What Prefect's SIGTERM handler does: raise (its TerminationSignal)."""


def _raise_terminated(signum, frame):
    raise _Terminated(signum)


def _train_with_sigterm_handler(handler, cfg, feats, tmp_path, callbacks, **kw):
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        return fine_tune(cfg, feats, tmp_path, callbacks=callbacks, **kw)
    finally:
        handed_back = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, previous)
        assert handed_back is handler


def test_sigterm_saves_a_checkpoint_then_stops_and_a_rerun_resumes_from_it(tiny_model, train_examples, tmp_path):
    """A preempted machine gets SIGTERM some seconds before it is killed: the step ends, a checkpoint
    is saved, then the signal goes on to the handler that was there (Prefect's raises)."""
    tok = load_tokenizer(str(tiny_model))
    feats = build_train_features(train_examples.select(range(80)), tok, 128, 48)
    cfg = _config(tiny_model, tmp_path, max_steps=8, save_steps=100)  # no periodic checkpoint to fall back on
    upload = _SeesSaves()  # where CheckpointToStore stands: it must upload before the signal goes on
    with pytest.raises(_Terminated):
        _train_with_sigterm_handler(_raise_terminated, cfg, feats, tmp_path, [_Terminate(3), upload])
    assert last_checkpoint(tmp_path / "checkpoints").endswith("checkpoint-3")
    assert upload.saves == [(3, True)]
    assert not (tmp_path / "model").exists()
    result = fine_tune(cfg, feats, tmp_path)
    assert result.resumed_from.endswith("checkpoint-3")
    steps = [h["step"] for h in result.log_history if "loss" in h]
    assert steps == list(range(1, 9))  # the first 3 from the checkpoint, none trained twice


@pytest.mark.parametrize("intent", ["cancel", "reschedule", None])
def test_under_a_prefect_runner_a_cancel_stops_at_once_and_any_other_sigterm_saves_first(intent, tiny_model,
                                                                                          train_examples, tmp_path):
    """A runner sends its intent over Prefect's control channel, then SIGTERM. The run acknowledges
    the intent only while Prefect's handler is installed (unacknowledged, a cancel ends Crashed), so
    training's handler stands in for it: the channel here is Prefect's own code, a socket pair for
    the runner's end. A cancel goes on to Prefect at once; a reschedule (a preempted pod's
    supervisor) or a SIGTERM with no intent saves a checkpoint first."""
    import socket

    from prefect._internal import control_listener
    from prefect.exceptions import TerminationSignal
    from prefect.utilities import engine

    from tasks.sigterm import SharedWithPrefect

    prefects = engine._prefect_sigterm_handler
    acks = []

    class _Runner(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                if intent:
                    runner_end, run_end = socket.socketpair()
                    with runner_end, run_end:
                        acks.append(control_listener._acknowledge_intent(run_end, intent) and runner_end.recv(1))
                os.kill(os.getpid(), signal.SIGTERM)

    tok = load_tokenizer(str(tiny_model))
    feats = build_train_features(train_examples.select(range(80)), tok, 128, 48)
    cfg = _config(tiny_model, tmp_path, max_steps=8, save_steps=100)
    upload = _SeesSaves(prefects)
    try:
        with pytest.raises(TerminationSignal):
            _train_with_sigterm_handler(prefects, cfg, feats, tmp_path, [_Runner(), upload],
                                        sigterm_owner=SharedWithPrefect(engine, control_listener))
    finally:
        control_listener.clear_intent()
    assert engine._prefect_sigterm_handler is prefects  # given back
    assert acks == ([b"a"] if intent else [])
    if intent == "cancel":
        assert upload.saves == [] and last_checkpoint(tmp_path / "checkpoints") is None
    else:
        assert upload.saves == [(3, True)] and last_checkpoint(tmp_path / "checkpoints").endswith("checkpoint-3")


def test_a_second_sigterm_stops_at_once_and_one_that_is_ignored_stays_ignored(tiny_model, train_examples, tmp_path):
    tok = load_tokenizer(str(tiny_model))
    feats = build_train_features(train_examples.select(range(80)), tok, 128, 48)
    cfg = _config(tiny_model, tmp_path, max_steps=8, save_steps=100)
    with pytest.raises(_Terminated):
        _train_with_sigterm_handler(_raise_terminated, cfg, feats, tmp_path, [_Terminate(3, times=2)])
    assert last_checkpoint(tmp_path / "checkpoints") is None
    result = _train_with_sigterm_handler(signal.SIG_IGN, cfg, feats, tmp_path, [_Terminate(3)])
    assert result.resumed_from is None and (tmp_path / "model").is_dir()
    assert last_checkpoint(tmp_path / "checkpoints") is None


def test_a_sigterm_handler_that_returns_gets_no_half_trained_model(tiny_model, train_examples, tmp_path):
    """Training stopped for the signal; a handler that lets the process go on must not turn that
    into a finished model."""
    from qa_lib.termination import TrainingStopped

    tok = load_tokenizer(str(tiny_model))
    feats = build_train_features(train_examples.select(range(80)), tok, 128, 48)
    cfg = _config(tiny_model, tmp_path, max_steps=8, save_steps=100)
    seen = []
    with pytest.raises(TrainingStopped, match="SIGTERM at step 3 of 8"):
        _train_with_sigterm_handler(lambda signum, frame: seen.append(signum), cfg, feats, tmp_path, [_Terminate(3)])
    assert seen == [signal.SIGTERM]
    assert last_checkpoint(tmp_path / "checkpoints").endswith("checkpoint-3")
    assert not (tmp_path / "model").exists()


def test_resume_skips_a_checkpoint_cut_off_while_saving(tiny_model, train_examples, tmp_path):
    """A run killed while writing checkpoint-6 leaves it without (or with half of) trainer_state.json,
    which the Trainer writes last: resuming takes checkpoint-4 and clears the broken folder."""
    import shutil

    tok = load_tokenizer(str(tiny_model))
    feats = build_train_features(train_examples.select(range(80)), tok, 128, 48)
    cfg = _config(tiny_model, tmp_path, max_steps=8)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(cfg, feats, tmp_path, callbacks=[_Interrupt(5)])
    ckpts = tmp_path / "checkpoints"
    shutil.copytree(ckpts / "checkpoint-4", ckpts / "checkpoint-6")
    state = (ckpts / "checkpoint-6" / "trainer_state.json").read_text()
    (ckpts / "checkpoint-6" / "trainer_state.json").write_text(state[: len(state) // 2])
    shutil.copytree(ckpts / "checkpoint-4", ckpts / "checkpoint-7")
    (ckpts / "checkpoint-7" / "trainer_state.json").unlink()
    assert last_checkpoint(ckpts).endswith("checkpoint-4")
    assert not (ckpts / "checkpoint-6").exists() and not (ckpts / "checkpoint-7").exists()
    result = fine_tune(cfg, feats, tmp_path)
    assert result.resumed_from.endswith("checkpoint-4")
    assert max(h["step"] for h in result.log_history if "loss" in h) == 8


def test_a_diverging_run_fails_and_saves_no_model(tiny_model, train_examples, tmp_path):
    """A NaN loss used to train on to the end: NaN weights saved as the model, scored near zero,
    and promoted by a first retrain."""
    from qa_lib.errors import ModelError

    feats = build_train_features(train_examples.select(range(40)), load_tokenizer(str(tiny_model)), 128, 48)
    with pytest.raises(ModelError, match=r"^training diverged: the loss was nan at step \d of 6, and no model was "
                                         r"saved; lower learning_rate \(now 1e\+10\)$"):
        fine_tune(_config(tiny_model, tmp_path, learning_rate=1e10, save_steps=100), feats, tmp_path)
    assert not (tmp_path / "model").exists()
    ok = fine_tune(_config(tiny_model, tmp_path / "ok"), feats, tmp_path / "ok")  # a sane rate trains through
    assert all(h["loss"] == h["loss"] for h in ok.log_history if "loss" in h)


def test_running_out_of_memory_in_a_step_names_the_settings_to_lower(tiny_model, train_examples, tmp_path):
    """torch's message names only bytes, and a retry with the same settings runs out again. No GPU here
    to run out of: a global forward pre-hook raises torch's own OutOfMemoryError in the model's
    forward, where a device too small for the batch raises it."""
    import torch
    from torch.nn.modules.module import register_module_forward_pre_hook

    from qa_lib.errors import ConfigError, OutOfMemory

    def too_big(module, args):
        if type(module).__name__.endswith("ForQuestionAnswering") and module.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB.")

    feats = build_train_features(train_examples.select(range(40)), load_tokenizer(str(tiny_model)), 128, 48)
    handle = register_module_forward_pre_hook(too_big)
    try:
        with pytest.raises(OutOfMemory) as caught:
            fine_tune(_config(tiny_model, tmp_path, max_length=128, doc_stride=48), feats, tmp_path)
    finally:
        handle.remove()
    assert isinstance(caught.value, ConfigError)  # never retried; one line on the command line
    assert str(caught.value) == (
        "fine-tune: out of memory at step 1 with per_device_train_batch_size 8 windows of up to 128 tokens: lower "
        "per_device_train_batch_size (raising gradient_accumulation_steps as much keeps the effective batch), or "
        "set activation_checkpointing: true, or use a shorter max_length")
    assert isinstance(caught.value.__cause__, torch.OutOfMemoryError)  # the original, for --verbose and the log
    assert not (tmp_path / "model").exists()


def test_a_model_too_big_for_the_device_is_named_with_its_size_not_retried(tiny_model, train_examples, tmp_path,
                                                                           monkeypatch):
    """Weights that do not fit at all (a large model on a small GPU) ran out of memory as the Trainer
    placed them: torch's raw error, retried three times with the same result. No GPU here: the
    placement raises torch's own OutOfMemoryError, as a device too small for the weights does."""
    import torch

    from qa_lib.errors import ConfigError, OutOfMemory
    from qa_lib.modeling import load_qa_model

    place = torch.nn.Module.to

    def too_big(module, *args, **kwargs):
        if type(module).__name__.endswith("ForQuestionAnswering"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB.")
        return place(module, *args, **kwargs)

    feats = build_train_features(train_examples.select(range(40)), load_tokenizer(str(tiny_model)), 128, 48)
    count = sum(p.numel() for p in load_qa_model(str(tiny_model)).parameters())
    monkeypatch.setattr(torch.nn.Module, "to", too_big)
    with pytest.raises(OutOfMemory) as caught:
        fine_tune(_config(tiny_model, tmp_path, max_length=128, doc_stride=48), feats, tmp_path)
    assert isinstance(caught.value, ConfigError)  # never retried; one line on the command line
    assert str(caught.value) == (
        f"fine-tune: the model does not fit in memory: {count / 1e6:,.1f}M parameters, {count * 4 / 2**30:.2f} GiB "
        f"of weights; use a device with more memory or a smaller model")
    assert isinstance(caught.value.__cause__, torch.OutOfMemoryError)
    assert not (tmp_path / "model").exists()


def test_precision_auto_is_fp32_on_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    assert resolve_precision("auto") == "fp32"
    from qa_lib.errors import ConfigError

    with pytest.raises(ConfigError, match="fp16"):
        resolve_precision("fp16")


def test_a_cpu_run_is_told_when_bf16_is_native_there_and_warned_when_it_is_emulated():
    import logging

    from qa_lib.cpu_precision import bf16_advice, native_bf16_cpu

    level, line = bf16_advice("bf16", "bf16", on_cpu=True, native_bf16=False, training=True)
    assert level == logging.WARNING and line.startswith("this CPU has no bf16 instructions: precision=bf16 is "
                                                        "emulated here, measured 2x to 22x slower than fp32")
    assert bf16_advice("bf16", "bf16", on_cpu=True, native_bf16=False, training=False)[1] == line
    level, line = bf16_advice("auto", "fp32", on_cpu=True, native_bf16=True, training=True)
    assert level == logging.INFO and line.startswith("this CPU has bf16 instructions: precision=bf16 trains faster")
    # Chosen, on a GPU, emulated, or predicting (where bf16 changes answers): nothing to say.
    for requested, resolved, on_cpu, native, training in (
            ("fp32", "fp32", True, True, True), ("bf16", "bf16", True, True, True),
            ("auto", "fp32", True, False, True), ("auto", "fp32", True, True, False),
            ("bf16", "bf16", False, False, True), ("auto", "bf16", False, True, True)):
        assert bf16_advice(requested, resolved, on_cpu, native, training) is None
    # The probe agrees with the flags the kernel reports (torch also checks that the OS enables them).
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    assert native_bf16_cpu() == bool(flags & {"avx512_bf16", "amx_tile"})


def test_bf16_trains_on_the_cpu(tiny_model, train_examples, tmp_path):
    """bf16 asked for on a machine without a GPU: CPU autocast. The Trainer refused it ("Your setup
    doesn't support bf16/gpu"), after the features were built, with a ValueError, exit 1."""
    import math

    tok = load_tokenizer(str(tiny_model))
    feats = build_train_features(train_examples.select(range(40)), tok, 128, 48)
    result = fine_tune(_config(tiny_model, tmp_path, precision="bf16", max_steps=4, save_steps=100), feats, tmp_path)
    assert result.precision == "bf16"
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)


def test_two_process_data_parallel_launch_on_cpu(tiny_model, train_examples, tmp_path):
    """The launcher the fine-tune task uses on a multi-GPU worker, run with 2 CPU processes (gloo)."""
    from qa_lib.launch import fine_tune_distributed

    tok = load_tokenizer(str(tiny_model))
    feats = build_train_features(train_examples.select(range(64)), tok, 128, 48)
    feats.save_to_disk(str(tmp_path / "features"))
    cfg = _config(tiny_model, tmp_path, max_steps=3)
    records = []  # rank 0's log records, handed to this process while the ranks train
    result = fine_tune_distributed(cfg, str(tmp_path / "features"), tmp_path / "ddp", nproc=2,
                                   on_log=lambda step, max_steps, logs: records.append((step, max_steps, logs)))
    # As the Trainer counted them: two processes that each trained alone (no gloo group joined on a
    # machine without a GPU) counted 1, and the environment's WORLD_SIZE said 2 all the same.
    assert result["world_size"] == 2
    trained = [(step, max_steps) for step, max_steps, logs in records if "loss" in logs]
    assert trained == [(1, 3), (2, 3), (3, 3)], records  # logging_steps=1, each record once
    assert [logs["loss"] for _, _, logs in records if "loss" in logs] == [
        h["loss"] for h in result["log_history"] if "loss" in h]
    from transformers import AutoModelForQuestionAnswering

    AutoModelForQuestionAnswering.from_pretrained(result["model_dir"])
    # A rank's own error reaches the caller as itself, not as "exited with code 1".
    from qa_lib.errors import ModelError

    with pytest.raises(ModelError, match="^training diverged: the loss was nan at step "):
        fine_tune_distributed(_config(tiny_model, tmp_path, learning_rate=1e10), str(tmp_path / "features"),
                              tmp_path / "ddp-nan", nproc=2)
    assert not (tmp_path / "ddp-nan" / "model").exists()


def test_dropout_overrides_and_frozen_word_embeddings(tiny_model, train_examples, tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    tok = load_tokenizer(str(tiny_model))
    feats = build_train_features(train_examples.select(range(40)), tok, 128, 48)
    cfg = _config(tiny_model, tmp_path, max_steps=3, hidden_dropout=0.0, attention_dropout=0.05,
                  freeze_word_embeddings=True)
    result = fine_tune(cfg, feats, tmp_path)
    saved = AutoConfig.from_pretrained(result.model_dir)
    assert saved.hidden_dropout_prob == 0.0 and saved.attention_probs_dropout_prob == 0.05
    before = AutoModelForQuestionAnswering.from_pretrained(str(tiny_model))
    after = AutoModelForQuestionAnswering.from_pretrained(result.model_dir)
    assert torch.equal(before.get_input_embeddings().weight, after.get_input_embeddings().weight)
    assert not torch.equal(before.qa_outputs.weight, after.qa_outputs.weight)
    assert not torch.equal(before.bert.encoder.layer[0].attention.self.query.weight,
                           after.bert.encoder.layer[0].attention.self.query.weight)


def test_model_keeps_its_own_dropout_when_not_overridden(tiny_model):
    from qa_lib.modeling import load_qa_model

    model = load_qa_model(str(tiny_model))
    assert model.config.hidden_dropout_prob == 0.1  # BertConfig's default, untouched
    assert load_qa_model(str(tiny_model), hidden_dropout=0.0).config.hidden_dropout_prob == 0.0


def test_same_seed_same_model_whatever_the_global_rng(tmp_path, train_examples):
    """A base model without a QA head gets a fresh one at load: it must come from `seed`, not from
    whatever the process drew before (runs of one config differed by up to 0.3 F1 without this)."""
    import torch
    from safetensors.torch import load_file

    base, tok = _base_model(tmp_path / "base")
    feats = build_train_features(train_examples.select(range(40)), tok, 128, 48)
    weights = []
    for run, noise in enumerate((1, 2)):
        torch.manual_seed(noise)
        out = tmp_path / f"run{run}"
        result = fine_tune(_config(base, out, max_steps=2, save_steps=100), feats, out)
        weights.append(load_file(f"{result.model_dir}/model.safetensors"))
    assert weights[0].keys() == weights[1].keys() and any("qa_outputs" in k for k in weights[0])
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


def test_load_report_is_one_line_and_warns_on_an_untrained_head(tmp_path, tiny_model, caplog, capfd):
    """A base model's new QA head is expected when fine-tuning (one info line), a warning when the
    model is loaded to answer; transformers' load-report table is not printed either way."""
    import logging

    from qa_lib.modeling import load_qa_model

    base, _ = _base_model(tmp_path / "base")
    with caplog.at_level(logging.INFO, logger="qa_lib.modeling"):
        load_qa_model(str(base), new_head_expected=True)
        load_qa_model(str(base))
        load_qa_model(str(tiny_model))  # a trained QA model: nothing to say
    levels = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "qa_lib.modeling"]
    assert len(levels) == 2
    assert levels[0][0] == "INFO" and "qa_outputs.bias, qa_outputs.weight" in levels[0][1]
    assert levels[1][0] == "WARNING" and "answers are noise" in levels[1][1]
    assert "LOAD REPORT" not in capfd.readouterr().err


def _base_model(folder):
    """A tiny BERT *without* a QA head (as a pretrained base model is), with the real tokenizer."""
    from transformers import BertConfig, BertModel

    tok = load_tokenizer("all-MiniLM-L6-v2")
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, tok


def test_no_progress_means_no_bars_and_no_loss_dicts(tiny_model, train_examples, tmp_path, capfd, monkeypatch):
    """QA_PIPELINE_NO_PROGRESS=1 (the deployments' job variable): a worker's terminal gets neither
    datasets' or transformers' bars nor the dicts the Trainer prints when its own bar is off."""
    import datasets
    from transformers.utils import logging as hf_logging

    from qa_lib.progress import configure_progress

    datasets.enable_progress_bars()
    hf_logging.enable_progress_bar()
    monkeypatch.setenv("QA_PIPELINE_NO_PROGRESS", "1")
    configure_progress()
    tok = load_tokenizer(str(tiny_model))
    feats = build_train_features(train_examples.select(range(40)), tok, 128, 48)
    fine_tune(_config(tiny_model, tmp_path, max_steps=3), feats, tmp_path)
    out, err = capfd.readouterr()
    for noise in ("it/s]", "examples/s]", "{'loss'", "{'train_runtime'", "train features"):
        assert noise not in out + err, noise
    # And with bars on, the same work shows them: the check above can fail.
    monkeypatch.setenv("QA_PIPELINE_NO_PROGRESS", "0")
    datasets.enable_progress_bars()
    build_train_features(train_examples.select(range(41)), tok, 128, 48)
    assert "train features" in capfd.readouterr().err
    datasets.disable_progress_bars()


def test_a_callback_that_reports_the_loss_leaves_the_bar_without_log_dicts(tiny_model, train_examples, tmp_path,
                                                                          capfd, monkeypatch):
    """On a terminal the Trainer's bar prints each log dict under itself; the flow's task logs the
    same loss as "step N/M loss", so with such a callback the bar is drawn without the dicts."""
    from qa_lib.train import LossReporter

    class Losses(LossReporter):
        def __init__(self):
            self.seen = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.seen += [logs["loss"]] if "loss" in (logs or {}) else []

    monkeypatch.setenv("QA_PIPELINE_NO_PROGRESS", "0")
    feats = build_train_features(train_examples.select(range(40)), load_tokenizer(str(tiny_model)), 128, 48)
    reporter = Losses()
    fine_tune(_config(tiny_model, tmp_path / "reported", max_steps=3), feats, tmp_path / "reported",
              callbacks=[reporter])
    out, err = capfd.readouterr()
    assert len(reporter.seen) == 3 and "3/3 [" in err, err  # the bar, at its end
    assert "{'loss'" not in out + err and "{'train_runtime'" not in out + err
    # Called as a library, with nothing else reporting it, the loss is still printed.
    fine_tune(_config(tiny_model, tmp_path / "printed", max_steps=3), feats, tmp_path / "printed")
    out, err = capfd.readouterr()
    assert (out + err).count("{'loss'") == 3


def test_the_flow_s_loss_line_is_written_above_the_bar_not_onto_it(capfd):
    """The fine-tune task logs "step N/M loss" while the Trainer's bar is drawn on the same terminal;
    the line once landed on the end of the bar's own line."""
    import logging
    import sys

    from tqdm.auto import tqdm

    from tasks.train import log_loss

    logger = logging.getLogger("test-loss-line")
    handler = logging.StreamHandler(sys.stderr)  # as Prefect's console handler: stderr, in this thread
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with tqdm(total=6, file=sys.stderr, mininterval=0) as bar:
            bar.update(2)
            log_loss(logger, 2, 6, 5.0831)
            bar.update(4)
    finally:
        logger.removeHandler(handler)
    err = capfd.readouterr().err
    at = err.index("step 2/6 loss 5.0831\n")
    assert err[at - 1] in "\r\n", repr(err[at - 40:at])  # the bar was cleared first
    assert "6/6 [" in err[at:]  # and drawn again after


def test_no_checkpoint_is_written_for_the_end_of_training_alone(tiny_model, train_examples, tmp_path):
    """The final model supersedes an end-of-training checkpoint (~3x the model, with the optimizer);
    the periodic ones, which a killed run resumes from, are still written."""
    feats = build_train_features(train_examples.select(range(40)), load_tokenizer(str(tiny_model)), 128, 48)
    fine_tune(_config(tiny_model, tmp_path / "a", max_steps=3, save_steps=2), feats, tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["checkpoint-2"]
    fine_tune(_config(tiny_model, tmp_path / "b", max_steps=4, save_steps=2), feats, tmp_path / "b")
    assert "checkpoint-4" in {p.name for p in (tmp_path / "b" / "checkpoints").iterdir()}


def test_activation_checkpointing_trains_the_same_model(tiny_model, train_examples, tmp_path):
    """`activation_checkpointing: true` (gradient checkpointing) reaches the Trainer (the layers
    recompute in the backward pass) and, without dropout, trains the same weights as without it
    (float32 on the CPU: 1e-5)."""
    import torch
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    tok = load_tokenizer(str(tiny_model))
    feats = build_train_features(train_examples.select(range(40)), tok, 128, 48)
    seen = {}

    class _Spy(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            seen.setdefault(args.activation_checkpointing, model.is_activation_checkpointing)

    weights = {}
    for on in (False, True):
        out = tmp_path / f"gc-{on}"
        cfg = _config(tiny_model, out, max_steps=3, save_steps=100, hidden_dropout=0.0, attention_dropout=0.0,
                      activation_checkpointing=on)
        weights[on] = load_file(f"{fine_tune(cfg, feats, out, callbacks=[_Spy()]).model_dir}/model.safetensors")
    assert seen == {False: False, True: True}
    before = load_file(f"{tiny_model}/model.safetensors")
    moved = [n for n in weights[False] if n in before and not torch.equal(before[n], weights[False][n])]
    assert len(moved) > 10
    for name, value in weights[False].items():
        torch.testing.assert_close(weights[True][name], value, rtol=1e-5, atol=1e-7, msg=name)


def test_activation_checkpointing_is_refused_for_a_family_without_it(tmp_path):
    """ALBERT and XLNet have no activation checkpointing in transformers: asked for it, preflight
    names the model type (the Trainer would fail once training had started)."""
    from qa_lib.errors import ConfigError
    from qa_lib.preflight import check_run
    from tests.conftest import SQUAD
    from tests.families import build_family

    folder = build_family("albert-unigram", tmp_path / "albert", SQUAD)
    config = PipelineConfig(model=str(folder), output_dir=str(tmp_path / "out"), activation_checkpointing=True,
                            train_data={"path": str(SQUAD / "train-v1.1.sample.json")})
    with pytest.raises(ConfigError, match="activation_checkpointing: albert models .* do not support it"):
        check_run(config, training=True, store=str(tmp_path / "store"))
    check_run(config.model_copy(update={"activation_checkpointing": False}), training=True,
              store=str(tmp_path / "store"))


def test_gradient_accumulation_gives_the_gradient_of_the_whole_batch(tiny_model, train_examples, tmp_path):
    """Batches of 4 accumulated twice give the loss and the gradient norm one batch of 8 gives, step
    by step: each micro-batch's loss is its features' mean and the Trainer divides it by the steps it
    accumulates over. Normalised twice, or not at all, the norm would be half or double (the weights
    would hardly show it: Adam's steps do not scale with the gradient). Length-grouped order is drawn
    by the whole batch, so both see the same features in the same steps."""
    tok = load_tokenizer(str(tiny_model))
    feats = build_train_features(train_examples.select(range(40)), tok, 128, 48)
    feats = feats.select(range(len(feats) - len(feats) % 8))  # every micro-batch holds 4 features
    logged = {}
    for batch, steps in ((8, 1), (4, 2)):
        out = tmp_path / f"b{batch}x{steps}"
        cfg = _config(tiny_model, out, max_steps=3, save_steps=100, hidden_dropout=0.0, attention_dropout=0.0,
                      per_device_train_batch_size=batch, gradient_accumulation_steps=steps)
        history = fine_tune(cfg, feats, out).log_history
        logged[steps] = [(h["step"], h["loss"], h["grad_norm"]) for h in history if "loss" in h]
    assert [step for step, _, _ in logged[1]] == [1, 2, 3]  # optimizer steps
    for (step, loss, norm), (step2, loss2, norm2) in zip(logged[1], logged[2], strict=True):
        assert step == step2 and loss2 == pytest.approx(loss, rel=1e-5) and norm2 == pytest.approx(norm, rel=1e-4)


def test_only_the_launchers_own_ranks_join_a_process_group(monkeypatch):
    """A WORLD_SIZE set around a whole run (a cluster's job spec) made an in-process CPU training wait
    for ranks that would never come; only the ranks `qa_lib.launch` starts count theirs."""
    from qa_lib.launch import LAUNCHED
    from qa_lib.train import _launched_processes

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv(LAUNCHED, raising=False)
    assert _launched_processes() == 1
    monkeypatch.setenv(LAUNCHED, "1")
    assert _launched_processes() == 2


_LAUNCHING = """
import json, signal, sys
from qa_lib.config import PipelineConfig
from qa_lib.launch import fine_tune_distributed
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # raises, as the CLI's and Prefect's handlers do
config = PipelineConfig.model_validate_json(open(sys.argv[1]).read())
fine_tune_distributed(config, sys.argv[2], sys.argv[3], nproc=2)
"""


def _launch_and_stop(cfg, features, out, tmp_path, signum, to):
    """The launching process, stopped by `signum` once rank 0 has logged step 3: sent to it alone
    ("launcher": a pod's main process), to its whole process group ("group": a runner's kill, a
    terminal's Ctrl-C) or to its torchrun alone ("torchrun"). For "torchrun" the ranks are paused
    meanwhile, for 3 s after torchrun is gone, and the exit code is None if the launching process
    had ended by then."""
    import json
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    proc = subprocess.Popen([sys.executable, "-c", _LAUNCHING, str(tmp_path / "cfg.json"), str(features), str(out)],
                            cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE, text=True)
    progress = out / "train_progress.jsonl"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            steps = [json.loads(line)["step"] for line in progress.read_text().splitlines()] if progress.exists() else []
            if steps and max(steps) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        if to == "torchrun":
            [agent] = [pid for pid in _processes_naming(out) if b"torch.distributed.run" in _cmdline(pid)]
            ranks = [pid for pid in _processes_naming(out) if pid != agent]
            for pid in ranks:
                os.kill(pid, signal.SIGSTOP)
            os.kill(agent, signum)
            while agent in _processes_naming(out):  # a zombie has no command line
                time.sleep(0.1)
            time.sleep(3)  # the launching process looks every second
            ended_first = proc.poll() is not None
            for pid in ranks:
                os.kill(pid, signal.SIGCONT)
            if ended_first:
                proc.communicate(timeout=120)
                return None, ""
        else:
            (os.killpg if to == "group" else os.kill)(proc.pid, signum)
        _, err = proc.communicate(timeout=120)  # till every process holding its stderr, the ranks too, is gone
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _processes_naming(out):  # ranks, in sessions of their own, left behind by a failure
            os.kill(pid, signal.SIGKILL)
    return proc.returncode, err


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _processes_naming(path) -> list[int]:
    """The processes with `path` in their command line (Linux)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(path).encode() in cmdline.read_bytes().split(b"\0"):
                found.append(int(cmdline.parent.name))
        except OSError:  # gone meanwhile
            pass
    return found


def test_data_parallel_ranks_save_one_checkpoint_at_the_same_step_on_sigterm(tiny_model, train_examples, tmp_path):
    """Two ranks (CPU, gloo) stopped through their launching process: for SIGTERM both save at the
    step rank 0 names, and a rerun resumes from it; for Ctrl-C they stop at once, with none saved.
    A SIGTERM to the whole group reaches the ranks once, from `torchrun`, which starts them in
    sessions of their own. A SIGKILL leaves them no word: they save and stop all the same."""
    from qa_lib.launch import fine_tune_distributed

    tok = load_tokenizer(str(tiny_model))
    features = tmp_path / "features"
    build_train_features(train_examples.select(range(80)), tok, 128, 48).save_to_disk(str(features))
    cfg = _config(tiny_model, tmp_path, max_steps=100000, save_steps=100000)  # no periodic checkpoint

    code, err = _launch_and_stop(cfg, features, tmp_path / "interrupted", tmp_path, signal.SIGINT, "group")
    assert code != 0 and last_checkpoint(tmp_path / "interrupted" / "checkpoints") is None, err[-3000:]

    code, err = _launch_and_stop(cfg, features, tmp_path / "group", tmp_path, signal.SIGTERM, "group")
    assert code == 143 and last_checkpoint(tmp_path / "group" / "checkpoints") is not None, err[-3000:]

    # Killed outright, the launcher writes nothing: rank 0 sees torchrun handed on to another parent.
    code, err = _launch_and_stop(cfg, features, tmp_path / "killed", tmp_path, signal.SIGKILL, "launcher")
    saved = last_checkpoint(tmp_path / "killed" / "checkpoints")
    assert code == -signal.SIGKILL and saved is not None, err[-3000:]
    assert f"the launching process is gone: saving a checkpoint at step {saved.rsplit('-', 1)[1]}" in err
    assert sorted(p.name for p in Path(saved).glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert _processes_naming(tmp_path / "killed") == []  # torchrun and both ranks have ended

    # torchrun killed: the launching process waits for the ranks to save and stop before it fails (for a retry).
    code, err = _launch_and_stop(cfg, features, tmp_path / "agent", tmp_path, signal.SIGKILL, "torchrun")
    saved = last_checkpoint(tmp_path / "agent" / "checkpoints")
    assert code == 1 and saved is not None, err[-3000:]
    step = saved.rsplit("-", 1)[1]
    assert f"torchrun is gone: saving a checkpoint at step {step}" in err
    assert err.index(f"checkpoint-{step} saved") < err.index("RuntimeError: distributed training stopped: "
                                                             "torchrun ended by SIGKILL"), err[-3000:]

    out = tmp_path / "ddp"
    code, err = _launch_and_stop(cfg, features, out, tmp_path, signal.SIGTERM, "launcher")
    assert code == 143, err[-3000:]
    saved = last_checkpoint(out / "checkpoints")
    assert saved is not None, err[-3000:]
    step = int(saved.rsplit("-", 1)[1])
    assert step >= 4 and f"SIGTERM received: saving a checkpoint at step {step} of 100000" in err
    assert "save a checkpoint at their next step first" in err  # said by the launching process
    # BERT leaves no parameter unused, so DDP does not look for any (PyTorch warns of the cost when it does).
    assert "find_unused_parameters=True was specified" not in err
    rng_states = sorted(p.name for p in Path(saved).glob("rng_state*"))
    assert rng_states == ["rng_state_0.pth", "rng_state_1.pth"], rng_states  # both ranks saved there

    result = fine_tune_distributed(cfg.model_copy(update={"max_steps": step + 2}), str(features), out, nproc=2)
    assert result["resumed_from"].endswith(f"checkpoint-{step}")
    assert [h["step"] for h in result["log_history"] if "loss" in h][-2:] == [step + 1, step + 2]
