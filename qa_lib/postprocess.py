"""Logits → answers, with array operations instead of a per-token Python loop.

For each feature the `n_best_size` highest start and end positions are taken (`_top_k`), all
start/end pairs are scored at once, and pairs are dropped if either end is outside the context,
the end precedes the start, or the span is longer than `max_answer_length` tokens. An example's
candidates are pooled over all its windows and ranked by score (ties keep window, start-rank,
end-rank order, as a plain loop would).

SQuAD v2: an example's null score is the *minimum* CLS score (start + end logit at CLS) over
its windows; the answer is empty when `null_score - best_span_score > null_score_diff_threshold`,
and `null_odds[id] = null_score - best_span_score`.
"""

from __future__ import annotations

import json
import math
from typing import Callable
from pathlib import Path

import datasets
import numpy as np

from qa_lib.ragged import Ragged, arrow_table


class Predictions:
    """Answers per example id, SQuAD v2 null odds, and the n-best lists.

    The n-best lists (dicts with text, score, logits, offsets, probability) are built on first
    use: they cost more than choosing the answers, and only the `nbest_predictions.json` file
    and callers that ask for them need them.
    """

    def __init__(self, answers: dict[str, str], null_odds: dict[str, float] | None,
                 nbest: dict[str, list[dict]] | Callable[[], dict[str, list[dict]]]):
        self.answers = answers
        self.null_odds = null_odds
        self._nbest = nbest

    @property
    def nbest(self) -> dict[str, list[dict]]:
        if callable(self._nbest):
            self._nbest = self._nbest()
        return self._nbest

    def write(self, folder: str | Path) -> dict[str, str]:
        """Write the official files; return their paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"predictions": folder / "predictions.json", "nbest": folder / "nbest_predictions.json"}
        paths["predictions"].write_text(json.dumps(self.answers, indent=2, ensure_ascii=False))
        paths["nbest"].write_text(json.dumps(self.nbest, indent=2, ensure_ascii=False))
        if self.null_odds is not None:
            paths["null_odds"] = folder / "null_odds.json"
            paths["null_odds"].write_text(json.dumps(self.null_odds, indent=2))
        return {k: str(v) for k, v in paths.items()}


def _top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest per row, largest first; equal values in index order.

    The order a stable descending sort gives (NaN last), ties at the cut-off included. The
    largest k + 1 of each row come from `torch.topk`, which runs on all cores outside the GIL and
    orders them by value. Where those k + 1 values strictly decrease that order is the stable
    one; rows with a tie among them, or a NaN, are sorted in full.
    """
    import torch

    n, width = logits.shape
    k = min(k, width)
    if k == width or n == 0:
        top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        return top, np.take_along_axis(logits, top, axis=1)
    values, index = torch.topk(torch.from_numpy(np.ascontiguousarray(logits)), k + 1, dim=1)
    values, index = values.numpy(), index.numpy()
    tied = ~(values[:, :-1] > values[:, 1:]).all(axis=1)  # NaN compares false: counted as a tie
    top, top_values = index[:, :k].copy(), values[:, :k].copy()
    if tied.any():
        top[tied] = np.argsort(-logits[tied], axis=1, kind="stable")[:, :k]
        top_values[tied] = np.take_along_axis(logits[tied], top[tied], axis=1)
    return top, top_values


