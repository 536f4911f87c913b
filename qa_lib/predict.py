"""Start/end logits for every feature, returned in feature order.

Batches are formed from length-sorted features (little padding) and padded by the same rule as
training (`batching.Padding`: on the right, the tokenizer's pad ids), and each row's logits are
written back to its own feature index, so the output never depends on the batching. Positions
past a feature's length hold -inf.
"""

from __future__ import annotations

import datasets
import numpy as np
import torch

from qa_lib.batching import MODEL_INPUTS, Padding, feature_lengths
from qa_lib.progress import progress_enabled


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def predict_logits(model, features: datasets.Dataset, batch_size: int = 64, precision: str = "fp32",
                   progress: bool | None = None, padding: Padding | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`padding`: `Padding.of(tokenizer)` of the model's tokenizer; without it, the model config's pad id."""
    from tqdm.auto import tqdm

    device = _device()
    model = model.to(device).eval()
    if padding is None:
        padding = Padding(pad_token_id=getattr(model.config, "pad_token_id", None) or 0)
    columns = [c for c in MODEL_INPUTS if c in features.column_names]
    inputs = features.select_columns(columns)
    lengths = np.array(feature_lengths(inputs), dtype=np.int64)
    n, width = len(lengths), int(lengths.max()) if len(lengths) else 0
    start = np.full((n, width), -np.inf, dtype=np.float32)
    end = np.full((n, width), -np.inf, dtype=np.float32)
    order = np.argsort(-lengths, kind="stable")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    batches = range(0, n, batch_size)
    progress = progress_enabled() if progress is None else progress
    for lo in tqdm(batches, desc="predict", unit="batch", disable=not progress):
        idx = order[lo : lo + batch_size]
        rows = inputs[idx.tolist()]
        batch = {col: torch.from_numpy(padding.pad(col, rows[col])).to(device) for col in columns}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(**batch)
        s = out.start_logits.float().cpu().numpy()
        e = out.end_logits.float().cpu().numpy()
        for r, feat in enumerate(idx):
            length = lengths[feat]
            start[feat, :length] = s[r, :length]
            end[feat, :length] = e[r, :length]
    return start, end
