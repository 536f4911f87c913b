"""Fine-tuning with the Hugging Face `Trainer`.

One function, `fine_tune`, reads top to bottom: pick precision, load the model, pick the batches
(padded and length-grouped, or packed to a fixed shape: `choose_batching`), build the Trainer,
resume from the newest checkpoint in `checkpoint_dir` if there is one, train (a SIGTERM saves a
checkpoint before it stops the process: `termination`), save a standard model folder. The loss is
`loss.span_loss` for either kind of batch.

Under `torchrun` the same code trains data-parallel: the Trainer reads the launcher's
environment, and only rank 0 writes the final folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import datasets
from transformers import ProgressCallback, Trainer, TrainerCallback

from qa_lib.config import PipelineConfig
from qa_lib.errors import ConfigError, ModelError, OutOfMemory, is_out_of_memory, memory_name, placing_model
from qa_lib.predict import resolve_precision
from qa_lib.progress import configure_progress, progress_enabled
from qa_lib.termination import SaveOnSignal, SignalOwner

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model_dir: str
    log_history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None
    precision: str = "fp32"
    batching: str = "padded"
    batching_note: str | None = None  # why `auto` did not pack, when it could have
    compiled: bool = False
    attention: str | None = None  # the attention implementation trained with (varlen: `varlen_attention.NAME`)
    train_runtime_s: float = 0.0
    train_samples_per_second: float = 0.0
    world_size: int = 1  # the processes that trained it together, as the Trainer counted them


def last_checkpoint(checkpoint_dir: str | Path) -> str | None:
    """The newest complete checkpoint in `checkpoint_dir`, or None.

    The Trainer writes `trainer_state.json` last; a run killed while saving leaves a newer folder
    without it (or with half of it). Such folders are removed, so that resuming takes the last
    good checkpoint instead of failing on the broken one.
    """
    path = Path(checkpoint_dir)
    if not path.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in path.iterdir()
                   if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name)))
    for _, folder in reversed(found):
        if _complete(folder):
            return str(folder)
        shutil.rmtree(folder, ignore_errors=True)
    return None


def _complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def _launched_processes() -> int:
    """How many processes `qa_lib.launch` started for this training (their WORLD_SIZE), else 1: a
    WORLD_SIZE set around a whole run by something else (a cluster's job spec) is not a group to join."""
    from qa_lib.launch import LAUNCHED

    return int(os.environ.get("WORLD_SIZE", "1")) if os.environ.get(LAUNCHED) == "1" else 1


def training_arguments(config: PipelineConfig, checkpoint_dir: str, precision: str, packed: bool = False,
                       compile: bool = False, find_unused_parameters: bool | None = None):
    """`find_unused_parameters`: for data-parallel training, whether a step leaves trainable
    parameters without a gradient (`unused_parameters`); None leaves it to the Trainer (True)."""
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=checkpoint_dir,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        # Packed: each dataset item is a whole planned batch.
        per_device_train_batch_size=1 if packed else config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler_type,
        seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # bf16 without a GPU is CPU autocast, which the Trainer refuses ("Your setup doesn't support
        # bf16/gpu") unless told the CPU is meant. So are several processes without a GPU: accelerate
        # only joins them (gloo) when the CPU is meant, and took each for a lone run of its own.
        use_cpu=not torch.cuda.is_available() and (precision == "bf16" or _launched_processes() > 1),
        # Padded: similar lengths in a batch, far less padding than random batches. Packed: the
        # planned batches in a seeded random order.
        train_sampling_strategy="random" if packed else "group_by_length",
        torch_compile=compile,
        activation_checkpointing=config.activation_checkpointing,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to="none",
        dataloader_num_workers=0,
        # Pinned memory only speeds copies to a GPU; on the CPU torch warns about it every epoch.
        dataloader_pin_memory=torch.cuda.is_available(),
        # Batches copied to the GPU without waiting for it, and no per-step NaN check of the loss
        # (a host sync: `torch.isnan(loss)` read on the host). A NaN loss is then logged as NaN,
        # which says more than the filter's substitute average did.
        accelerator_config={"non_blocking": torch.cuda.is_available()},
        logging_nan_inf_filter=False,
        disable_tqdm=not progress_enabled(),
        ddp_find_unused_parameters=find_unused_parameters,
    )


