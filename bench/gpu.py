"""`python -m bench.gpu`: training throughput, MFU and a SQuAD-sized job on an accelerator.

For two models, the default all-MiniLM-L6-v2 and a randomly initialised BERT-base-sized one (12
layers, hidden 768) with the same tokenizer, it trains through `qa_lib.train.fine_tune` (precision
`auto`: bf16 on a GPU that has it) on the bundled training features with padded batches (as
shipped before packing) and with packed ones (`compile: auto`, so compiled on a GPU). Each is
timed in steady state, `--seconds` after `--warm` optimizer steps whose time (compilation
included) is reported beside it, and a short torch.profiler window counts kernel launches and
host syncs per step and the device's busy share.

Then a SQuAD-sized job (the bundled samples repeated to 87,599 training and 10,570 evaluated
questions): features, one epoch, prediction, post-processing and metrics, each stage timed; and
Super_Bowl_50 predicted with the trained model in bf16 on the device and fp32 on the CPU, the
answers compared.

MFU counts useful model FLOPs only: per feature of T real tokens, 6·N·T for the weight matmuls
(forward and backward, N = parameters outside the embeddings) plus 12·L·d·T² for attention
(L layers, width d), against the device's peak dense bf16 FLOP/s (`--peak-tflops`, or looked up
from the device name). Padding is not useful work.

On the CPU (`--quick`) it runs in fp32 with tiny sizes so that the tests can check it works.

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

from transformers import TrainerCallback  # noqa: E402

from qa_lib.batching import Padding  # noqa: E402

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


def sliding_window_model(tokenizer_dir: str, out: Path) -> str:
    """A small random ModernBERT QA model with the default model's tokenizer: its sliding-window
    layers attend 64 tokens each side, so the bundled 192-token features need the window kept.
    Only the varlen kernel's `window_size` is checked with it, not its training speed."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, ModernBertConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = ModernBertConfig(vocab_size=len(tok), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                              intermediate_size=512, max_position_embeddings=512, local_attention=128,
                              global_attn_every_n_layers=2, pad_token_id=tok.pad_token_id,
                              cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                              bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
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


class StepClock(TrainerCallback):
    """Steady-state timing inside one `fine_tune`: the clock starts after `warm` optimizer steps
    (compilation, autotuning and allocator warm-up happen there) and training stops once `seconds`
    have passed after it, with one device sync at each end and none between. With
    `profile_steps`, a torch.profiler window of that many steps right after the warm-up counts
    kernel launches and host syncs per step and the device's busy share."""

    def __init__(self, warm: int, seconds: float, profile_steps: int = 0):
        self.warm, self.seconds, self.profile_steps = warm, seconds, profile_steps
        self.t_begin = self.t_warm = self.t_end = None
        self.steps_timed = 0
        self.batches_per_epoch = None
        self.prof = None
        self.profile: dict = {}

    @staticmethod
    def _now() -> float:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_begin(self, args, state, control, train_dataloader=None, **kw):
        self.batches_per_epoch = len(train_dataloader) if train_dataloader is not None else None
        self.t_begin = self._now()

    def on_step_end(self, args, state, control, **kw):
        step = state.global_step
        if step == self.warm:
            self.t_warm = self._now()
            if self.profile_steps:
                import torch
                from torch.profiler import ProfilerActivity, profile

                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
                self.prof = profile(activities=acts)
                self.prof.__enter__()
                self.t_prof = time.perf_counter()
        elif self.prof is not None and step == self.warm + self.profile_steps:
            wall = self._now() - self.t_prof
            self.prof.__exit__(None, None, None)
            self.profile = profile_counts(self.prof, self.profile_steps, wall)
            self.prof = None
            self.t_warm, self.warm = self._now(), step  # the profiled steps are slower: not timed
        if step > self.warm:
            self.steps_timed = step - self.warm
            if self.prof is None and time.perf_counter() - self.t_warm >= self.seconds:
                control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kw):
        self.t_end = self._now()


_LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch")
_SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def profile_counts(prof, steps: int, wall_s: float) -> dict:
    """Per step: kernel launches (runtime launch calls; a CUDA graph replay counts once), host
    syncs (synchronize calls and blocking copies: each waits for the device), and the device's
    busy share (its kernel time over the window's wall time)."""
    events = prof.key_averages()
    launches = sum(e.count for e in events if e.key in _LAUNCHES)
    syncs = sum(e.count for e in events if e.key in _SYNCS)
    busy_us = sum(getattr(e, "self_device_time_total", 0.0) for e in events)
    import torch

    on_device = torch.cuda.is_available() and wall_s
    return {"launches_per_step": launches / steps, "syncs_per_step": syncs / steps,
            "device_busy_share": busy_us / 1e6 / wall_s if on_device else None, "profiled_steps": steps,
            "top_device": events.table(sort_by="self_device_time_total", row_limit=10)
            if busy_us else None}


