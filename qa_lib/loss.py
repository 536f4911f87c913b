"""The span loss: for each feature, cross-entropy of its start and end logits over its own tokens.

One function for padded and packed batches alike. A batch is rows of tokens; `segment_ids` says
which feature each token belongs to (-1: padding), and the labels are flat indices into the
batch's tokens. A padded batch is the case of one feature per row.

The model's own QA loss takes the softmax over the whole padded row, pad positions included, so
a feature's loss there depended on how much padding its batch happened to need; here a feature's
loss depends on its own tokens only, which is also what makes a packed batch train the same as a
padded one. No boolean indexing and no `.item()`: nothing here waits for the GPU.
"""

from __future__ import annotations

import torch


def span_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, segment_ids: torch.Tensor,
              start_positions: torch.Tensor, end_positions: torch.Tensor, per: float | None = None) -> torch.Tensor:
    """Mean over features of (start CE + end CE) / 2, as `...ForQuestionAnswering` averages it.

    `per`: divide the sum by this many features instead of by the batch's count. Packed batches
    hold a varying number of features (more when they are short); dividing each by the mean count
    gives every feature the same weight, as in padded batches of a fixed size, where a per-batch
    mean would weigh the features of a crowded batch less."""
    segments = segment_ids.reshape(-1)
    n = start_positions.numel()
    # Padding goes to an extra bucket n, dropped at the end: no -inf anywhere, so no NaN either.
    bucket = torch.where(segments >= 0, segments, n)
    total = (_cross_entropy(start_logits, bucket, n, start_positions)
             + _cross_entropy(end_logits, bucket, n, end_positions)) / 2
    return total / (per or n)


def _cross_entropy(logits: torch.Tensor, bucket: torch.Tensor, n: int, targets: torch.Tensor) -> torch.Tensor:
    x = logits.reshape(-1).float()
    peak = torch.full((n + 1,), float("-inf"), device=x.device).scatter_reduce(
        0, bucket, x.detach(), "amax", include_self=True)
    total = torch.zeros(n + 1, device=x.device).scatter_add(0, bucket, torch.exp(x - peak[bucket]))
    log_norm = (peak + total.log())[:n]
    return (log_norm - x[targets.reshape(-1)]).sum()
