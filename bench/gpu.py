"""`python -m bench.gpu`: training throughput and model FLOPs utilization (MFU) on an accelerator.

Trains through `qa_lib.train.fine_tune` (precision `auto`: bf16 on a GPU that has it) for one
epoch over a seeded random sample of the bundled training features, for two models: the default
all-MiniLM-L6-v2 and a randomly initialised BERT-base-sized model (12 layers, hidden 768) with the
same tokenizer. A short run of the same kind first warms up the device and kernels.

MFU counts useful model FLOPs only: per feature of T real tokens, 6·N·T for the weight matmuls
(forward and backward, N = parameters outside the embeddings) plus 12·L·d·T² for attention
(L layers, width d), divided by the epoch's wall time and the device's peak dense bf16 FLOP/s
(`--peak-tflops`, or looked up from the device name). Padding is not counted as useful work.

On the CPU (`--quick`) it runs in fp32 with tiny sizes so that the tests can check it works; its
MFU is then against `--peak-tflops` if given, else left out.

`--model-files DIR` names a copy of the default model's folder; if it holds no weights (the
device machines take at most 64 MiB, the weights are 91 MB), the same architecture is built with
random weights: throughput and MFU depend on the shapes, not on the values. `bench/gpu_kit.sh`
prepares that folder and the wheels a bare GPU machine lacks.
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
MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Dense bf16 peak FLOP/s (no sparsity) from the vendors' data sheets, by device-name substring.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


def peak_tflops(explicit: float | None) -> float | None:
    import torch

    if explicit:
        return explicit
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def bert_base_sized(tokenizer_dir: str, out: Path) -> str:
    """A randomly initialised BERT-base-sized QA model folder with the default model's tokenizer."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, BertConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(vocab_size=len(tok), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512)
    AutoModelForQuestionAnswering.from_config(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def default_model(model_files: str | None, out: Path) -> tuple[str, str]:
    """The default model's folder, and whether its weights are the pretrained ones."""
    from qa_lib.modeling import resolve_model

    folder = Path(model_files or resolve_model(MODEL))
    if any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")):
        return str(folder), "pretrained"
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

    AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(out)
    AutoTokenizer.from_pretrained(folder).save_pretrained(out)
    return str(out), "random init, same architecture"


def train_flops(model_dir: str, lengths: list[int]) -> float:
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    cfg = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForQuestionAnswering.from_config(cfg)
    embed = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    n_params = sum(p.numel() for p in model.parameters()) - embed
    layers, width = cfg.num_hidden_layers, cfg.hidden_size
    return float(sum(6 * n_params * t + 12 * layers * width * t * t for t in lengths))


def bench_config(model_dir: str, batch: int, **kw):
    """The training config every GPU measurement uses: no checkpoint or log step inside the run."""
    from qa_lib.config import PipelineConfig

    return PipelineConfig(model=model_dir, per_device_train_batch_size=batch, save_steps=10**6,
                          logging_steps=10**6, learning_rate=1e-4, **kw)


def bundled_train_features(tokenizer, max_length: int, doc_stride: int, quick: bool):
    """Train features of the bundled SQuAD v1.1 sample (its first 40 questions when `quick`)."""
    from qa_lib.data import load_examples
    from qa_lib.features import build_train_features

    train = load_examples(str(ROOT / "data/squad/train-v1.1.sample.json"))
    if quick:
        train = train.select(range(40))
    return build_train_features(train, tokenizer, max_length, doc_stride)


def measure(model_dir: str, features, steps: int, batch: int, tmp: Path, warm_steps: int) -> dict:
    from qa_lib.train import fine_tune

    warm = features.select(range(min(len(features), warm_steps * batch)))
    fine_tune(bench_config(model_dir, batch, max_steps=warm_steps), warm, tmp / "warm")
    sample = features.shuffle(seed=0).select(range(min(len(features), steps * batch)))
    lengths = [len(x) for x in sample["input_ids"]]
    t = time.perf_counter()
    result = fine_tune(bench_config(model_dir, batch, num_train_epochs=1), sample, tmp / "run")
    wall = time.perf_counter() - t
    return {"features": len(sample), "tokens": sum(lengths), "train_runtime_s": result.train_runtime_s,
            "wall_s": wall, "precision": result.precision,
            "features_per_s": len(sample) / result.train_runtime_s,
            "tokens_per_s": sum(lengths) / result.train_runtime_s,
            "model_flops": train_flops(model_dir, lengths)}


def main(argv=None) -> int:
    import torch

    from qa_lib.modeling import load_tokenizer

    p = argparse.ArgumentParser(prog="python -m bench.gpu")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps timed per model (one epoch of a sample)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--doc-stride", type=int, default=128)
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, TFLOP/s")
    p.add_argument("--model-files", default=None, help="the default model's folder (default: the bundled "
                   "package's); without weights in it, its architecture is trained from random weights")
    p.add_argument("--no-cudnn-attention", action="store_true",
                   help="turn off PyTorch's cuDNN attention backend (SDPA then picks flash or memory-efficient)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check that it runs (CPU)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    if args.quick:
        args.steps, args.batch, args.max_length, args.doc_stride = 2, 4, 128, 48

    tmp = Path(tempfile.mkdtemp(prefix="qa-bench-gpu-"))
    minilm, weights = default_model(args.model_files, tmp / "minilm")
    feats = bundled_train_features(load_tokenizer(minilm), args.max_length, args.doc_stride, args.quick)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = peak_tflops(args.peak_tflops)
    out: dict = {"device": device, "peak_tflops": peak, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                 "batch": args.batch, "max_length": args.max_length,
                 "cudnn_attention": torch.backends.cuda.cudnn_sdp_enabled(), "models": {}}
    models = {f"all-MiniLM-L6-v2 (default; {weights})": minilm}
    if not args.quick:
        models["BERT-base-sized, random init"] = bert_base_sized(minilm, tmp / "bert-base")
    for name, model_dir in models.items():
        fig = measure(model_dir, feats, args.steps, args.batch, tmp / name.split()[0], 2 if args.quick else 10)
        if peak:
            fig["mfu"] = fig["model_flops"] / fig["train_runtime_s"] / (peak * 1e12)
        out["models"][name] = fig
    print(f"device: {device}; batch {args.batch}, max_length {args.max_length}, length-grouped dynamic padding"
          f"{'' if out['cudnn_attention'] else ', cuDNN attention off'}")
    print("| model | precision | features/s | tokens/s | model TFLOP/s | MFU |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, f in out["models"].items():
        tflops = f["model_flops"] / f["train_runtime_s"] / 1e12
        mfu = f"{100 * f['mfu']:.1f} %" if "mfu" in f else "n/a (no peak known)"
        print(f"| {name} | {f['precision']} | {f['features_per_s']:,.1f} | {f['tokens_per_s']:,.0f} | {tflops:.2f} | {mfu} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