def measure(model_dir: str, features, batch: int, seconds: float, warm: int, tmp: Path, profile_steps: int = 0,
            **config) -> dict:
    """One `fine_tune` over `features` (epochs repeat as needed) until `seconds` of steady state
    after `warm` steps; `config` sets e.g. batching and compile."""
    import qa_lib.train as train

    mode = config.pop("_compile_mode", None)
    original = train.training_arguments

    def with_mode(*a, **k):
        args = original(*a, **k)
        if mode:
            args.torch_compile_mode = mode
        return args

    clock = StepClock(warm, seconds, profile_steps)
    train.training_arguments = with_mode
    try:
        t = time.perf_counter()
        result = train.fine_tune(bench_config(model_dir, batch, max_steps=10**6, **config), features, tmp,
                                 callbacks=[clock])
        wall = time.perf_counter() - t
    finally:
        train.training_arguments = original
    per_step = len(features) / clock.batches_per_epoch
    lengths = [len(x) for x in features["input_ids"]]
    flops_per_feature = train_flops(model_dir, lengths) / len(lengths)
    window = clock.t_end - clock.t_warm
    fps = per_step * clock.steps_timed / window
    return {"batching": result.batching, "attention": result.attention, "compiled": result.compiled,
            "precision": result.precision,
            "features_per_step": per_step, "steps_timed": clock.steps_timed, "steady_window_s": window,
            "warmup_s": clock.t_warm - clock.t_begin, "wall_s": wall, "features_per_s": fps,
            "tokens_per_s": fps * sum(lengths) / len(lengths), "model_flops_per_s": fps * flops_per_feature,
            **({"profile": clock.profile} if clock.profile else {})}


