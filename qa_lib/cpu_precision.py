"""Whether this CPU computes bf16 in hardware, and what a run on the CPU says about bf16.

`precision: auto` runs in fp32 on every CPU, so that a pool of mixed CPUs trains the same weights
under one store key and a CPU run's scores match the fp32 reference's. Where the CPU has bf16
instructions (AVX512-BF16 or AMX: Intel since Cooper Lake, AMD since Zen 4), `precision: bf16`
(autocast, weights kept in fp32) trained the default recipe in 0.72x the time at the same F1
within a seed's spread; where it has none, oneDNN emulates bf16 and a training step took 2.1x
(AVX-512) to 22x (AVX2) as long as in fp32 (BENCHMARKS.md, "bf16 on the CPU"). Neither is a
default's business; both are worth a line in the run's log.
"""

from __future__ import annotations

import logging

# The figures of BENCHMARKS.md's "bf16 on the CPU", quoted by the lines below.
_EMULATED = ("this CPU has no bf16 instructions: precision=bf16 is emulated here, measured 2x to 22x slower than "
             "fp32 (BENCHMARKS.md, bf16 on the CPU); use precision=fp32 (or auto) on this machine")
_NATIVE = ("this CPU has bf16 instructions: precision=bf16 trains faster here (autocast, 0.72x the default recipe's "
           "time in BENCHMARKS.md, bf16 on the CPU); auto stays fp32 so that every CPU trains the same weights")


def native_bf16_cpu() -> bool:
    """Whether this machine's CPU has bf16 instructions. Imports torch."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private; absent before torch 2.3
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def bf16_advice(requested: str, resolved: str, on_cpu: bool, native_bf16: bool,
                training: bool) -> tuple[int, str] | None:
    """(log level, line) a run on the CPU gives about bf16, or None: a warning when it will compute in
    emulated bf16; a note when `auto` trains in fp32 where bf16 is native (not for prediction, where
    bf16 changes answers: 7 of 810 in the benchmark)."""
    if not on_cpu:
        return None
    if resolved == "bf16" and not native_bf16:
        return logging.WARNING, _EMULATED
    if training and requested == "auto" and resolved == "fp32" and native_bf16:
        return logging.INFO, _NATIVE
    return None


def cpu_bf16_advice(requested: str, training: bool) -> tuple[int, str] | None:
    """`bf16_advice` for `requested` (a config's precision) on this machine. Imports torch."""
    import torch

    from qa_lib.predict import resolve_precision

    on_cpu = not torch.cuda.is_available()
    return bf16_advice(requested, resolve_precision(requested), on_cpu, on_cpu and native_bf16_cpu(), training)
