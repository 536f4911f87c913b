"""Start/end logits for every feature, returned in feature order.

Batches are formed from length-sorted features (little padding) and padded by the same rule as
training (`batching.Padding`: on the right, the tokenizer's pad ids), and each row's logits are
written back to its own feature index, so the output never depends on the batching. Positions
past a feature's length hold -inf.

On a GPU the loop never waits for the device: batches are cut from Arrow's flat buffers (no
Python lists), and the logits stay on the device until a bounded amount has piled up, so the host
prepares the next batch while the device runs this one. A batch that runs out of memory is
halved and sent again, for the same reason that the output does not depend on the batching.
"""

from __future__ import annotations

import logging
from typing import Callable

import datasets
import numpy as np
import torch

from qa_lib.batching import MODEL_INPUTS, Padding
from qa_lib.config import check_precision_name
from qa_lib.errors import ConfigError, OutOfMemory, is_out_of_memory, memory_name, placing_model
from qa_lib.progress import progress_enabled
from qa_lib.ragged import Ragged, arrow_table

log = logging.getLogger(__name__)

# Logit values (start and end together) held on the device before they are copied back: 256 MB.
DEVICE_LOGITS_HELD = 1 << 26


def _smaller_batch(batch_size: int, width: int, device: torch.device) -> int:
    """The batch size to go on with after a batch of `width`-token windows ran out of memory: half,
    since a feature's logits do not depend on its batch; none left below one window."""
    if batch_size == 1:
        raise OutOfMemory(f"predict: out of {memory_name(device)} with a single window of {width} tokens: "
                          f"use a shorter eval_max_length, a lower precision (bf16 or fp16), or a larger device")
    log.warning("predict: out of %s at %d windows a batch; going on with %d (a window's logits do not depend on "
                "its batch)", memory_name(device), batch_size, batch_size // 2)
    return batch_size // 2


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str) -> str:
    """`auto` → bf16 on a GPU that has it, fp16 on an older GPU, fp32 on the CPU."""
    check_precision_name(precision)
    has_cuda = torch.cuda.is_available()
    if precision == "auto":
        if not has_cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and not has_cuda:
        raise ConfigError("precision: fp16 needs a CUDA GPU; use fp32 or auto on the CPU")
    if precision == "bf16" and has_cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision: bf16 is not supported by this GPU; use fp16 or auto")
    return precision


@torch.inference_mode()
def predict_logits(model, features: datasets.Dataset, batch_size: int = 64, precision: str = "fp32",
                   progress: bool | None = None, padding: Padding | None = None,
                   on_batch: Callable[[int, int, float], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`padding`: `Padding.of(tokenizer)` of the model's tokenizer; without it, the model config's pad id.
    `on_batch(done, total, token_share)`: called after each batch is sent to the device, with the
    features sent so far and their share of all tokens, the better measure of the work done, as the
    longest features go first (a worker without progress bars reports from it; it is given counts
    only, so it never waits on the device)."""
    from tqdm.auto import tqdm

    device = _device()
    with placing_model("predict", model, device):
        model = model.to(device).eval()
    if padding is None:
        padding = Padding(pad_token_id=getattr(model.config, "pad_token_id", None) or 0)
    columns = [c for c in MODEL_INPUTS if c in features.column_names]
    table = arrow_table(features, columns)
    ragged = {c: Ragged(table.column(c)) for c in columns}
    lengths = ragged["input_ids"].lengths
    n, width = len(lengths), int(lengths.max()) if len(lengths) else 0
    start = np.full((n, width), -np.inf, dtype=np.float32)
    end = np.full((n, width), -np.inf, dtype=np.float32)
    order = np.argsort(-lengths, kind="stable")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    held: list[tuple[np.ndarray, torch.Tensor, torch.Tensor]] = []
    held_values = 0  # logit values in `held`, kept with it: summing the list every batch grows with it

    def copy_back():
        nonlocal held_values
        for idx, s, e in held:
            w = min(s.shape[1], width)  # a batch padded to a multiple of 8 may be wider than the longest row
            outside = np.arange(w) >= lengths[idx][:, None]
            start[idx, :w] = np.where(outside, -np.inf, s[:, :w].cpu().numpy())
            end[idx, :w] = np.where(outside, -np.inf, e[:, :w].cpu().numpy())
        held.clear()
        held_values = 0

    tokens_sent, tokens_total = 0, max(int(lengths.sum()), 1)
    progress = progress_enabled() if progress is None else progress
    # A with block: a batch that raises (out of memory at one window, an interrupt) still ends the bar's line.
    with tqdm(total=n, desc="predict", unit="feature", disable=not progress) as bar:
        lo = 0
        while lo < n:
            idx = order[lo : lo + batch_size]
            w = padding.width(int(lengths[idx].max()))
            batch = {c: torch.from_numpy(ragged[c].padded(idx, w, padding.value(c))).to(device, non_blocking=True)
                     for c in columns}
            try:
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    out = model(**batch)
            except Exception as exc:  # noqa: BLE001 - only running out of memory is handled
                if not is_out_of_memory(exc):
                    raise
                out = None  # and `exc`, with the frames that hold the batch's activations, goes at the block's end
            if out is None:
                del batch
                batch_size = _smaller_batch(batch_size, w, device)
                copy_back()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            held.append((idx, out.start_logits.float(), out.end_logits.float()))
            held_values += out.start_logits.numel() + out.end_logits.numel()
            if held_values >= DEVICE_LOGITS_HELD:
                copy_back()
            lo += len(idx)
            bar.update(len(idx))
            if on_batch is not None:
                tokens_sent += int(lengths[idx].sum())
                on_batch(lo, n, tokens_sent / tokens_total)
    copy_back()
    return start, end
