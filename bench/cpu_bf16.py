"""`python -m bench.cpu_bf16`: a CPU training step in fp32 and in bf16 autocast, with this CPU's
instructions and with those of CPUs that have no bf16 instructions.

One step is what the Trainer runs with `precision` fp32 or bf16 on the CPU: forward (in
`torch.autocast("cpu", torch.bfloat16)` for bf16, as the Trainer's `bf16=True` does there), the
span loss, backward and AdamW, on the default model and recipe (`configs/default.yaml`'s dropout
and frozen word embeddings) with a batch of 16 windows of 192 tokens. CPUs without bf16
instructions are simulated by limiting oneDNN (`ONEDNN_MAX_CPU_ISA`) and ATen
(`ATEN_CPU_CAPABILITY`) to AVX-512 without bf16, then to AVX2, each in a process of its own.
Within a process the two precisions alternate, `--rounds` times each.
`--quick`: a tiny random model and 2 steps, to check that it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# (name, oneDNN's ISA, ATen's capability); None keeps what this CPU has.
LIMITS = (("this CPU", None, None), ("AVX-512 without bf16", "AVX512_CORE", "avx512"), ("AVX2", "AVX2", "avx2"))


def measure(model_path: str | None, steps: int, rounds: int) -> dict[str, list[float]]:
    """Seconds a step, per precision and round, in this process."""
    import torch

    from qa_lib.config import PipelineConfig
    from qa_lib.loss import span_loss
    from qa_lib.modeling import load_qa_model, resolve_model

    config = PipelineConfig.from_yaml("configs/default.yaml", [])
    if model_path is None:
        model_path = resolve_model(config.model)
    torch.manual_seed(0)
    model = load_qa_model(model_path, config.hidden_dropout, config.attention_dropout, new_head_expected=True)
    if config.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    batch, length = 16, 192
    ids = torch.randint(1000, model.config.vocab_size - 1, (batch, length))
    # As the padded collator gives them: a row's tokens are its feature's; labels index the flat batch.
    segments = torch.arange(batch)[:, None].expand(batch, length)
    starts = torch.arange(batch) * length + torch.randint(0, length, (batch,))

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
        span_loss(out.start_logits, out.end_logits, segments, starts, starts).backward()
        optimizer.step()
        optimizer.zero_grad()

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(rounds):
        for precision in ("fp32", "bf16"):
            step(precision == "bf16")  # warm-up: oneDNN builds its kernels for the shapes
            t = time.perf_counter()
            for _ in range(steps):
                step(precision == "bf16")
            times[precision].append((time.perf_counter() - t) / steps)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_bf16")
    p.add_argument("--quick", action="store_true", help="a tiny random model and 2 steps, to check that it runs")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one process's measurement, as JSON
    args = p.parse_args(argv)
    if args.child is not None:
        model, steps, rounds = json.loads(args.child)
        print(json.dumps(measure(model, steps, rounds)))
        return 0
    if not args.quick:
        return run(None, args.steps, args.rounds, args.json)
    import tempfile
    from pathlib import Path

    from tests.conftest import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="qa-bench-") as scratch:
        return run(str(build_tiny_model(Path(scratch))), 2, 1, args.json)


def run(model: str | None, steps: int, rounds: int, json_path: str | None) -> int:
    from qa_lib.cpu_precision import native_bf16_cpu

    print(f"this CPU has bf16 instructions: {native_bf16_cpu()}")
    results = {}
    for name, isa, capability in LIMITS:
        env = dict(os.environ)
        if isa:
            env.update(ONEDNN_MAX_CPU_ISA=isa, ATEN_CPU_CAPABILITY=capability)
        out = subprocess.run([sys.executable, "-m", "bench.cpu_bf16", "--child", json.dumps([model, steps, rounds])],
                             env=env, capture_output=True, text=True, check=True)
        times = json.loads(out.stdout.strip().splitlines()[-1])
        results[name] = times
        fp32, bf16 = min(times["fp32"]), min(times["bf16"])
        print(f"{name:<22} fp32 {', '.join(f'{t:.2f}' for t in times['fp32'])} s a step; "
              f"bf16 {', '.join(f'{t:.2f}' for t in times['bf16'])} s ({bf16 / fp32:.2f}x fp32's best)", flush=True)
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"native_bf16": native_bf16_cpu(), "steps": steps, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
