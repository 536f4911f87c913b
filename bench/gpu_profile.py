"""`python -m bench.gpu_profile`: where a training step's time goes, on an accelerator.

For one model (default: the BERT-base-sized random-init one of `bench.gpu`), it times short
training runs through `qa_lib.train.fine_tune` with one `TrainingArguments` setting changed at a
time, a plain PyTorch loop over the same batches already on the device (the model's own speed,
no Trainer or data loading), and a torch.profiler trace of the unchanged run whose top host-side
operations say what the step waits on. Used to find why `bench.gpu`'s MFU is low; not run by CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QA_PIPELINE_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.gpu import bench_config, bert_base_sized, bundled_train_features, default_model  # noqa: E402

# One TrainingArguments change at a time from what `qa_lib.train` ships; "_no_cudnn_sdp" instead
# turns off PyTorch's cuDNN attention backend, leaving SDPA to pick flash or memory-efficient.
# The unchanged run comes first and again last: on an H200 the first timed run in a process was
# the slowest whatever its settings (new batch shapes), so only the repeat compares fairly.
VARIANTS = {
    "as shipped": {},
    "no pinned memory": {"dataloader_pin_memory": False},
    "no NaN/inf loss filter": {"logging_nan_inf_filter": False},
    "no cuDNN attention": {"_no_cudnn_sdp": True},
    "as shipped, again": {},
}


def run_variant(model_dir, sample, batch, steps, overrides, out: Path, profile: bool = False) -> dict:
    import torch

    import qa_lib.train as train

    original = train.training_arguments

    def patched(*a, **k):
        args = original(*a, **k)
        for key, value in overrides.items():
            if not key.startswith("_"):
                setattr(args, key, value)
        return args

    train.training_arguments = patched
    cudnn_sdp = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(not overrides.get("_no_cudnn_sdp") and cudnn_sdp)
    try:
        config = bench_config(model_dir, batch, max_steps=steps)
        stats0 = torch.cuda.memory_stats() if torch.cuda.is_available() else {}
        prof = None
        if profile:
            from torch.profiler import ProfilerActivity, profile as torch_profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            prof = torch_profile(activities=acts)
        t = time.perf_counter()
        with prof or contextlib.nullcontext():
            result = train.fine_tune(config, sample, out)
        wall = time.perf_counter() - t
        fig = {"train_runtime_s": result.train_runtime_s, "ms_per_step": 1000 * result.train_runtime_s / steps,
               "wall_s": wall}
        if torch.cuda.is_available():
            fig["device_mallocs"] = torch.cuda.memory_stats().get("num_device_alloc", 0) - \
                stats0.get("num_device_alloc", 0)
        if prof is not None:
            events = prof.key_averages()
            fig["top_host"] = events.table(sort_by="self_cpu_time_total", row_limit=25)
            if torch.cuda.is_available():
                fig["top_device"] = events.table(sort_by="self_device_time_total", row_limit=12)
        return fig
    finally:
        train.training_arguments = original
        torch.backends.cuda.enable_cudnn_sdp(cudnn_sdp)


def plain_loop(model_dir, sample, batch, steps, collator) -> dict:
    """fwd/bwd/AdamW over the same batches, already on the device, bf16 autocast where available."""
    import torch

    from qa_lib.modeling import load_qa_model

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_qa_model(model_dir, new_head_expected=True).to(dev).train()  # as training loads it
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev == "cuda")
    # Sorted by length, as close to the Trainer's length-grouped batches as a plain loop gets.
    order = sorted(range(len(sample)), key=lambda i: len(sample[i]["input_ids"]))
    rows = [sample[i] for i in order]
    batches = [collator(rows[i:i + batch]) for i in range(0, len(rows), batch)]
    batches = [{k: v.to(dev) for k, v in b.items()} for b in batches]
    amp = torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda")

    def step(b):
        with amp:
            loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for b in batches[:5]:
        step(b)
    if dev == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for b in batches:
        step(b)
    if dev == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    return {"ms_per_step": 1000 * wall / len(batches), "steps": len(batches),
            "attn_implementation": getattr(model.config, "_attn_implementation", None)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_profile")
    p.add_argument("--model", choices=["bert-base", "minilm"], default="bert-base")
    p.add_argument("--model-files", default=None)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check that it runs (CPU)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    max_length, stride = (128, 48) if args.quick else (384, 128)
    if args.quick:
        args.steps, args.batch = 2, 4

    with tempfile.TemporaryDirectory(prefix="qa-bench-gpu-profile-") as scratch:
        return _run(args, Path(scratch), max_length, stride)


def _run(args, tmp: Path, max_length: int, stride: int) -> int:
    import torch
    from transformers import DataCollatorWithPadding

    from qa_lib.modeling import load_tokenizer

    minilm, _ = default_model(args.model_files, tmp / "minilm")
    model_dir = minilm if args.model == "minilm" or args.quick else bert_base_sized(minilm, tmp / "bert-base")
    tok = load_tokenizer(model_dir)
    feats = bundled_train_features(tok, max_length, stride, args.quick).shuffle(seed=0)
    sample = feats.select(range(min(len(feats), args.steps * args.batch)))
    out: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                 "model": args.model, "batch": args.batch, "steps": args.steps, "variants": {}}
    # Warm-up: CUDA context, kernels, allocator; not timed.
    run_variant(model_dir, sample, args.batch, min(args.steps, 10), {}, tmp / "warm")
    for i, (name, overrides) in enumerate(VARIANTS.items()):
        fig = run_variant(model_dir, sample, args.batch, args.steps, overrides, tmp / f"v{i}")
        out["variants"][name] = fig
        print(f"{name:28s} {fig['ms_per_step']:8.1f} ms/step  mallocs {fig.get('device_mallocs')}", flush=True)
    collator = DataCollatorWithPadding(tok, pad_to_multiple_of=8)
    out["plain_loop"] = plain_loop(model_dir, sample, args.batch, args.steps, collator)
    print(f"{'plain torch loop':28s} {out['plain_loop']['ms_per_step']:8.1f} ms/step  "
          f"attn {out['plain_loop']['attn_implementation']}", flush=True)
    prof = run_variant(model_dir, sample, args.batch, args.steps, {}, tmp / "prof", profile=True)
    out["profiled"] = {k: v for k, v in prof.items() if not k.startswith("top_")}
    # The tables end with the profiler's own "Self CUDA time total": the device's busy time.
    print(f"profiled run: {prof['ms_per_step']:.1f} ms/step, {1000 * prof['train_runtime_s']:.0f} ms in all")
    print(prof["top_host"])
    if "top_device" in prof:
        print(prof["top_device"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