def repeated(examples, n: int):
    """`examples` repeated to `n` questions, ids made unique."""
    import datasets

    copies = []
    for k in range(-(-n // len(examples))):
        copies.append(examples.map(lambda ex, k=k: {"id": f"{ex['id']}-{k}"}))
    return datasets.concatenate_datasets(copies).select(range(n))


def squad_sized_job(model_dir: str, train_questions: int, eval_questions: int, tmp: Path, **config) -> dict:
    """Features, one epoch, prediction, post-processing and metrics of a SQuAD-sized job, each stage
    timed: the bundled samples repeated to SQuAD v1.1's train and dev sizes."""
    import torch

    from qa_lib.config import PipelineConfig
    from qa_lib.data import load_examples
    from qa_lib.features import build_eval_features, build_train_features
    from qa_lib.metrics import score
    from qa_lib.modeling import load_qa_model, load_tokenizer
    from qa_lib.postprocess import postprocess
    from qa_lib.predict import predict_logits
    from qa_lib.train import fine_tune

    train = repeated(load_examples(str(ROOT / "data/squad/train-v1.1.sample.json")), train_questions)
    dev = repeated(load_examples(str(ROOT / "data/squad/dev-v1.1.super_bowl_50.json")), eval_questions)
    cfg = PipelineConfig(model=model_dir, num_train_epochs=1, save_steps=10**6, logging_steps=10**6,
                         num_proc=min(16, os.cpu_count() or 1), **config)
    tok = load_tokenizer(model_dir)
    stages: dict = {}
    t = time.perf_counter()
    feats = build_train_features(train, tok, cfg.max_length, cfg.doc_stride, cfg.num_proc, cfg.drop_answerless)
    dev_feats = build_eval_features(dev, tok, *cfg.eval_window, cfg.num_proc)
    stages["features_s"] = time.perf_counter() - t
    t = time.perf_counter()
    result = fine_tune(cfg, feats, tmp)
    stages["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    precision = result.precision
    start, end = predict_logits(load_qa_model(result.model_dir), dev_feats, cfg.per_device_eval_batch_size,
                                precision, progress=False, padding=Padding.of(tok))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    stages["predict_s"] = time.perf_counter() - t
    t = time.perf_counter()
    preds = postprocess(dev, dev_feats, start, end, cfg.n_best_size, cfg.max_answer_length)
    stages["postprocess_s"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics = score(dev, preds.answers)
    stages["metrics_s"] = time.perf_counter() - t
    return {"train_questions": len(train), "train_features": len(feats), "eval_questions": len(dev),
            "eval_features": len(dev_feats), "batching": result.batching, "compiled": result.compiled,
            "precision": precision, "stages": stages, "f1": metrics["f1"], "exact_match": metrics["exact_match"],
            "model_dir": result.model_dir}


def prediction_agreement(model_dir: str, limit: int | None = None) -> dict:
    """Super_Bowl_50 predicted in the fast precision on the device and in fp32 on the CPU: how many
    questions get a different answer, and the logit gap behind each."""
    import numpy as np
    import torch

    from qa_lib.config import PipelineConfig
    from qa_lib.data import load_examples
    from qa_lib.features import build_eval_features
    from qa_lib.modeling import load_qa_model, load_tokenizer
    from qa_lib.postprocess import postprocess
    from qa_lib.predict import predict_logits, resolve_precision

    cfg = PipelineConfig(model=model_dir)
    dev = load_examples(str(ROOT / "data/squad/dev-v1.1.super_bowl_50.json"))
    if limit:
        dev = dev.select(range(limit))
    tok = load_tokenizer(model_dir)
    feats = build_eval_features(dev, tok, *cfg.eval_window)
    fast = resolve_precision("auto")
    t = time.perf_counter()
    s_fast, e_fast = predict_logits(load_qa_model(model_dir), feats, 64, fast, progress=False, padding=Padding.of(tok))
    fast_s = time.perf_counter() - t
    import qa_lib.predict as predict

    original = predict._device
    predict._device = lambda: torch.device("cpu")
    try:
        t = time.perf_counter()
        s_cpu, e_cpu = predict_logits(load_qa_model(model_dir), feats, 16, "fp32", progress=False,
                                      padding=Padding.of(tok))
        cpu_s = time.perf_counter() - t
    finally:
        predict._device = original
    a = postprocess(dev, feats, s_fast, e_fast).answers
    b = postprocess(dev, feats, s_cpu, e_cpu).answers
    differ = [q for q in a if a[q] != b[q]]
    finite = np.isfinite(s_cpu)
    return {"questions": len(a), "features": len(feats), "fast_precision": fast, "fast_s": fast_s, "cpu_fp32_s": cpu_s,
            "answers_differ": len(differ), "examples": [{"id": q, "fast": a[q], "fp32": b[q]} for q in differ[:10]],
            "max_logit_diff": float(np.abs(s_fast[finite] - s_cpu[finite]).max()) if finite.any() else 0.0}


def varlen_agreement(model_dir: str, features, n: int = 24) -> dict:
    """The first `n` training features, packed with varlen attention and padded, through the same
    model on the device (bf16 on a GPU, as training runs): the largest start-logit gap. The CPU
    tests check the varlen path's CPU loop; this checks the kernel."""
    import torch

    from qa_lib.modeling import load_qa_model, load_tokenizer
    from qa_lib.packing import packed_logit_gap, row_width, sliding_window
    from qa_lib.predict import resolve_precision
    from qa_lib.varlen_attention import kernel_problem, use_varlen

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision("auto")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    sample = [features[i] for i in range(min(n, len(features)))]
    width = row_width(max(len(f["input_ids"]) for f in sample))
    model = load_qa_model(model_dir, 0.0, 0.0).eval().to(device)
    if problem := use_varlen(model):
        raise RuntimeError(problem)
    # Padded batches go through the varlen function's SDPA fallback: the model's own attention.
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        gap, scale = packed_logit_gap(model, Padding.of(load_tokenizer(model_dir)), sample, width, len(sample))
    kernel = device.type == "cuda" and not kernel_problem(precision, model)
    return {"features": len(sample), "longest": max(len(f["input_ids"]) for f in sample), "precision": precision,
            "kernel": kernel, "sliding_window": sliding_window(model), "max_start_logit_diff": gap,
            "logit_scale": scale}


VARIANTS = {"padded": {"batching": "padded", "compile": "off"},   # what shipped before packing
            "packed": {"batching": "packed", "compile": "auto"},   # auto: compiled on a GPU
            # For the CPU, where `auto` does not compile: what compiling would do there.
            "packed-compiled": {"batching": "packed", "compile": "on"},
            "padded-compiled": {"batching": "padded", "compile": "on"},
            # torch.compile's CUDA-graph mode on the fixed packed shape: not a product setting
            # (yet); measured to see what launch overhead is left after compiling.
            "packed-cudagraphs": {"batching": "packed", "compile": "on", "_compile_mode": "reduce-overhead"},
            # Each feature attends within itself only (PyTorch's flash varlen kernel on the GPU).
            "packed-varlen": {"batching": "packed", "compile": "auto", "packed_attention": "varlen"}}


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(prog="python -m bench.gpu")
    p.add_argument("--batch", type=int, default=128, help="features per step (packed: that many of the mean length)")
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--doc-stride", type=int, default=128)
    p.add_argument("--seconds", type=float, default=30.0, help="steady-state training timed per measurement")
    p.add_argument("--warm", type=int, default=30, help="optimizer steps before the clock starts")
    p.add_argument("--profile-steps", type=int, default=5, help="steps profiled after the warm-up (0: none)")
    p.add_argument("--models", default="minilm,bert-base")
    p.add_argument("--variants", default="padded,packed")
    p.add_argument("--e2e-train", type=int, default=87_599, help="questions in the SQuAD-sized job (0: skip it)")
    p.add_argument("--e2e-eval", type=int, default=10_570)
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, TFLOP/s")
    p.add_argument("--model-files", default=None, help="the default model's folder (default: the bundled "
                   "package's); without weights in it, its architecture is trained from random weights")
    p.add_argument("--no-cudnn-attention", action="store_true",
                   help="turn off PyTorch's cuDNN attention backend (SDPA then picks flash or memory-efficient)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds this run may take in all (a device call's limit): a training measurement that "
                   "would not end inside it, by the longest one so far, is skipped and recorded as such")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check that it runs (CPU)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.deadline = time.monotonic() + args.budget if args.budget is not None else None
    if args.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    if args.quick:
        args.batch, args.max_length, args.doc_stride, args.seconds, args.warm = 4, 128, 48, 1.0, 2
        args.profile_steps, args.models = 1, "minilm"
        args.e2e_train, args.e2e_eval = (120, 30) if args.e2e_train else (0, 0)

    # Scratch models and checkpoints run to gigabytes a call: they go when the bench ends, however it ends.
    with tempfile.TemporaryDirectory(prefix="qa-bench-gpu-") as scratch:
        return _run(args, Path(scratch))


def _run(args, tmp: Path) -> int:
    import torch

    from qa_lib.modeling import load_tokenizer

    minilm, weights = default_model(args.model_files, tmp / "minilm")
    feats = bundled_train_features(load_tokenizer(minilm), args.max_length, args.doc_stride, args.quick)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = peak_tflops(args.peak_tflops)
    out: dict = {"device": device, "peak_tflops": peak, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                 "batch": args.batch, "max_length": args.max_length, "weights": weights,
                 "cudnn_attention": torch.backends.cuda.cudnn_sdp_enabled(), "training": {}}
    dirs = {"minilm": minilm}
    if "bert-base" in args.models:
        dirs["bert-base"] = bert_base_sized(minilm, tmp / "bert-base")

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2, default=str))

    # The SQuAD-sized job first: it is a target of its own, and its compile warms the cache the
    # packed variants then reuse. A step that fails is recorded and the rest still runs.
    failed = args.e2e_train and not end_to_end(args, minilm, tmp, out, save)
    if any("varlen" in v for v in args.variants.split(",")):
        # The default model, then one with sliding-window layers (the kernel's window_size).
        for key, build in (("varlen_agreement", lambda: minilm),
                           ("varlen_agreement_sliding_window", lambda: sliding_window_model(minilm, tmp / "sliding"))):
            try:
                out[key] = check = varlen_agreement(build(), feats)
                print(f"varlen attention vs padded ({key}), {check['features']} features in {check['precision']} "
                      f"(kernel: {check['kernel']}, sliding window: {check['sliding_window']}): largest start-logit "
                      f"difference {check['max_start_logit_diff']:.3g} (logits up to {check['logit_scale']:.3g})",
                      flush=True)
            except Exception as exc:  # noqa: BLE001
                out[key] = {"error": _failure(key, exc)}
                failed = True
            save()
    # Variant by variant, each model in turn: if the one device call runs out of time, what is
    # lost is the last variants (given last on the command line), not the second model's figures.
    longest = args.seconds  # the guess for the first measurement: its timed window alone
    for variant in args.variants.split(","):
        for model in args.models.split(","):
            name = f"{model} {variant}"
            if args.deadline is not None and (left := args.deadline - time.monotonic()) < longest:
                # Killed at the call's limit, the run would lose the table below and the time spent on
                # this measurement; skipped, it says so and the next (cheaper) one may still fit.
                out["training"][name] = {"skipped": f"{left:.0f} s of the budget left, {longest:.0f} s needed"}
                print(f"{name}: skipped, {out['training'][name]['skipped']}", flush=True)
                save()
                continue
            t_measure = time.monotonic()
            try:
                fig = measure(dirs[model], feats, args.batch, args.seconds, args.warm, tmp / name.replace(" ", "-"),
                              args.profile_steps, max_length=args.max_length, doc_stride=args.doc_stride,
                              **dict(VARIANTS[variant]))
            except Exception as exc:  # noqa: BLE001 - one device call: a failed variant must not cost the others
                out["training"][name] = {"error": _failure(name, exc)}
                save()
                continue
            longest = max(longest, time.monotonic() - t_measure)
            if peak:
                fig["mfu"] = fig["model_flops_per_s"] / (peak * 1e12)
            out["training"][name] = fig
            print(f"{name}: {fig['features_per_s']:,.0f} features/s ({fig['batching']}, {fig['attention']} attention, "
                  f"compiled {fig['compiled']}, warm-up {fig['warmup_s']:.1f} s)", flush=True)
            save()

    print(f"device: {device}; default model weights: {weights}; {args.batch} features per step, max_length "
          f"{args.max_length}; steady state over {args.seconds:.0f} s after {args.warm} warm-up steps"
          f"{'' if out['cudnn_attention'] else '; cuDNN attention off'}")
    print("| model | batching | attention | compiled | features/s | MFU | warm-up | launches/step | syncs/step | "
          "device busy |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, f in out["training"].items():
        if "error" in f or "skipped" in f:
            print(f"| {name} | {'failed: ' + f['error'] if 'error' in f else 'skipped: ' + f['skipped']} |")
            continue
        prof = f.get("profile", {})
        mfu = f"{100 * f['mfu']:.1f} %" if "mfu" in f else "n/a"
        busy = prof.get("device_busy_share")
        print(f"| {name} | {f['batching']} | {f['attention']} | {f['compiled']} | {f['features_per_s']:,.0f} | {mfu} | "
              f"{f['warmup_s']:.1f} s | {prof.get('launches_per_step', 0):.0f} | {prof.get('syncs_per_step', 0):.1f} | "
              f"{'n/a' if busy is None else f'{100 * busy:.0f} %'} |")
    save()
    return 1 if failed or any("error" in f for f in out["training"].values()) else 0


def end_to_end(args, minilm: str, tmp: Path, out: dict, save) -> bool:
    """The SQuAD-sized job, then bf16-vs-fp32 answers from its model; False if either failed."""
    try:
        job = squad_sized_job(minilm, args.e2e_train, args.e2e_eval, tmp / "e2e", max_length=args.max_length,
                              doc_stride=args.doc_stride, per_device_train_batch_size=args.batch, learning_rate=1e-4)
    except Exception as exc:  # noqa: BLE001
        out["squad_sized_job"] = {"error": _failure("SQuAD-sized job", exc)}
        save()
        return False
    out["squad_sized_job"] = job
    save()
    total = sum(job["stages"].values())
    print(f"SQuAD-sized job: {job['train_questions']:,} questions ({job['train_features']:,} features), "
          f"{job['eval_questions']:,} evaluated; {job['batching']}, compiled {job['compiled']}; "
          f"F1 {job['f1']:.2f} / EM {job['exact_match']:.2f}")
    for stage, sec in job["stages"].items():
        print(f"  {stage.removesuffix('_s'):12s} {sec:8.1f} s  {100 * sec / total:5.1f} %")
    try:
        agree = prediction_agreement(job["model_dir"], 40 if args.quick else None)
    except Exception as exc:  # noqa: BLE001
        out["prediction_agreement"] = {"error": _failure("bf16 vs fp32 answers", exc)}
        save()
        return False
    out["prediction_agreement"] = agree
    save()
    print(f"Super_Bowl_50 ({agree['questions']} questions, {agree['features']} windows): {agree['fast_precision']} "
          f"on the device {agree['fast_s']:.1f} s, fp32 on the CPU {agree['cpu_fp32_s']:.1f} s; "
          f"{agree['answers_differ']} answers differ; largest start-logit difference {agree['max_logit_diff']:.3g}")
    for ex in agree["examples"]:
        print(f"  {ex['id']}: {ex['fast']!r} vs {ex['fp32']!r}")
    return True


def _failure(what: str, exc: Exception) -> str:
    """Print the traceback to the log and return one line for the JSON and the table."""
    import traceback

    traceback.print_exc()
    line = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
    print(f"{what} failed: {line}", flush=True)
    return line


if __name__ == "__main__":
    raise SystemExit(main())