class RaggedOffsets:
    """Every feature's (start_char, end_char) pairs, flat as Arrow stores them.

    -1 marks a token outside the context. Read straight from Arrow: converting ragged offset
    lists to Python objects costs more than all of post-processing, and only the top-k tokens of
    each window are ever looked up, so no padded (features x width) array is built for them.
    """

    def __init__(self, column):
        ragged = Ragged(column)
        # reshape: (0, 2) pairs when there are no tokens at all.
        self.lengths, self.pairs, self.row_start = ragged.lengths, ragged.values.reshape(-1, 2), ragged.starts

    @classmethod
    def of(cls, features: datasets.Dataset) -> RaggedOffsets:
        return cls(arrow_table(features, ["offset_mapping"]).column("offset_mapping"))

    def in_context(self, feat: np.ndarray, tok: np.ndarray) -> np.ndarray:
        """Whether token `tok` of feature `feat` (broadcast) is a context token."""
        feat, tok = np.broadcast_arrays(feat, tok)
        inside = tok < self.lengths[feat]
        if not len(self.pairs):
            return np.zeros(feat.shape, dtype=bool)
        return inside & (self.pairs[np.where(inside, self.row_start[feat] + tok, 0), 0] >= 0)

    def at(self, feat: np.ndarray, tok: np.ndarray) -> np.ndarray:
        """Offsets of token `tok` of feature `feat` (broadcast), shape (..., 2); -1 past a feature's end."""
        feat, tok = np.broadcast_arrays(feat, tok)
        inside = tok < self.lengths[feat]
        if not len(self.pairs):
            return np.full(feat.shape + (2,), -1, dtype=np.int64)
        out = self.pairs[np.where(inside, self.row_start[feat] + tok, 0)]
        out[~inside] = -1
        return out

    def dense(self, width: int) -> np.ndarray:
        """(features, width, 2) offsets, -1 for non-context tokens and past each feature's end."""
        out = np.full((len(self.lengths), width, 2), -1, dtype=np.int64)
        rows = np.repeat(np.arange(len(self.lengths)), self.lengths)
        cols = np.arange(len(self.pairs)) - np.repeat(self.row_start, self.lengths)
        out[rows, cols] = self.pairs
        return out


def _top_pairs(start_logits: np.ndarray, end_logits: np.ndarray, offsets: RaggedOffsets, n_best_size: int,
               max_answer_length: int):
    """Each feature's top-k starts and ends, their logits, and which (start, end) pairs are valid."""
    (starts, s_val), (ends, e_val) = _top_k(start_logits, n_best_size), _top_k(end_logits, n_best_size)  # (F, k)
    rows = np.arange(len(starts))[:, None]
    s_ok = offsets.in_context(rows, starts) & np.isfinite(s_val)
    e_ok = offsets.in_context(rows, ends) & np.isfinite(e_val)
    # end - start in [0, max_answer_length) as one unsigned compare on small ints (a negative
    # difference wraps to a large one): the (F, k, k) grid is the biggest array built here.
    signed, unsigned = (np.int16, np.uint16) if start_logits.shape[1] < 2**15 else (np.int64, np.uint64)
    span = ends.astype(signed)[:, None, :] - starts.astype(signed)[:, :, None]
    valid = span.view(unsigned) < min(max_answer_length, np.iinfo(signed).max)
    valid &= s_ok[:, :, None]
    valid &= e_ok[:, None, :]
    return starts, ends, s_val, e_val, valid


def candidate_spans(start_logits: np.ndarray, end_logits: np.ndarray, offsets: RaggedOffsets,
                    n_best_size: int, max_answer_length: int):
    """All valid (feature, start, end) spans with scores, flattened in loop order."""
    starts, ends, s_val, e_val, valid = _top_pairs(start_logits, end_logits, offsets, n_best_size, max_answer_length)
    feat, si, ei = np.nonzero(valid)
    return feat, starts[feat, si], ends[feat, ei], s_val[feat, si] + e_val[feat, ei]


def _first_max_per_group(values: np.ndarray, bounds: np.ndarray):
    """For each non-empty group values[bounds[i]:bounds[i+1]]: its max and the index of its first max."""
    nonempty = bounds[1:] > bounds[:-1]
    group_start = bounds[:-1][nonempty]
    if not len(group_start):
        return nonempty, np.zeros(0, values.dtype), np.zeros(0, np.int64)
    group_max = np.maximum.reduceat(values, group_start)
    sizes = np.diff(np.append(group_start, bounds[-1]))
    is_max = np.flatnonzero(values[: bounds[-1]] == np.repeat(group_max, sizes))
    return nonempty, group_max, is_max[np.searchsorted(is_max, group_start)]


