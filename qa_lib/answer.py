"""Question(s) + context(s) → answers, for code and the CLI.

Takes the place of the `question-answering` pipeline that transformers 5 removed. Scores are
probabilities as that pipeline gave them: softmax over each window's start logits times softmax
over its end logits (context tokens and CLS only); a window-spanning context is handled with
the same sliding windows as training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import datasets
import numpy as np

from qa_lib.answer_inputs import BATCH, PRECISION, STRIDE, WINDOW, check_run_values, checked_inputs
from qa_lib.batching import Padding
from qa_lib.config import MAX_ANSWER_LEN
from qa_lib.features import build_eval_features
from qa_lib.modeling import load_qa_model, load_tokenizer, resolve_model
from qa_lib.postprocess import RaggedOffsets, candidate_spans
from qa_lib.predict import predict_logits, resolve_precision
from qa_lib.progress import datasets_bars_off, progress_enabled
from qa_lib.validate import check_windows_fit


@dataclass
class Answer:
    answer: str
    score: float
    start: int
    end: int

    def to_dict(self) -> dict:
        return asdict(self)


# Up to this many batches of windows (a few seconds on a CPU) are predicted without a progress bar.
_QUIET_BATCHES = 8


class QuestionAnswerer:
    """Loads a model folder once; call it for as many questions as you like. `precision`: auto, bf16,
    fp16 or fp32, as the config's (auto: bf16 or fp16 on a GPU, fp32 on the CPU)."""

    def __init__(self, model: str, max_length: int = WINDOW, doc_stride: int = STRIDE, batch_size: int = BATCH,
                 precision: str = PRECISION):
        self.precision = check_run_options(batch_size, precision, max_length, doc_stride)
        self.model_dir = resolve_model(model)
        # A window past the position embeddings fails deep in the model's forward, not here.
        check_windows_fit(self.model_dir, {"max_length": max_length})
        self.tokenizer = load_tokenizer(self.model_dir)
        self.model = load_qa_model(self.model_dir)
        self.padding = Padding.of(self.tokenizer).for_model(self.model, max_length)
        self.max_length = max_length
        self.doc_stride = doc_stride
        self.batch_size = batch_size

    def __call__(self, question: str | list[str], context: str | list[str], top_k: int = 1,
                 max_answer_len: int = MAX_ANSWER_LEN, handle_impossible_answer: bool = False,
                 progress: bool | None = False):
        """`progress`: the windows' and the batches' progress bars, for a file of questions; None: the
        batches' bar only when the windows fill more than a few batches (a long context)."""
        single = isinstance(question, str)
        questions, contexts = checked_inputs(question, context, top_k, max_answer_len)
        if not questions:
            return []
        examples = datasets.Dataset.from_dict({
            "id": [str(i) for i in range(len(questions))],
            "question": questions,
            "context": contexts,
        })
        # A call usually answers a handful of questions: the map's progress bar would only be noise.
        with datasets_bars_off(not progress):
            features = build_eval_features(examples, self.tokenizer, self.max_length, self.doc_stride)
        if progress is None:  # a book-length context is minutes of silent work on a CPU otherwise
            progress = len(features) > _QUIET_BATCHES * self.batch_size and progress_enabled()
        start, end = predict_logits(self.model, features, self.batch_size, self.precision, progress=progress,
                                    padding=self.padding)
        results = self._decode(features, contexts, start, end, top_k, max_answer_len, handle_impossible_answer)
        if single:
            return results[0][0] if top_k == 1 else results[0]
        return [r[0] for r in results] if top_k == 1 else results

    @staticmethod
    def _decode(features, contexts, start, end, top_k, max_answer_len, handle_impossible):
        cls = np.asarray(features["cls_index"], dtype=np.int64)
        ex_of = np.asarray([int(e) for e in features["example_id"]], dtype=np.int64)
        ragged = RaggedOffsets.of(features)
        offsets = ragged.dense(start.shape[1])
        # Log-softmax per window over context tokens and CLS, as the old pipeline did.
        allowed = offsets[:, :, 0] >= 0
        allowed[np.arange(len(cls)), cls] = True
        log_s = _log_softmax(np.where(allowed, start, -np.inf))
        log_e = _log_softmax(np.where(allowed, end, -np.inf))
        k = max(top_k, 20)
        feat, s_tok, e_tok, scores = candidate_spans(log_s, log_e, ragged, k, max_answer_len)
        rows = np.arange(len(cls))
        null = log_s[rows, cls] + log_e[rows, cls]
        # Candidates grouped by example, best first within each (a stable sort keeps the windows'
        # order among ties): one sort for the whole call, not a scan of every candidate per example.
        cand_ex = ex_of[feat]
        order = np.lexsort((-scores, cand_ex))
        cuts = np.searchsorted(cand_ex[order], np.arange(len(contexts) + 1))
        null_of = np.full(len(contexts), np.inf)
        np.minimum.at(null_of, ex_of, null)
        out: list[list[Answer]] = []
        for i, ctx in enumerate(contexts):
            mine = order[cuts[i]:cuts[i + 1]]
            answers, seen = [], set()
            for j in mine:
                a, b = int(offsets[feat[j], s_tok[j], 0]), int(offsets[feat[j], e_tok[j], 1])
                if (a, b) in seen:  # the same span seen from two overlapping windows
                    continue
                seen.add((a, b))
                answers.append(Answer(ctx[a:b], float(np.exp(scores[j])), a, b))
                if len(answers) == top_k:
                    break
            if handle_impossible:
                min_null = float(np.exp(null_of[i]))
                answers.append(Answer("", min_null, 0, 0))
                answers.sort(key=lambda x: x.score, reverse=True)
                answers = answers[:top_k]
            out.append(answers or [Answer("", 0.0, 0, 0)])
        return out


