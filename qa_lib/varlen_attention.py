"""Variable-length attention for packed batches (`packed_attention: varlen`).

A packed row holds several features; the block mask of `packing.block_mask` keeps them apart
but still has the attention kernel visit every query/key pair of the row, a row's worth of
features squared. Here the batch is instead handed to the attention as one stream of tokens cut
at the features' boundaries (`cu_seq_lens`, the cumulative lengths that the collator emits), and
each feature attends within itself only: no mask, no cross-feature work.

On a CUDA GPU in bf16 or fp16 that is PyTorch's own flash-attention varlen kernel
(`torch.nn.attention.varlen.varlen_attn`, torch 2.9 and later); it has no dropout, so neither
does this. Elsewhere (the CPU, fp32, an older torch) each feature goes through
`scaled_dot_product_attention` alone: exact, slow, there so that the tests and the per-model
check (`packing.packing_problem`) run this path on the CPU too. Sliding-window layers
(ModernBERT) keep their window either way: the kernel's `window_size`, a band mask in the loop. A padded batch (no
`cu_seq_lens_q`) goes to transformers' SDPA attention with its usual mask.

The function is registered with transformers' `AttentionInterface` under `NAME` and switched on
per model with `set_attn_implementation`, so it works for every family whose attention goes
through that interface (BERT, RoBERTa, XLM-R, ELECTRA, ...). transformers passes the model's
keyword arguments down to it: `cu_seq_lens_q`/`max_length_q` are the names of its own
padding-free path.
"""

from __future__ import annotations

import inspect

NAME = "qa_varlen"

# Keys under which model configs keep their attention-dropout rate.
_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                     cu_seq_lens_q=None, max_length_q: int | None = None, **kwargs):
    """transformers' attention-function signature: query/key/value are (rows, heads, width, head
    dim); returns (rows, width, heads, head dim) and no weights."""
    import torch

    if cu_seq_lens_q is None:  # a padded batch (the per-model check runs one): plain SDPA with its mask
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if dropout:
        raise ValueError(f"{NAME} attention has no dropout (got {dropout})")
    reach = _reach(kwargs.get("sliding_window"))
    rows, heads, width, dim = query.shape
    q, k, v = (t.transpose(1, 2).reshape(rows * width, heads, dim) for t in (query, key, value))
    if _kernel_applies(q, scaling, reach):
        cu = cu_seq_lens_q.to(torch.int32)
        bound = max_length_q or width
        extra = {"scale": scaling} if _KERNEL_TAKES_SCALE else {}
        if reach is not None:
            extra["window_size"] = (reach, reach)
        out = _KERNEL(q, k, v, cu, cu, bound, bound, **extra)
    else:
        out = torch.empty_like(q)
        bounds = cu_seq_lens_q.tolist()
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            band = None
            if reach is not None and hi - lo > reach + 1:
                at = torch.arange(hi - lo, device=q.device)
                band = (at[:, None] - at[None, :]).abs() <= reach
            out[lo:hi] = torch.nn.functional.scaled_dot_product_attention(
                *(t[lo:hi].transpose(0, 1) for t in (q, k, v)), attn_mask=band, scale=scaling).transpose(0, 1)
    return out.reshape(rows, width, heads, dim), None


def _reach(sliding_window: int | None) -> int | None:
    """How far apart (in tokens, inclusive) a sliding-window layer's query and key may be; None for
    a full-attention layer. transformers hands such a layer's window to its attention function one
    wider than that distance (ModernBERT: `config.sliding_window + 1`), and its own flash path
    subtracts the one again: the same distance its SDPA mask allows, so packed and padded agree."""
    return None if sliding_window is None else int(sliding_window) - 1


def _kernel_applies(q, scaling: float | None, reach: int | None = None) -> bool:
    """Whether PyTorch's varlen kernel can take these (tokens, heads, head dim) queries, within a
    sliding window of `reach` tokens each side where it is not None."""
    import torch

    if _KERNEL is None or not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        return False
    if reach is not None and not _KERNEL_TAKES_WINDOW:
        return False
    # torch 2.9 and 2.10's kernel takes no `scale`: it always divides by sqrt(head dim), as BERT does.
    return _KERNEL_TAKES_SCALE or scaling is None or abs(scaling * q.shape[-1] ** 0.5 - 1) < 1e-6


def kernel_problem(precision: str, model=None) -> str | None:
    """Why a CUDA GPU training `model` in `precision` would attend each feature alone (slowly)
    instead of using the varlen kernel; None when it uses the kernel."""
    import torch

    from qa_lib.packing import sliding_window

    if _KERNEL is None:
        return f"this torch ({torch.__version__}) has no varlen kernel (torch 2.9 and later)"
    if precision not in ("bf16", "fp16"):
        return f"the varlen kernel takes bf16 or fp16, not {precision}"
    if model is not None and sliding_window(model) is not None and not _KERNEL_TAKES_WINDOW:
        return f"this torch's ({torch.__version__}) varlen kernel takes no sliding window, which this model's layers need"
    return None


def _varlen_attn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def register() -> None:
    """Make `NAME` an attention implementation; padded batches get SDPA's mask with it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, varlen_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def use_varlen(model) -> str | None:
    """Switch `model`'s attention to this one; None, or why it cannot be (the model unchanged)."""
    for key in _DROPOUT_KEYS:
        rate = getattr(model.config, key, None)
        if isinstance(rate, (int, float)) and rate > 0:
            return f"its attention dropout is {rate} and the varlen kernel has none; set attention_dropout: 0"
    register()
    previous = model.config._attn_implementation
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, KeyError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    if model.config._attn_implementation != NAME:
        model.set_attn_implementation(previous)
        return "its attention implementation cannot be swapped"
    return None


# Resolved once: the attention function runs inside compiled steps.
_KERNEL = _varlen_attn()
_KERNEL_TAKES_SCALE = _KERNEL is not None and "scale" in inspect.signature(_KERNEL).parameters
_KERNEL_TAKES_WINDOW = _KERNEL is not None and "window_size" in inspect.signature(_KERNEL).parameters
