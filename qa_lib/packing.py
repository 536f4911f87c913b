"""Padding-free training batches: features laid end to end in rows of a fixed width.

Every packed batch has the same shape, `rows x width` tokens, whatever the features' lengths:
what `torch.compile` and CUDA graphs need, and no step spends matrix products on padding beyond
the tail of each row. Each row holds whole features (a feature is never split); a block-diagonal
attention mask keeps each feature's tokens to themselves, and position ids restart at each
feature, so every feature sees exactly what it would see alone in a padded row.

Rows are twice the longest feature wide: with rows one feature wide, most rows would hold one
feature (31 % of the default recipe's features are full windows) and little padding would go;
wider rows pack denser, but the mask makes the attention cost grow with the row width.

Batches are planned once, before training (`plan_batches`): length-grouped as the padded
batches are, and each step's loss divided by the plan's mean feature count rather than its own
(`loss.span_loss`'s `per`), so every feature weighs the same whichever batch it lands in.

Whether a model family can take such a batch (a 4D mask as given, position ids that mean what
they mean in BERT) is not assumed from its name: `packing_problem` runs a few real features
both ways through the model and compares the logits.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from qa_lib.batching import LABELS, MODEL_INPUTS, Padding, evaluating
from qa_lib.validate import packing_refused

ROW_FEATURES = 2  # row width, in longest features


def row_width(longest: int) -> int:
    """Row width of packed batches for features of at most `longest` tokens: `ROW_FEATURES` of
    them, in multiples of 8 for tensor cores."""
    return -(-ROW_FEATURES * longest // 8) * 8


class _Batch:
    """One batch being filled: `rows` rows of `width` tokens, each feature in the first row with room."""

    def __init__(self, rows: int, width: int):
        self.free = [width] * rows
        self.rows: list[list[int]] = [[] for _ in range(rows)]

    def place(self, feature: int, length: int) -> bool:
        for r, free in enumerate(self.free):
            if free >= length:
                self.free[r] -= length
                self.rows[r].append(feature)
                return True
        return False


def first_fit(lengths: Sequence[int], rows: int, width: int) -> list[list[int]] | None:
    """Positions of `lengths` assigned to `rows` rows of `width` tokens (each to the first row it
    fits), or None when they do not all fit."""
    batch = _Batch(rows, width)
    return batch.rows if all(batch.place(i, int(n)) for i, n in enumerate(lengths)) else None


def plan_batches(lengths: Sequence[int], rows: int, width: int, seed: int, group: int = 50) -> list[list[list[int]]]:
    """The training features (by index) in batches of `rows` rows.

    As the Trainer's length-grouped sampler does for padded batches: a seeded shuffle, cut into
    runs of about `group` batches' worth of tokens, each run sorted longest first; then each
    feature goes into the first row of the current batch with room, and a new batch starts when
    none has. A batch thus holds features of similar length (on the default recipe, random
    batches trained to an F1 about 3 points lower than length-grouped ones) and the rows fill
    well (first fit, longest first)."""
    if max(lengths, default=0) > width:
        raise ValueError(f"a feature of {max(lengths)} tokens does not fit a row of {width}")
    order = np.random.default_rng(seed).permutation(len(lengths)).tolist()
    run_tokens, runs, run, tokens = group * rows * width, [], [], 0
    for i in order:
        run.append(i)
        tokens += int(lengths[i])
        if tokens >= run_tokens:
            runs.append(run)
            run, tokens = [], 0
    runs.append(run)
    batches: list[list[list[int]]] = []
    current = _Batch(rows, width)
    for i in (i for run in runs for i in sorted(run, key=lambda i: -int(lengths[i]))):
        if not current.place(i, int(lengths[i])):
            batches.append(current.rows)
            current = _Batch(rows, width)
            current.place(i, int(lengths[i]))
    if any(current.rows):
        batches.append(current.rows)
    return batches


def rows_for(tokens_per_batch: int, width: int) -> int:
    return max(1, -(-tokens_per_batch // width))


class PackedBatches:
    """The Trainer's dataset when packing: item i is batch i of the plan, its rows of features.

    The Trainer then draws one item per step (batch size 1) in a seeded random order each epoch;
    `PackedCollator` lays the item out."""

    def __init__(self, features, plan: list[list[list[int]]]):
        columns = [c for c in (*MODEL_INPUTS, *LABELS) if c in features.column_names]
        self.features = features.select_columns(columns)
        self.plan = plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> list[list[dict[str, Any]]]:
        rows = self.plan[i]
        flat = [f for row in rows for f in row]
        table = self.features[flat] if flat else {}
        records = [{c: table[c][k] for c in table} for k in range(len(flat))]
        out, k = [], 0
        for row in rows:
            out.append(records[k:k + len(row)])
            k += len(row)
        return out


class PackedCollator:
    """Lays rows of features out as one `rows x width` batch.

    Besides the model inputs it returns `position_ids` (restarting at each feature, plus the
    family's offset: RoBERTa counts from `padding_idx + 1`), `segment_ids` (the feature each token
    belongs to, -1 for padding), `cu_seq_lens` (where each feature and each row's padded tail
    starts in the flattened batch, and its end: what varlen attention takes) and the labels as
    indices into the flattened batch, which is what `loss.span_loss` takes. No attention mask:
    `block_mask` builds it from `segment_ids` where the batch already is (on the GPU a
    `rows x width x width` mask is tens of MB a step to build on the host and copy).
    """

    def __init__(self, padding: Padding, rows: int, width: int, position_offset: int = 0):
        self.padding, self.rows, self.width, self.position_offset = padding, rows, width, position_offset

    def __call__(self, items: list[list[list[dict[str, Any]]]]) -> dict[str, Any]:
        import torch

        (rows,) = items  # the Trainer's batch size is 1 when packing: one planned batch per step
        if len(rows) > self.rows:
            raise ValueError(f"a planned batch of {len(rows)} rows does not fit {self.rows}")
        rows = list(rows) + [[] for _ in range(self.rows - len(rows))]
        features = [f for row in rows for f in row]
        columns = [c for c in MODEL_INPUTS if features and c in features[0] and c != "attention_mask"]
        shape = (self.rows, self.width)
        batch = {c: np.full(shape, self.padding.value(c), dtype=np.int64) for c in columns}
        positions = np.zeros(shape, dtype=np.int64)
        segments = np.full(shape, -1, dtype=np.int64)
        labels = {label: [] for label in LABELS if features and label in features[0]}
        bounds = [0]  # where each feature, and each row's padded tail, starts in the flattened batch
        k = 0
        for r, row in enumerate(rows):
            at = 0
            for f in row:
                n = len(f["input_ids"])
                if at + n > self.width:
                    raise ValueError(f"features of {at + n} tokens do not fit a row of {self.width}")
                for c in columns:
                    batch[c][r, at:at + n] = f[c]
                positions[r, at:at + n] = np.arange(n)
                segments[r, at:at + n] = k
                for label, values in labels.items():
                    values.append(r * self.width + at + int(f[label]))
                at += n
                k += 1
                bounds.append(r * self.width + at)
            if at < self.width:
                bounds.append((r + 1) * self.width)
        positions += self.position_offset
        out = {c: torch.from_numpy(v) for c, v in batch.items()}
        out["position_ids"] = torch.from_numpy(positions)
        out["segment_ids"] = torch.from_numpy(segments)
        out["cu_seq_lens"] = torch.tensor(bounds, dtype=torch.int32)
        for label, values in labels.items():
            out[label] = torch.tensor(values, dtype=torch.long)
        return out


def block_mask(segment_ids, model):
    """The `rows x 1 x width x width` attention mask of a packed batch: true where query and key
    belong to the same feature. A row's padding (segment -1) attends to itself, so no softmax row
    is empty. For eager attention, which adds the mask to the scores instead of selecting with it,
    it is 0 / -inf in float.

    A model with sliding-window layers (ModernBERT) gets one mask per layer type, as its own mask
    functions would build them: the sliding one also keeps query and key within the window. A
    feature's tokens are as far apart in the row as in the feature, so the window means the same."""
    import torch

    same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    window = sliding_window(model)
    if window is None:
        return _as_attention_mask(same, model)
    at = torch.arange(same.shape[-1], device=same.device)
    near = (at[:, None] - at[None, :]).abs() <= window
    return {"full_attention": _as_attention_mask(same, model),
            "sliding_attention": _as_attention_mask(same & near, model)}


