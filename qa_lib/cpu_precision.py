"""Whether this CPU computes bf16 in hardware, and what a CPU training run says about it.

`precision: auto` trains in fp32 on every CPU, so that a pool of mixed CPUs trains the same weights
under one store key and a CPU run's scores match the fp32 reference's. Where the CPU has bf16
instructions (AVX512-BF16 or AMX: Intel since Cooper Lake, AMD since Zen 4), `precision: bf16`
(autocast, weights kept in fp32) is a choice worth knowing: it trained the default recipe faster
at the same F1 within a seed's spread (BENCHMARKS.md, "bf16 on the CPU"); without them bf16 is
emulated and slower, so nothing is said there.
"""

from __future__ import annotations


def native_bf16_cpu() -> bool:
    """Whether this machine's CPU has bf16 instructions. Imports torch."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private; absent before torch 2.3
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def bf16_note(requested: str, resolved: str, native_bf16: bool) -> str | None:
    """The line a training run adds when `auto` trained it in fp32 (which it does only without a GPU)
    on a CPU that computes bf16."""
    if requested != "auto" or resolved != "fp32" or not native_bf16:
        return None
    return ("this CPU has bf16 instructions: precision=bf16 trains faster here (autocast; fp32 stays the default so "
            "that every CPU trains the same weights; see BENCHMARKS.md, bf16 on the CPU)")
