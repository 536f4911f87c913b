"""`python -m bench.recipe`: the default recipe against the tutorial's recipe, one machine, one run.

Trains `configs/default.yaml` on the bundled train sample and scores it on Super_Bowl_50 with
the official v1.1 rules (timed in full), and times the tutorial's recipe (pad 384, batch 16,
lr 2e-5, 1 epoch, same model, same data) on the same machine in the same process. The
tutorial's steps all have the same shape (16 x 384), so its epoch time is its measured
seconds per step times its number of steps; `--full-tutorial` trains and scores it fully too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QA_PIPELINE_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


def tutorial_recipe(steps_to_time: int, full: bool, out: dict, tmp: Path) -> None:
    from transformers import Trainer, default_data_collator

    from bench import tutorial
    from qa_lib.data import load_examples
    from qa_lib.modeling import load_qa_model, load_tokenizer

    tok = load_tokenizer("sentence-transformers/all-MiniLM-L6-v2")
    train = load_examples(str(ROOT / "data/squad/train-v1.1.sample.json"))
    feats = train.map(tutorial.prepare_train_features, batched=True, remove_columns=train.column_names,
                      fn_kwargs={"tokenizer": tok})
    steps_per_epoch = -(-len(feats) // 16)
    out["tutorial_features"] = len(feats)
    out["tutorial_steps_per_epoch"] = steps_per_epoch
    warm = Trainer(load_qa_model("sentence-transformers/all-MiniLM-L6-v2", new_head_expected=True),
                   tutorial.training_args(str(tmp), max_steps=3),
                   train_dataset=feats, data_collator=default_data_collator)
    warm.train()
    trainer = Trainer(load_qa_model("sentence-transformers/all-MiniLM-L6-v2", new_head_expected=True),
                      tutorial.training_args(str(tmp), max_steps=-1 if full else steps_to_time),
                      train_dataset=feats, data_collator=default_data_collator)
    t = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - t
    done = steps_per_epoch if full else steps_to_time
    out["tutorial_s_per_step"] = elapsed / done
    out["tutorial_train_s"] = elapsed if full else elapsed / done * steps_per_epoch
    out["tutorial_train_s_measured"] = full
    if full:
        from qa_lib.metrics import score

        dev = load_examples(str(ROOT / "data/squad/dev-v1.1.super_bowl_50.json"))
        vf = dev.map(tutorial.prepare_validation_features, batched=True, remove_columns=dev.column_names,
                     fn_kwargs={"tokenizer": tok})
        raw = trainer.predict(vf.remove_columns(["example_id", "offset_mapping"]))
        preds = tutorial.postprocess_qa_predictions(dev, vf, raw.predictions, tok)
        out["tutorial_metrics"] = score(dev, dict(preds))


def our_recipe(config_path: str, out: dict, tmp: Path) -> None:
    from qa_lib.config import PipelineConfig
    from qa_lib.pipeline import train_and_evaluate

    cfg = PipelineConfig.from_yaml(ROOT / config_path, [f"output_dir={tmp}"])
    t = time.perf_counter()
    result = train_and_evaluate(cfg)
    out["ours_total_s"] = time.perf_counter() - t
    out["ours_train_s"] = result["timings"]["train"]
    out["ours_metrics"] = result["metrics"]
    out["ours_timings"] = result["timings"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.recipe")
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--tutorial-steps", type=int, default=30, help="tutorial steps timed (its epoch is extrapolated)")
    p.add_argument("--full-tutorial", action="store_true", help="train and score the tutorial recipe fully")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.chdir(ROOT)
    out: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                 "date": time.strftime("%Y-%m-%d")}
    # Both recipes write checkpoints and models; none of it outlives the run.
    with tempfile.TemporaryDirectory(prefix="qa-bench-recipe-") as scratch:
        our_recipe(args.config, out, Path(scratch) / "ours")
        tutorial_recipe(args.tutorial_steps, args.full_tutorial, out, Path(scratch) / "tutorial")
    ratio = out["ours_train_s"] / out["tutorial_train_s"]
    print(json.dumps(out, indent=2))
    print(f"\ndefault recipe: F1 {out['ours_metrics']['f1']:.2f}, EM {out['ours_metrics']['exact_match']:.2f}, "
          f"training {out['ours_train_s']:.0f} s = {ratio:.2f} x the tutorial recipe's "
          f"{out['tutorial_train_s']:.0f} s ({'measured' if args.full_tutorial else 'extrapolated from'} "
          f"{out['tutorial_s_per_step']:.2f} s/step x {out['tutorial_steps_per_epoch']} steps)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
