"""Logits → answers, with array operations instead of a per-token Python loop.

For each feature the `n_best_size` highest start and end positions are taken (numpy top-k), all
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
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np


@dataclass
class Predictions:
    answers: dict[str, str]
    nbest: dict[str, list[dict]]
    null_odds: dict[str, float] | None

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


def _top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row, largest first; equal values keep index order.

    argpartition finds the k in linear time; only those k are sorted. (Values tied exactly at
    the k-th place may be chosen differently from a full stable sort; with float logits that
    needs two bit-identical logits at the cut-off.)
    """
    k = min(k, logits.shape[1])
    if k == logits.shape[1]:
        return np.argsort(-logits, axis=1, kind="stable")
    part = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    part.sort(axis=1)  # index order first, so the stable sort below breaks ties by index
    vals = np.take_along_axis(logits, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def candidate_spans(start_logits: np.ndarray, end_logits: np.ndarray, offsets: np.ndarray,
                    n_best_size: int, max_answer_length: int):
    """All valid (feature, start, end) spans with scores, flattened in loop order."""
    starts = _top_k(start_logits, n_best_size)  # (F, k)
    ends = _top_k(end_logits, n_best_size)  # (F, k)
    f = np.arange(len(starts))[:, None, None]
    s = starts[:, :, None]
    e = ends[:, None, :]
    in_context = offsets[:, :, 0] >= 0  # (F, L)
    finite_s = np.isfinite(start_logits)
    finite_e = np.isfinite(end_logits)
    valid = (
        in_context[f, s] & in_context[f, e] & finite_s[f, s] & finite_e[f, e]
        & (e >= s) & (e - s + 1 <= max_answer_length)
    )
    scores = start_logits[f, s] + end_logits[f, e]
    feat, si, ei = np.nonzero(valid)
    start_tok = starts[feat, si]
    end_tok = ends[feat, ei]
    return feat, start_tok, end_tok, scores[feat, si, ei]


def postprocess(examples: datasets.Dataset, features: datasets.Dataset, start_logits: np.ndarray,
                end_logits: np.ndarray, n_best_size: int = 20, max_answer_length: int = 30,
                version_2_with_negative: bool = False, null_score_diff_threshold: float = 0.0) -> Predictions:
    if len(features) != len(start_logits):
        raise ValueError(f"{len(features)} features but {len(start_logits)} rows of logits")
    ex_cols = examples.select_columns(["id", "context"]).to_dict()
    ex_ids, contexts = ex_cols["id"], ex_cols["context"]
    ex_index = {eid: i for i, eid in enumerate(ex_ids)}
    feat_cols = features.select_columns(["example_id", "cls_index"]).to_dict()
    offsets = offsets_array(features, start_logits.shape[1])
    feat_example = np.array([ex_index[e] for e in feat_cols["example_id"]], dtype=np.int64)

    feat, s_tok, e_tok, scores = candidate_spans(start_logits, end_logits, offsets, n_best_size, max_answer_length)
    cand_example = feat_example[feat]
    # Group by example, best score first; lexsort is stable so ties keep loop order.
    order = np.lexsort((-scores.astype(np.float64), cand_example))
    cand_example, feat, s_tok, e_tok, scores = (a[order] for a in (cand_example, feat, s_tok, e_tok, scores))
    bounds = np.searchsorted(cand_example, np.arange(len(ex_ids) + 1))
    char_start = offsets[feat, s_tok, 0]
    char_end = offsets[feat, e_tok, 1]

    # Python scalars once, for the per-example loop below.
    char_start_l, char_end_l, scores_l = char_start.tolist(), char_end.tolist(), scores.tolist()
    start_l, end_l = start_logits[feat, s_tok].tolist(), end_logits[feat, e_tok].tolist()

    null_scores = None
    if version_2_with_negative:
        cls = np.asarray(feat_cols["cls_index"], dtype=np.int64)
        rows = np.arange(len(features))
        feat_null = start_logits[rows, cls] + end_logits[rows, cls]
        null_scores = np.full(len(ex_ids), np.inf, dtype=np.float32)
        np.minimum.at(null_scores, feat_example, feat_null)

    answers: dict[str, str] = {}
    nbest: dict[str, list[dict]] = {}
    null_odds: dict[str, float] | None = {} if version_2_with_negative else None
    for i, eid in enumerate(ex_ids):
        lo, hi = bounds[i], min(bounds[i + 1], bounds[i] + n_best_size)
        ctx = contexts[i]
        entries = [
            {"text": ctx[a:b], "score": sc, "start_logit": sl, "end_logit": el, "offsets": [a, b]}
            for a, b, sc, sl, el in zip(char_start_l[lo:hi], char_end_l[lo:hi], scores_l[lo:hi],
                                        start_l[lo:hi], end_l[lo:hi])
        ]
        best = entries[0] if entries else {"text": "", "score": 0.0}
        if version_2_with_negative:
            null = float(null_scores[i])
            diff = null - best["score"]
            null_odds[eid] = diff
            answers[eid] = "" if diff > null_score_diff_threshold else best["text"]
            entries.append({"text": "", "score": null, "start_logit": None, "end_logit": None, "offsets": [0, 0]})
            entries.sort(key=lambda x: x["score"], reverse=True)
            entries = entries[:n_best_size]
        else:
            answers[eid] = best["text"]
        _add_probabilities(entries)
        nbest[eid] = entries
    return Predictions(answers=answers, nbest=nbest, null_odds=null_odds)


def _add_probabilities(entries: list[dict]) -> None:
    if not entries:
        return
    top = max(e["score"] for e in entries)
    weights = [math.exp(e["score"] - top) for e in entries]
    total = sum(weights)
    for e, w in zip(entries, weights):
        e["probability"] = w / total


def offsets_array(features: datasets.Dataset, width: int) -> np.ndarray:
    """(features, width, 2) int array of offsets, -1 where a token is not context or is padding.

    Read straight from Arrow: converting ragged offset lists to Python objects costs more than
    all of post-processing.
    """
    column = features.select_columns(["offset_mapping"]).with_format("arrow")[:]["offset_mapping"].combine_chunks()
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)
    pairs = column.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, 2)
    out = np.full((len(lengths), width, 2), -1, dtype=np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    cols = np.arange(len(pairs)) - np.repeat(starts, lengths)
    out[rows, cols] = pairs
    return out


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