def postprocess(examples: datasets.Dataset, features: datasets.Dataset, start_logits: np.ndarray,
                end_logits: np.ndarray, n_best_size: int = 20, max_answer_length: int = 30,
                version_2_with_negative: bool = False, null_score_diff_threshold: float = 0.0) -> Predictions:
    if len(features) != len(start_logits):
        raise ValueError(f"{len(features)} features but {len(start_logits)} rows of logits")
    ex_table = arrow_table(examples, ["id", "context"])
    ex_ids, contexts = ex_table.column("id").to_pylist(), ex_table.column("context").to_pylist()
    n_ex = len(ex_ids)
    feat_table = arrow_table(features, ["example_id", "cls_index", "offset_mapping"])
    offsets = RaggedOffsets(feat_table.column("offset_mapping"))
    # A dict, not pyarrow's `index_in`: on the 830 Super_Bowl_50 features after inference (cold) that took
    # 1.2 ms, this 0.2 ms.
    feat_example = _example_index(feat_table.column("example_id").to_pylist(), ex_ids)

    starts, ends, s_val, e_val, valid = _top_pairs(start_logits, end_logits, offsets, n_best_size, max_answer_length)
    k = starts.shape[1]
    # Each window's best pair: argmax takes the first of equal scores, i.e. loop order (start rank, end rank).
    pair_scores = np.where(valid, s_val[:, :, None] + e_val[:, None, :], -np.inf).reshape(len(valid), -1)
    pair_best = pair_scores.argmax(axis=1) if pair_scores.size else np.zeros(len(valid), dtype=np.int64)
    window_score = pair_scores[np.arange(len(valid)), pair_best] if pair_scores.size else np.full(len(valid), -np.inf)
    # Then each example's best window, the first in feature order among equals, as a plain loop keeps.
    by_example = np.argsort(feat_example, kind="stable")
    bounds = np.searchsorted(feat_example[by_example], np.arange(n_ex + 1))
    nonempty, ex_score, first = _first_max_per_group(window_score[by_example], bounds)
    found = np.isfinite(ex_score)
    has_span = np.zeros(n_ex, dtype=bool)
    has_span[np.flatnonzero(nonempty)[found]] = True
    best_feat = by_example[first[found]]
    best_pair = pair_best[best_feat]
    s_tok, e_tok = starts[best_feat, best_pair // k], ends[best_feat, best_pair % k]
    char_start = offsets.at(best_feat, s_tok)[:, 0].tolist()
    char_end = offsets.at(best_feat, e_tok)[:, 1].tolist()
    best_text = {i: contexts[i][a:b] for i, a, b in zip(np.flatnonzero(has_span).tolist(), char_start, char_end)}

    null_scores = None
    null_odds: dict[str, float] | None = None
    if version_2_with_negative:
        cls = feat_table.column("cls_index").to_numpy().astype(np.int64)
        rows = np.arange(len(features))
        feat_null = start_logits[rows, cls] + end_logits[rows, cls]
        null_scores = np.full(n_ex, np.inf, dtype=np.float32)
        np.minimum.at(null_scores, feat_example, feat_null)
        best_score = np.zeros(n_ex, dtype=np.float64)
        best_score[has_span] = ex_score[found]
        # float32 scores, float64 difference: what a loop over Python floats computes.
        diff = (null_scores.astype(np.float64) - best_score).tolist()
        null_odds = dict(zip(ex_ids, diff))
        answers = {eid: "" if d > null_score_diff_threshold else best_text.get(i, "")
                   for i, (eid, d) in enumerate(zip(ex_ids, diff))}
    else:
        answers = {eid: best_text.get(i, "") for i, eid in enumerate(ex_ids)}

    def build_nbest() -> dict[str, list[dict]]:
        feat, si, ei = np.nonzero(valid)  # every valid span, in loop order
        scores = s_val[feat, si] + e_val[feat, ei]
        # Best score first within each example group; lexsort is stable, so ties keep loop order.
        order = np.lexsort((-scores.astype(np.float64), feat_example[feat]))
        f, st, et, sc = feat[order], starts[feat, si][order], ends[feat, ei][order], scores[order]
        bounds = np.searchsorted(feat_example[f], np.arange(n_ex + 1))
        char_start_l = offsets.at(f, st)[:, 0].tolist()
        char_end_l = offsets.at(f, et)[:, 1].tolist()
        scores_l = sc.tolist()
        start_l, end_l = start_logits[f, st].tolist(), end_logits[f, et].tolist()
        nbest: dict[str, list[dict]] = {}
        for i, eid in enumerate(ex_ids):
            lo, hi = bounds[i], min(bounds[i + 1], bounds[i] + n_best_size)
            ctx = contexts[i]
            entries = [
                {"text": ctx[a:b], "score": sc, "start_logit": sl, "end_logit": el, "offsets": [a, b]}
                for a, b, sc, sl, el in zip(char_start_l[lo:hi], char_end_l[lo:hi], scores_l[lo:hi],
                                            start_l[lo:hi], end_l[lo:hi])
            ]
            if version_2_with_negative:
                entries.append({"text": "", "score": float(null_scores[i]), "start_logit": None, "end_logit": None,
                                "offsets": [0, 0]})
                entries.sort(key=lambda x: x["score"], reverse=True)
                entries = entries[:n_best_size]
            _add_probabilities(entries)
            nbest[eid] = entries
        return nbest

    return Predictions(answers=answers, null_odds=null_odds, nbest=build_nbest)


def _example_index(feature_ids: list[str], example_ids: list[str]) -> np.ndarray:
    """Row of each feature's example in `example_ids`; a feature of an unknown example is an error."""
    row = {eid: i for i, eid in enumerate(example_ids)}
    index = np.fromiter((row.get(fid, -1) for fid in feature_ids), dtype=np.int64, count=len(feature_ids))
    if len(index) and index.min() < 0:
        missing = feature_ids[int(np.argmin(index))]
        raise ValueError(f"feature of example {missing!r}, which is not among the examples given")
    return index


def _add_probabilities(entries: list[dict]) -> None:
    if not entries:
        return
    top = max(e["score"] for e in entries)
    weights = [math.exp(e["score"] - top) for e in entries]
    total = sum(weights)
    for e, w in zip(entries, weights):
        e["probability"] = w / total


def reference_postprocess(examples, features, start_logits, end_logits, n_best_size=20, max_answer_length=30,
                          version_2_with_negative=False, null_score_diff_threshold=0.0) -> dict[str, str]:
    """The plain double loop, kept as the specification that `postprocess` is tested against."""
    by_example: dict[str, list[int]] = {}
    for i, eid in enumerate(features["example_id"]):
        by_example.setdefault(eid, []).append(i)
    out = {}
    for ex in examples:
        best, null = None, None
        for fi in by_example.get(ex["id"], []):
            sl, el = start_logits[fi], end_logits[fi]
            om = features[fi]["offset_mapping"]
            cls = features[fi]["cls_index"]
            fnull = sl[cls] + el[cls]
            null = fnull if null is None or fnull < null else null
            s_idx = np.argsort(-sl, kind="stable")[:n_best_size]
            e_idx = np.argsort(-el, kind="stable")[:n_best_size]
            for s in s_idx:
                for e in e_idx:
                    if s >= len(om) or e >= len(om) or om[s][0] < 0 or om[e][0] < 0:
                        continue
                    if not (np.isfinite(sl[s]) and np.isfinite(el[e])):
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    score = sl[s] + el[e]
                    if best is None or score > best[0]:
                        best = (score, ex["context"][om[s][0] : om[e][1]])
        text = best[1] if best else ""
        if version_2_with_negative:
            best_score = best[0] if best else 0.0
            text = "" if null - best_score > null_score_diff_threshold else text
        out[ex["id"]] = text
    return out
