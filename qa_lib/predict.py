"""Start/end logits for every feature, returned in feature order.

Batches are formed from length-sorted features (little padding), and each row's logits are
written back to its own feature index, so the order of the output never depends on the
batching. Positions past a feature's length hold -inf.
"""

from __future__ import annotations

import datasets
import numpy as np
import torch

from qa_lib.features import model_input_columns


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def predict_logits(model, features: datasets.Dataset, batch_size: int = 64, precision: str = "fp32",
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    from tqdm.auto import tqdm

    device = _device()
    model = model.to(device).eval()
    columns = model_input_columns(features)
    inputs = features.select_columns(columns)
    lengths = np.array([len(x) for x in inputs["input_ids"]], dtype=np.int64)
    n, width = len(lengths), int(lengths.max()) if len(lengths) else 0
    start = np.full((n, width), -np.inf, dtype=np.float32)
    end = np.full((n, width), -np.inf, dtype=np.float32)
    order = np.argsort(-lengths, kind="stable")
    pad_id = getattr(model.config, "pad_token_id", None) or 0
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    batches = range(0, n, batch_size)
    for lo in tqdm(batches, desc="predict", unit="batch", disable=not progress):
        idx = order[lo : lo + batch_size]
        rows = inputs[idx.tolist()]
        seq = int(lengths[idx].max())
        batch = {}
        for col in columns:
            # The collator pads input ids with the pad token in training; do the same here (some
            # models derive positions or lengths from it).
            pad = pad_id if col == "input_ids" else 0
            arr = np.full((len(idx), seq), pad, dtype=np.int64)
            for r, values in enumerate(rows[col]):
                arr[r, : len(values)] = values
            batch[col] = torch.from_numpy(arr).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(**batch)
        s = out.start_logits.float().cpu().numpy()
        e = out.end_logits.float().cpu().numpy()
        for r, feat in enumerate(idx):
            length = lengths[feat]
            start[feat, :length] = s[r, :length]
            end[feat, :length] = e[r, :length]
    return start, end