def check_run_options(batch_size: int, precision: str, max_length: int = WINDOW, doc_stride: int = STRIDE) -> str:
    """The precision the model will run in (`auto` resolved), or the error that the batch size,
    precision or window is: checked before a model is loaded."""
    check_run_values(batch_size, precision, max_length, doc_stride)
    return resolve_precision(precision)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=1, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))


def answer(model: str, question: str | list[str], context: str | list[str], top_k: int = 1,
           max_answer_len: int = MAX_ANSWER_LEN, handle_impossible_answer: bool = False, max_length: int = WINDOW,
           doc_stride: int = STRIDE, batch_size: int = BATCH, precision: str = PRECISION,
           progress: bool | None = False):
    """One-shot helper; keep a `QuestionAnswerer` around to answer many batches. `progress` as
    `QuestionAnswerer.__call__`'s."""
    checked_inputs(question, context, top_k, max_answer_len)  # before the model is loaded, not after
    qa = QuestionAnswerer(model, max_length=max_length, doc_stride=doc_stride, batch_size=batch_size,
                          precision=precision)
    return qa(question, context, top_k=top_k, max_answer_len=max_answer_len,
              handle_impossible_answer=handle_impossible_answer, progress=progress)


def answer_all(qa: QuestionAnswerer, examples: datasets.Dataset, top_k: int = 1,
               max_answer_len: int = MAX_ANSWER_LEN, handle_impossible_answer: bool = False,
               progress: bool = True) -> dict[str, str] | dict[str, list[dict]]:
    """Every question of `examples` (from `qa_lib.data.load_questions`) answered, by id: with `top_k` 1 the
    answer's text (the official SQuAD predictions format, which `qa-pipeline score` reads), else
    the `top_k` answers with their scores and character spans."""
    results = qa(examples["question"], examples["context"], top_k=top_k, max_answer_len=max_answer_len,
                 handle_impossible_answer=handle_impossible_answer, progress=progress)
    if top_k == 1:
        return {ex_id: a.answer for ex_id, a in zip(examples["id"], results)}
    return {ex_id: [a.to_dict() for a in answers] for ex_id, answers in zip(examples["id"], results)}