def sliding_window(model) -> int | None:
    """The window of a model whose layers include sliding-window ones (tokens at most this far
    apart attend to each other), or None."""
    config = model.config
    if "sliding_attention" not in (getattr(config, "layer_types", None) or ()):
        return None
    return getattr(config, "sliding_window", None)


def _as_attention_mask(same, model):
    import torch

    if getattr(model.config, "_attn_implementation", None) == "eager":
        return torch.zeros(same.shape, device=same.device).masked_fill(~same, float("-inf"))
    return same


def position_offset(model) -> int:
    """Where a family's absolute positions start for an unpadded sequence: RoBERTa-style
    embeddings count from `padding_idx + 1`, BERT-style from 0."""
    embeddings = getattr(model.base_model, "embeddings", None)
    padding_idx = getattr(embeddings, "padding_idx", None)
    return int(padding_idx) + 1 if isinstance(padding_idx, int) else 0


def packed_collator(model, padding: Padding, rows: int, width: int) -> PackedCollator:
    return PackedCollator(padding, rows, width, position_offset(model))


def model_inputs(batch: dict[str, Any], model) -> dict[str, Any]:
    """What the model takes of a collated batch (padded or packed): the loss's columns removed,
    and for a packed batch either its features' bounds (varlen attention) or a block mask built
    from its segments."""
    from qa_lib.varlen_attention import NAME as VARLEN

    inputs = {k: v for k, v in batch.items() if k not in ("segment_ids", "cu_seq_lens", *LABELS)}
    if "attention_mask" in inputs:
        return inputs
    if getattr(model.config, "_attn_implementation", None) == VARLEN:
        # The longest a feature can be is the row: a constant, so a compiled step is not re-traced.
        inputs.update(cu_seq_lens_q=batch["cu_seq_lens"], max_length_q=batch["segment_ids"].shape[1])
    else:
        inputs["attention_mask"] = block_mask(batch["segment_ids"], model)
    return inputs


