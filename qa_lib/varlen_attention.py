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
check (`packing.packing_problem`) run this path on the CPU too. A padded batch (no
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
    if kwargs.get("sliding_window") is not None:  # the per-model check refuses such a family by this
        raise ValueError(f"{NAME} attention has no sliding window (a layer asked for {kwargs['sliding_window']})")
    rows, heads, width, dim = query.shape
    q, k, v = (t.transpose(1, 2).reshape(rows * width, heads, dim) for t in (query, key, value))
    if _kernel_applies(q, scaling):
        cu = cu_seq_lens_q.to(torch.int32)
        bound = max_length_q or width
        scale = {"scale": scaling} if _KERNEL_TAKES_SCALE else {}
        out = _KERNEL(q, k, v, cu, cu, bound, bound, **scale)
    else:
        out = torch.empty_like(q)
        bounds = cu_seq_lens_q.tolist()
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            out[lo:hi] = torch.nn.functional.scaled_dot_product_attention(
                *(t[lo:hi].transpose(0, 1) for t in (q, k, v)), scale=scaling).transpose(0, 1)
    return out.reshape(rows, width, heads, dim), None


def _kernel_applies(q, scaling: float | None) -> bool:
    """Whether PyTorch's varlen kernel can take these (tokens, heads, head dim) queries."""
    import torch

    if _KERNEL is None or not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        return False
    # torch 2.9 and 2.10's kernel takes no `scale`: it always divides by sqrt(head dim), as BERT does.
    return _KERNEL_TAKES_SCALE or scaling is None or abs(scaling * q.shape[-1] ** 0.5 - 1) < 1e-6


def kernel_problem(precision: str) -> str | None:
    """Why a CUDA GPU training in `precision` would attend each feature alone (slowly) instead of
    using the varlen kernel; None when it uses the kernel."""
    import torch

    if _KERNEL is None:
        return f"this torch ({torch.__version__}) has no varlen kernel (torch 2.9 and later)"
    if precision not in ("bf16", "fp16"):
        return f"the varlen kernel takes bf16 or fp16, not {precision}"
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
