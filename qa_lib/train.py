"""Fine-tuning with the Hugging Face `Trainer`.

One function, `fine_tune`, reads top to bottom: pick precision, load the model, build the
Trainer with a dynamic-padding collator and length-grouped batches, resume from the newest
checkpoint in `checkpoint_dir` if there is one, train, save a standard model folder.

Under `torchrun` the same code trains data-parallel: the Trainer reads the launcher's
environment, and only rank 0 writes the final folder.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from transformers import TrainerCallback

from qa_lib.config import PipelineConfig
from qa_lib.errors import ConfigError
from qa_lib.progress import configure_progress, progress_enabled


@dataclass
class TrainResult:
    model_dir: str
    log_history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None
    precision: str = "fp32"
    train_runtime_s: float = 0.0
    train_samples_per_second: float = 0.0


def resolve_precision(precision: str) -> str:
    """`auto` → bf16 on a GPU that has it, fp16 on an older GPU, fp32 on the CPU."""
    import torch

    has_cuda = torch.cuda.is_available()
    if precision == "auto":
        if not has_cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and not has_cuda:
        raise ConfigError("precision: fp16 needs a CUDA GPU; use fp32 or auto on the CPU")
    if precision == "bf16" and has_cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision: bf16 is not supported by this GPU; use fp16 or auto")
    return precision


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


def training_arguments(config: PipelineConfig, checkpoint_dir: str, precision: str):
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=checkpoint_dir,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler_type,
        seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # Similar lengths in a batch: far less padding than random batches.
        train_sampling_strategy="group_by_length",
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to="none",
        dataloader_num_workers=0,
        # Pinned memory only speeds copies to a GPU; on the CPU torch warns about it every epoch.
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=not progress_enabled(),
    )


def fine_tune(config: PipelineConfig, train_features: datasets.Dataset, output_dir: str | Path,
              callbacks: list | None = None) -> TrainResult:
    """Train `config.model` on `train_features`; write a model folder to `output_dir/model`.

    Checkpoints go to `output_dir/checkpoints`; a rerun with the same `output_dir` resumes from
    the newest one.
    """
    output_dir = Path(output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    model_dir = output_dir / "model"
    precision = resolve_precision(config.precision)
    trainer = build_trainer(config, train_features, checkpoint_dir, precision, callbacks)
    resume = last_checkpoint(checkpoint_dir)
    output = trainer.train(resume_from_checkpoint=resume)
    if trainer.is_world_process_zero():
        trainer.save_model(str(model_dir))
        trainer.processing_class.save_pretrained(str(model_dir))
    return TrainResult(
        model_dir=str(model_dir),
        log_history=list(trainer.state.log_history),
        resumed_from=resume,
        precision=precision,
        train_runtime_s=float(output.metrics.get("train_runtime", 0.0)),
        train_samples_per_second=float(output.metrics.get("train_samples_per_second", 0.0)),
    )


def build_trainer(config: PipelineConfig, train_features: datasets.Dataset, checkpoint_dir: str | Path,
                  precision: str, callbacks: list | None = None):
    """The Trainer `fine_tune` runs: the config's model with a new QA head, batches padded by the
    rule prediction uses too (`batching.Padding`)."""
    from transformers import PrinterCallback, Trainer, set_seed

    from qa_lib.batching import Padding, QACollator
    from qa_lib.modeling import load_qa_model, load_tokenizer

    configure_progress()
    tokenizer = load_tokenizer(config.model)
    # The QA head is new, drawn from the global RNG while the model loads: seed it here, since the
    # Trainer only seeds once it is built, and the same config must give the same model.
    set_seed(config.seed)
    model = load_qa_model(config.model, config.hidden_dropout, config.attention_dropout, new_head_expected=True)
    if config.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    trainer = Trainer(
        model=model,
        args=training_arguments(config, str(checkpoint_dir), precision),
        train_dataset=train_features,
        data_collator=QACollator(Padding.of(tokenizer, multiple_of=8 if precision != "fp32" else None)),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    if not progress_enabled():  # without its bar the Trainer prints each log dict instead
        trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_NoFinalCheckpoint())
    return trainer


class _NoFinalCheckpoint(TrainerCallback):
    """The Trainer saves a checkpoint (weights and optimizer state, ~3x the model) when training
    ends; the model folder written right after supersedes it, and on a shared store it would be
    uploaded only to be deleted. Periodic checkpoints (`save_steps`) are kept."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps and state.global_step % args.save_steps:
            control.should_save = False
        return control
