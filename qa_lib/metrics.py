"""The official SQuAD v1.1 and v2.0 evaluation rules, line for line.

`squad_v1(dataset, predictions)` and `squad_v2(dataset, predictions, na_probs)` take the `data`
list of an official SQuAD JSON file and give the same numbers, in the same order of summation,
as `evaluate-v1.1.py` and `evaluate-v2.0.py`. `squad_v1_from_examples` / `squad_v2_from_examples`
take our flat examples instead (one article, same rules).
"""

from __future__ import annotations

import collections
import re
import string
import sys
from typing import Any, Iterable

# --------------------------------------------------------------------------- v1.1


def _normalize_v1(s: str) -> str:
    s = s.lower()
    exclude = set(string.punctuation)
    s = "".join(ch for ch in s if ch not in exclude)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _f1_v1(prediction: str, ground_truth: str) -> float:
    prediction_tokens = _normalize_v1(prediction).split()
    ground_truth_tokens = _normalize_v1(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def _em_v1(prediction: str, ground_truth: str) -> bool:
    return _normalize_v1(prediction) == _normalize_v1(ground_truth)


def squad_v1(dataset: list[dict[str, Any]], predictions: dict[str, str]) -> dict[str, float]:
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    print(f"Unanswered question {qa['id']} will receive score 0.", file=sys.stderr)
                    continue
                ground_truths = [x["text"] for x in qa["answers"]]
                prediction = predictions[qa["id"]]
                exact_match += max(_em_v1(prediction, gt) for gt in ground_truths)
                f1 += max(_f1_v1(prediction, gt) for gt in ground_truths)
    exact_match = 100.0 * exact_match / total
    f1 = 100.0 * f1 / total
    return {"exact_match": exact_match, "f1": f1}


# --------------------------------------------------------------------------- v2.0

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def _normalize_v2(s: str) -> str:
    s = s.lower()
    exclude = set(string.punctuation)
    s = "".join(ch for ch in s if ch not in exclude)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _tokens_v2(s: str) -> list[str]:
    if not s:
        return []
    return _normalize_v2(s).split()


def _exact_v2(a_gold: str, a_pred: str) -> int:
    return int(_normalize_v2(a_gold) == _normalize_v2(a_pred))


def _f1_v2(a_gold: str, a_pred: str) -> float:
    gold_toks = _tokens_v2(a_gold)
    pred_toks = _tokens_v2(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def _qas(dataset: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for article in dataset:
        for p in article["paragraphs"]:
            yield from p["qas"]


def _raw_scores(dataset, preds):
    exact_scores, f1_scores = {}, {}
    for qa in _qas(dataset):
        qid = qa["id"]
        gold_answers = [a["text"] for a in qa["answers"] if _normalize_v2(a["text"])]
        if not gold_answers:
            gold_answers = [""]
        a_pred = preds[qid]  # squad_v2 checked that every question has one
        exact_scores[qid] = max(_exact_v2(a, a_pred) for a in gold_answers)
        f1_scores[qid] = max(_f1_v2(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores


def _apply_threshold(scores, na_probs, has_ans, thresh):
    new_scores = {}
    for qid, s in scores.items():
        if na_probs[qid] > thresh:
            new_scores[qid] = float(not has_ans[qid])
        else:
            new_scores[qid] = s
    return new_scores


def _eval_dict(exact_scores, f1_scores, qid_list=None):
    if not qid_list:
        total = len(exact_scores)
        return collections.OrderedDict([
            ("exact", 100.0 * sum(exact_scores.values()) / total),
            ("f1", 100.0 * sum(f1_scores.values()) / total),
            ("total", total),
        ])
    total = len(qid_list)
    return collections.OrderedDict([
        ("exact", 100.0 * sum(exact_scores[k] for k in qid_list) / total),
        ("f1", 100.0 * sum(f1_scores[k] for k in qid_list) / total),
        ("total", total),
    ])


def _best_thresh(preds, scores, na_probs, has_ans):
    num_no_ans = sum(1 for k in has_ans if not has_ans[k])
    cur_score = num_no_ans
    best_score = cur_score
    best_thresh = 0.0
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for qid in qid_list:
        if qid not in scores:
            continue
        if has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def squad_v2(dataset: list[dict[str, Any]], preds: dict[str, str], na_probs: dict[str, float] | None = None,
             na_prob_thresh: float = 1.0) -> dict[str, Any]:
    """`evaluate-v2.0.py`'s output dict; best_* entries only when `na_probs` is given."""
    have_na = na_probs is not None
    if na_probs is None:
        na_probs = {k: 0.0 for k in preds}
    has_ans = {qa["id"]: bool(qa["answers"]) for qa in _qas(dataset)}
    missing_na = [k for k in preds if k in has_ans and k not in na_probs]
    if missing_na:
        raise ValueError(f"null odds missing for {len(missing_na)} question(s), e.g. {missing_na[0]}")
    has_ans_qids = [k for k, v in has_ans.items() if v]
    no_ans_qids = [k for k, v in has_ans.items() if not v]
    # The official script prints a line per missing id, then fails with a KeyError: it cannot score a
    # partial file either. Said once, before scoring.
    if missing := [k for k in has_ans if k not in preds]:
        raise ValueError(f"no prediction for {len(missing)} of {len(has_ans)} question(s), e.g. {missing[0]}; "
                         "SQuAD v2.0 scoring needs one for every question")
    exact_raw, f1_raw = _raw_scores(dataset, preds)
    exact_thresh = _apply_threshold(exact_raw, na_probs, has_ans, na_prob_thresh)
    f1_thresh = _apply_threshold(f1_raw, na_probs, has_ans, na_prob_thresh)
    out = _eval_dict(exact_thresh, f1_thresh)
    if has_ans_qids:
        for k, v in _eval_dict(exact_thresh, f1_thresh, has_ans_qids).items():
            out[f"HasAns_{k}"] = v
    if no_ans_qids:
        for k, v in _eval_dict(exact_thresh, f1_thresh, no_ans_qids).items():
            out[f"NoAns_{k}"] = v
    if have_na:
        out["best_exact"], out["best_exact_thresh"] = _best_thresh(preds, exact_raw, na_probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = _best_thresh(preds, f1_raw, na_probs, has_ans)
    return out


# --------------------------------------------------------------------------- examples


def examples_as_dataset(examples) -> list[dict[str, Any]]:
    """Our flat examples as one official-format article, in example order."""
    qas = [
        {"id": ex["id"], "answers": [{"text": t, "answer_start": s} for t, s in
                                     zip(ex["answers"]["text"], ex["answers"]["answer_start"])]}
        for ex in examples
    ]
    return [{"title": "", "paragraphs": [{"context": "", "qas": qas}]}]


def score(examples, predictions: dict[str, str], null_odds: dict[str, float] | None = None,
          version_2_with_negative: bool = False) -> dict[str, Any]:
    dataset = examples_as_dataset(examples)
    if version_2_with_negative:
        return dict(squad_v2(dataset, predictions, null_odds))
    return squad_v1(dataset, predictions)


def is_v2_dataset(doc: dict[str, Any]) -> bool:
    if str(doc.get("version", "")).lstrip("v").startswith("2"):
        return True
    return any("is_impossible" in qa for qa in _qas(doc.get("data", [])))
