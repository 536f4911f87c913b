"""`python -m bench.packing`: the default recipe trained with padded and with packed batches.

Same config (`configs/default.yaml`), same data and seed, `batching` the only difference; each
model scored on Super_Bowl_50 with the official v1.1 rules. On the CPU this answers two
questions: does packing train as well (F1 within 0.5 of padded), and what does it do to speed
(`auto` keeps padded batches on the CPU because of it). `--quick` trains a few steps on a few
questions, to check that it runs. `--compile` adds a packed run under `torch.compile`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QA_PIPELINE_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


def run(overrides: list[str], tmp: Path) -> dict:
    from qa_lib.config import PipelineConfig
    from qa_lib.data import load_examples
    from qa_lib.features import build_eval_features, build_train_features
    from qa_lib.metrics import score
    from qa_lib.modeling import load_qa_model, load_tokenizer
    from qa_lib.postprocess import postprocess
    from qa_lib.predict import predict_logits
    from qa_lib.train import fine_tune

    config = PipelineConfig.from_yaml(ROOT / "configs/default.yaml", [f"output_dir={tmp}", *overrides])
    tokenizer = load_tokenizer(config.model)
    train = load_examples(config.train_data, default_split="train")
    dev = load_examples(config.eval_data, default_split="validation")
    feats = build_train_features(train, tokenizer, config.max_length, config.doc_stride, config.num_proc,
                                 config.drop_answerless)
    dev_feats = build_eval_features(dev, tokenizer, *config.eval_window)
    t = time.perf_counter()
    result = fine_tune(config, feats, tmp)
    wall = time.perf_counter() - t
    start, end = predict_logits(load_qa_model(result.model_dir), dev_feats, config.per_device_eval_batch_size,
                                progress=False)
    metrics = score(dev, postprocess(dev, dev_feats, start, end, config.n_best_size, config.max_answer_length).answers)
    steps = max((h.get("step", 0) for h in result.log_history), default=0)
    return {"overrides": overrides, "batching": result.batching, "compiled": result.compiled, "features": len(feats),
            "steps": steps, "train_runtime_s": result.train_runtime_s, "train_wall_s": wall,
            "features_per_s": result.train_samples_per_second, "f1": metrics["f1"], "exact_match": metrics["exact_match"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.packing")
    p.add_argument("--quick", action="store_true", help="a few steps on a few questions")
    p.add_argument("--compile", action="store_true", help="also a packed run with compile=on")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    quick = ["train_data.limit=60", "eval_data.limit=20", "max_steps=3"] if args.quick else []
    variants = {"padded": ["batching=padded"], "packed": ["batching=packed"]}
    if args.compile:
        variants["packed + compile"] = ["batching=packed", "compile=on"]
    out = {"date": time.strftime("%Y-%m-%d"), "runs": {}}
    for name, overrides in variants.items():
        with tempfile.TemporaryDirectory(prefix="qa-bench-packing-") as scratch:
            out["runs"][name] = run(quick + overrides, Path(scratch))
    print("| batching | steps | features/s | training | F1 | EM |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in out["runs"].items():
        print(f"| {name} | {r['steps']} | {r['features_per_s']:.2f} | {r['train_runtime_s']:.0f} s | "
              f"{r['f1']:.2f} | {r['exact_match']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
