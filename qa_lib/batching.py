"""One padding rule for training and prediction: rows padded on the right.

Features are stored unpadded; each batch is padded to its own longest row here, by the training
collator and by prediction alike, so a feature's token i is column i of the batch in both and
the start/end labels (and the eval offsets) need no shifting.

Right, whatever the tokenizer's `padding_side` says. A left-padding tokenizer (XLNet style) only
decides the order of question and context (see `features`): padding on the left would move every
token's absolute position by however much padding the batch needs, so the same feature would get
other logits in another batch; the models whose tokenizers pad left use relative positions, for
which the side makes no difference.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from qa_lib.ragged import arrow_table

# Columns the model takes, in the order they are passed; labels are copied as they are.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
LABELS = ("start_positions", "end_positions")


def feature_lengths(features) -> list[int]:
    """Each feature's token count, read from Arrow's list lengths (no token lists built)."""
    import pyarrow.compute as pc

    return pc.list_value_length(arrow_table(features, ["input_ids"]).column("input_ids")).to_pylist()


@dataclass(frozen=True)
class Padding:
    pad_token_id: int = 0
    pad_token_type_id: int = 0
    multiple_of: int | None = None  # tensor cores like widths in multiples of 8 in half precision
    window: int | None = None  # every row padded to this width (`for_model`)

    @classmethod
    def of(cls, tokenizer, multiple_of: int | None = None) -> Padding:
        pad_id = tokenizer.pad_token_id
        return cls(pad_token_id=0 if pad_id is None else int(pad_id),
                   pad_token_type_id=int(getattr(tokenizer, "pad_token_type_id", 0) or 0), multiple_of=multiple_of)

    def for_model(self, model, window: int) -> Padding:
        """This padding, or the same to the full `window` for a model whose logits change with the
        padding after a row's tokens (Funnel pools and FNet mixes the whole row, padding included):
        padded to each batch's longest row, the same feature got other logits in another batch, and
        training saw widths prediction does not.
        Padded to the window, as the reference scripts pad every model, a feature's logits are its own."""
        return replace(self, window=window) if padding_changes_logits(model, self, window) else self

    def width(self, longest: int) -> int:
        longest = max(longest, self.window or 0)
        m = self.multiple_of
        return longest if not m else -(-longest // m) * m

    def value(self, column: str) -> int:
        return {"input_ids": self.pad_token_id, "token_type_ids": self.pad_token_type_id}.get(column, 0)

    def pad(self, column: str, rows: Sequence[Sequence[int]], width: int | None = None) -> np.ndarray:
        """(rows, width) int64, each row left-aligned; `width` defaults to the longest row's."""
        width = self.width(max((len(r) for r in rows), default=0)) if width is None else width
        out = np.full((len(rows), width), self.value(column), dtype=np.int64)
        for i, values in enumerate(rows):
            out[i, : len(values)] = values
        return out


@contextmanager
def evaluating(model):
    """`model` in eval mode (no dropout) for a probe's forward passes, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def padding_changes_logits(model, padding: Padding, window: int, tokens: int = 16) -> bool:
    """Whether a row of `tokens` tokens gets other logits padded to `window` (at most 128 wide: the
    probe is one small forward pass, on whatever device the model is) than unpadded; a forward that
    fails at either width counts as a change (a window it cannot take fails in training all the
    same, with the model's own error). Measured, since no config says it."""
    import torch

    width = max(2, min(window, 128))
    tokens = max(1, min(tokens, width // 2))
    vocab = int(getattr(model.config, "vocab_size", 0) or 0) or padding.pad_token_id + tokens + 1
    ids = [(7 + 31 * i) % vocab for i in range(tokens)]
    ids = [(i + 1) % vocab if i == padding.pad_token_id else i for i in ids]
    device = next(model.parameters()).device
    logits = []
    try:
        with evaluating(model), torch.no_grad():
            for w in (tokens, width):
                out = model(input_ids=torch.from_numpy(padding.pad("input_ids", [ids], w)).to(device),
                            attention_mask=torch.from_numpy(padding.pad("attention_mask", [[1] * tokens], w)).to(device))
                logits.append(torch.cat([out.start_logits[0, :tokens], out.end_logits[0, :tokens]]).float())
    except Exception:  # noqa: BLE001 - e.g. a width the model's attention cannot split
        return True
    return not torch.allclose(logits[0], logits[1], rtol=1e-4, atol=1e-4)


class QACollator:
    """The Trainer's collator for padded batches: model inputs padded by `Padding`; `segment_ids`
    (the row's index on its tokens, -1 on padding) and the labels as indices into the flattened
    batch, the form `loss.span_loss` takes for padded and packed batches alike."""

    def __init__(self, padding: Padding):
        self.padding = padding

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        columns = [c for c in MODEL_INPUTS if c in features[0]]
        lengths = [len(f["input_ids"]) for f in features]
        width = self.padding.width(max(lengths))
        batch = {c: torch.from_numpy(self.padding.pad(c, [f[c] for f in features], width)) for c in columns}
        segments = np.full((len(features), width), -1, dtype=np.int64)
        for i, n in enumerate(lengths):
            segments[i, :n] = i
        batch["segment_ids"] = torch.from_numpy(segments)
        for label in LABELS:
            if label in features[0]:
                batch[label] = torch.tensor([i * width + int(f[label]) for i, f in enumerate(features)],
                                            dtype=torch.long)
        return batch