def packed_logit_gap(model, padding: Padding, sample: list[dict[str, Any]], width: int,
                     rows: int) -> tuple[float, float] | None:
    """`sample` through `model` padded (a feature a row) and packed (first fit into `rows` rows of
    `width`), on the model's device and as the caller runs it (eval mode, autocast): the largest
    start-logit difference between the two, and the largest padded logit. None when the sample
    does not fit the rows."""
    import torch

    from qa_lib.batching import QACollator

    unlabelled = [{k: v for k, v in f.items() if k not in LABELS} for f in sample]
    lengths = [len(f["input_ids"]) for f in unlabelled]
    placed = first_fit(lengths, rows, width)
    if placed is None:
        return None
    device = next(model.parameters()).device
    padded = QACollator(padding)(unlabelled)
    packed = packed_collator(model, padding, rows, width)([[[unlabelled[i] for i in row] for row in placed]])
    with torch.no_grad():
        a, b = (model(**model_inputs({k: v.to(device) for k, v in batch.items()}, model)).start_logits.float()
                for batch in (padded, packed))
    b, gap = b.reshape(-1), 0.0
    for r, row in enumerate(placed):
        at = r * width
        for i in row:
            gap = max(gap, float((a[i, :lengths[i]] - b[at:at + lengths[i]]).abs().max()))
            at += lengths[i]
    return gap, float(a.abs().max())


def packing_problem(model, padding: Padding, sample: list[dict[str, Any]], width: int) -> str | None:
    """None if `model` gives the same logits for `sample` packed as padded, one feature per row;
    otherwise what differs. The sample is packed into one row fewer than it has features, so some
    row holds several. Run in eval mode (no dropout).

    A model whose attention is not built on transformers' AttentionInterface is refused without
    running: such models (XLNet, DeBERTa, Longformer...) build their own masks from a 2D one, and
    XLNet broadcasts a 4D mask far beyond the batch: 21.5 GB of memory for two features in a row
    of 256 tokens, before it fails."""
    if not sample:
        return None
    if problem := packing_refused(type(model)):
        return problem
    try:
        with evaluating(model):
            found = packed_logit_gap(model, padding, sample, width, rows=max(1, len(sample) - 1))
    except Exception as exc:  # noqa: BLE001 - any failure means this family cannot take packed rows
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}".rstrip(": ")
    if found is None:
        return None  # nothing to compare: the sample is wider than a row
    worst, scale = found
    if not worst <= 1e-4 * max(1.0, scale):
        return f"packed logits differ from padded ones by up to {worst:.2g}"
    return None