def fine_tune(config: PipelineConfig, train_features: datasets.Dataset, output_dir: str | Path,
              callbacks: list | None = None, sigterm_owner: SignalOwner | None = None) -> TrainResult:
    """Train `config.model` on `train_features`; write a model folder to `output_dir/model`.

    Checkpoints go to `output_dir/checkpoints`; a rerun with the same `output_dir` resumes from
    the newest one. A SIGTERM saves one before it stops the process, unless `sigterm_owner` (who
    else the signal is for, see `termination`) leaves the signal be.
    """
    output_dir = Path(output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    model_dir = output_dir / "model"
    precision = resolve_precision(config.precision)
    trainer = build_trainer(config, train_features, checkpoint_dir, precision, callbacks)
    resume = last_checkpoint(checkpoint_dir)
    stop = SaveOnSignal(owner=sigterm_owner)
    trainer.add_callback(stop)  # after the callers' callbacks, so a store upload comes first
    with stop.held(), _out_of_memory_named(config, trainer):
        output = trainer.train(resume_from_checkpoint=resume)
    stop.raise_if_stopped(trainer.state)
    if trainer.is_world_process_zero():
        trainer.save_model(str(model_dir))
        trainer.processing_class.save_pretrained(str(model_dir))
    runtime = float(output.metrics.get("train_runtime", 0.0))
    # The Trainer counts dataset items, which are whole batches when packing.
    per_item = len(train_features) / len(trainer.train_dataset)
    return TrainResult(
        model_dir=str(model_dir),
        log_history=list(trainer.state.log_history),
        resumed_from=resume,
        precision=precision,
        batching=trainer.batching,
        batching_note=trainer.batching_note,
        compiled=bool(trainer.args.torch_compile),
        attention=trainer.model.config._attn_implementation,
        train_runtime_s=runtime,
        train_samples_per_second=float(output.metrics.get("train_samples_per_second", 0.0)) * per_item,
        world_size=trainer.args.world_size,
    )


@contextlib.contextmanager
def _out_of_memory_named(config: PipelineConfig, trainer: Trainer) -> Iterator[None]:
    """Running out of memory in a step, as one error naming the settings to lower: a retry with the
    same ones runs out again, and torch's message names only bytes."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - only running out of memory is renamed
        if isinstance(exc, OutOfMemory) or not is_out_of_memory(exc):  # named already: the weights alone
            raise
        if trainer.pack_shape:
            rows, width = trainer.pack_shape
            batch, fix = f"packed batches of {rows} rows x {width} tokens", "lower tokens_per_batch"
        else:
            batch = f"per_device_train_batch_size {config.per_device_train_batch_size} windows of up to " \
                    f"{config.max_length} tokens"
            fix = ("lower per_device_train_batch_size (raising gradient_accumulation_steps as much keeps the "
                   "effective batch)")
        can_checkpoint = getattr(trainer.model, "supports_gradient_checkpointing", False)
        more = ", or set activation_checkpointing: true" if can_checkpoint and not config.activation_checkpointing else ""
        raise OutOfMemory(f"fine-tune: out of {memory_name(trainer.args.device)} at step "
                          f"{trainer.state.global_step + 1} with {batch}: {fix}{more}, or use a shorter "
                          f"max_length") from exc


class QATrainer(Trainer):
    """The Trainer with the span loss of `loss.span_loss`, which reads `segment_ids` and flat
    label indices from either collator. `batching` says which kind of batch it trains on."""

    batching = "padded"
    batching_note: str | None = None
    features_per_step: float | None = None  # packed: the plan's mean (see `loss.span_loss`)
    pack_shape: tuple[int, int] | None = None  # packed: rows and tokens per row of every batch

    def _move_model_to_device(self, model, device):
        with placing_model("fine-tune", model, device):
            super()._move_model_to_device(model, device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from qa_lib.loss import span_loss
        from qa_lib.packing import model_inputs

        outputs = model(**model_inputs(inputs, self.model))
        loss = span_loss(outputs.start_logits, outputs.end_logits, inputs["segment_ids"],
                         inputs["start_positions"], inputs["end_positions"], per=self.features_per_step)
        return (loss, outputs) if return_outputs else loss


def build_trainer(config: PipelineConfig, train_features: datasets.Dataset, checkpoint_dir: str | Path,
                  precision: str, callbacks: list | None = None) -> QATrainer:
    """The Trainer `fine_tune` runs: the config's model with a new QA head, on the batches
    `choose_batching` picks."""
    import torch
    from transformers import PrinterCallback, set_seed

    from qa_lib.batching import Padding, QACollator, feature_lengths
    from qa_lib.modeling import load_qa_model, load_tokenizer
    from qa_lib.packing import PackedBatches, packed_collator, plan_batches
    from qa_lib.varlen_attention import kernel_problem

    configure_progress()
    tokenizer = load_tokenizer(config.model)
    # The QA head is new, drawn from the global RNG while the model loads: seed it here, since the
    # Trainer only seeds once it is built, and the same config must give the same model.
    set_seed(config.seed)
    model = load_qa_model(config.model, config.hidden_dropout, config.attention_dropout, new_head_expected=True)
    if config.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    padding = Padding.of(tokenizer, multiple_of=8 if precision != "fp32" else None).for_model(model, config.max_length)
    on_gpu = torch.cuda.is_available()
    lengths = feature_lengths(train_features)
    batching, note = choose_batching(config, model, padding, train_features, lengths, on_gpu)
    if batching == "padded" and padding.window:  # said in the run's "trained on" line
        note = "; ".join(filter(None, (note, f"each to the {padding.window}-token window, as the model's logits "
                                             "change with padding")))
    if batching == "packed":
        width = pack_width(config, lengths)
        rows = rows_per_batch(config, lengths, width)
        dataset = PackedBatches(train_features, plan_batches(lengths, rows, width, config.seed))
        collator = packed_collator(model, padding, rows, width)
        log.info("packed batches: %d rows of %d tokens per step, %d batches for %d features",
                 rows, width, len(dataset), len(train_features))
        if on_gpu and config.packed_attention == "varlen" and (slow := kernel_problem(precision, model)):
            log.warning("varlen attention: %s; each feature is attended alone, slowly", slow)
    else:
        dataset, collator = train_features, QACollator(padding)
    compile = config.compile == "on" or (config.compile == "auto" and on_gpu and batching == "packed")
    find_unused = None
    if _launched_processes() > 1 and not config.activation_checkpointing and len(train_features):
        shortest = min(range(len(lengths)), key=lengths.__getitem__)  # the cheapest step to probe with
        unused = unused_parameters(model, QACollator(padding), train_features[shortest])
        find_unused = bool(unused)
        if unused:
            log.info("data-parallel: %d trainable parameters get no gradient (%s), so each step looks for them",
                     len(unused), ", ".join(unused[:3]))
    trainer = QATrainer(
        model=model,
        args=training_arguments(config, str(checkpoint_dir), precision, packed=batching == "packed", compile=compile,
                                find_unused_parameters=find_unused),
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.batching, trainer.batching_note = batching, note
    if batching == "packed":
        trainer.features_per_step, trainer.pack_shape = len(train_features) / len(dataset), (rows, width)
    if not progress_enabled():  # without its bar the Trainer prints each log dict instead
        trainer.remove_callback(PrinterCallback)
    elif any(isinstance(c, LossReporter) for c in callbacks or ()):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_BarOnly())
    trainer.add_callback(_NoFinalCheckpoint())
    trainer.add_callback(_StopOnDivergence())
    return trainer


def unused_parameters(model, collator, feature) -> list[str]:
    """The trainable parameters that a training step on `feature` leaves without a gradient (XLNet's
    `mask_emb`). Data-parallel training must look for them at every step (DDP's
    `find_unused_parameters`, the Trainer's default): an extra pass over the autograd graph, which
    PyTorch warns about in every rank's log when there are none, as in BERT's family. Which
    parameters a QA model uses does not depend on the batch (no layer drop in any QA family's defaults;
    a model that did would fail the step loudly, never train wrong). The global RNG is left as it was."""
    import torch

    from qa_lib.packing import model_inputs

    with torch.random.fork_rng(devices=[]):
        outputs = model(**model_inputs(collator([feature]), model))
        (outputs.start_logits.sum() + outputs.end_logits.sum()).backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    return unused


def choose_batching(config: PipelineConfig, model, padding, train_features: datasets.Dataset, lengths: list[int],
                    on_gpu: bool) -> tuple[str, str | None]:
    """`padded` or `packed`, and why not packed where `auto` could have packed.

    From `config.batching` and, for packing, a check of the model itself: three real features
    (`lengths` are all features' token counts) through it packed and padded must give the same logits.
    With `packed_attention: varlen` the model's attention is switched to it first, so the check
    runs that path; it is switched back when the batches end up padded. `auto` packs only on
    a GPU (on 2 CPU cores packing measured no faster: see BENCHMARKS.md); `packed` on a model that
    fails the check is a config error, named before training starts."""
    from qa_lib.packing import packing_problem
    from qa_lib.varlen_attention import use_varlen

    if config.batching == "padded" or (config.batching == "auto" and not on_gpu) or len(train_features) == 0:
        return "padded", None
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    # The shortest, the median and the longest: a difference that only long features show (a
    # window, a length threshold) is seen too. Packed into two rows of twice the longest, they always fit.
    sample = [train_features[i] for i in dict.fromkeys([order[0], order[len(order) // 2], order[-1]])]
    own_attention = model.config._attn_implementation
    problem = use_varlen(model) if config.packed_attention == "varlen" else None
    problem = problem or packing_problem(model, padding, sample, pack_width(config, lengths))
    if problem is None:
        return "packed", None
    model.set_attn_implementation(own_attention)  # padded batches take the model's own attention
    kind = getattr(model.config, "model_type", "this")
    varlen = " with packed_attention: varlen" if config.packed_attention == "varlen" else ""
    if config.batching == "packed":
        fix = "packed_attention: mask, or batching: padded" if varlen else "padded or auto"
        raise ConfigError(f"batching: packed{varlen} does not work with {kind} models ({problem}); use {fix}")
    note = f"{kind} models cannot be packed{varlen} ({problem})"
    log.info("padded batches: %s", note)
    return "padded", note


def pack_width(config: PipelineConfig, lengths: list[int]) -> int:
    """Row width of packed batches (`packing.row_width`) for the window or the longest feature."""
    from qa_lib.packing import row_width

    return row_width(max(config.max_length, max(lengths, default=0)))


def rows_per_batch(config: PipelineConfig, lengths: list[int], width: int) -> int:
    """`tokens_per_batch` in whole rows; by default as many tokens as a padded batch of
    `per_device_train_batch_size` features of the mean length holds real tokens."""
    from qa_lib.packing import rows_for

    budget = config.tokens_per_batch or round(config.per_device_train_batch_size * sum(lengths) / max(1, len(lengths)))
    return rows_for(budget, width)


class LossReporter(TrainerCallback):
    """A callback that reports the loss itself (a Prefect log, a rank's progress file). With one among
    `fine_tune`'s callbacks, the Trainer's progress bar no longer prints each log dict under itself,
    which on a terminal said every loss twice."""


class _BarOnly(ProgressCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


class TrainingDiverged(ModelError):
    """The loss went NaN or infinite: the weights are broken, and no model is written from them."""


class _StopOnDivergence(TrainerCallback):
    """Fail training at the first logged loss that is not finite. Its weights are NaN from then on,
    and a model trained on would be saved, scored near zero and, on a first retrain, promoted and
    pushed. Checked where the Trainer logs (it reads the loss on the host there anyway), not per
    step, which would add a host sync to every step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            hint = "use bf16 or fp32 instead of fp16, or " if args.fp16 else ""
            raise TrainingDiverged(f"training diverged: the loss was {float(loss)} at step {state.global_step} of "
                                   f"{state.max_steps}, and no model was saved; {hint}lower learning_rate "
                                   f"(now {args.learning_rate:g})")


class _NoFinalCheckpoint(TrainerCallback):
    """The Trainer saves a checkpoint (weights and optimizer state, ~3x the model) when training
    ends; the model folder written right after supersedes it, and on a shared store it would be
    uploaded only to be deleted. Periodic checkpoints (`save_steps`) are kept."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps and state.global_step % args.save_steps:
            control.should_save = False
        return control
