"""Examples → model features: sliding windows over long contexts.

A context longer than the window is cut into overlapping windows (`doc_stride` tokens shared by
neighbours). The question goes first unless the tokenizer pads on the left, in which case the
context goes first and is the sequence that gets truncated.

Train features carry `start_positions` / `end_positions`, pointing at the CLS token when the
answer is not wholly inside the window (or there is none). Eval features carry `example_id`,
`cls_index` and `offset_mapping`, where offsets of non-context tokens are (-1, -1) so that
post-processing can mask them with array operations. Context offsets are trimmed to the
characters that are not whitespace (`_context_offsets`), so an answer cut at them never starts or ends
with a space, whatever the tokenizer's offset convention.

Nothing is padded here: the collator pads each batch to its own longest row.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import datasets
import numpy as np

from qa_lib.errors import DataError, ModelError, shown_id

_log = logging.getLogger(__name__)


def _context_first(tokenizer) -> bool:
    return tokenizer.padding_side == "left"


# Tokenizers whose models were pretrained with segment embeddings, but from which transformers 5 dropped
# "token_type_ids" from `model_input_names` (transformers issue #48128): encoded as that list says, every
# token is segment 0 and the model loses which tokens are the question, silently. transformers 4 gave them.
_SEGMENT_TOKENIZERS = frozenset({"AlbertTokenizer", "FunnelTokenizer", "HerbertTokenizer", "RemBertTokenizer",
                                 "RoFormerTokenizer", "SplinterTokenizer", "XLNetTokenizer"})


def uses_token_types(tokenizer) -> bool:
    """Whether features carry the tokenizer's type ids (question and context segments) for the model."""
    return "token_type_ids" in tokenizer.model_input_names or any(
        cls.__name__.removesuffix("Fast") in _SEGMENT_TOKENIZERS for cls in type(tokenizer).__mro__)


def _questions(questions: list[str]) -> list[str]:
    # Many SQuAD questions start with spaces that only waste window tokens.
    return [q.lstrip() for q in questions]


def _tokenize(tokenizer, batch: dict[str, list[Any]], max_length: int, doc_stride: int):
    """Windows of every (question, context) pair, as a `BatchEncoding` with overflow rows.

    The same windows, ids, type ids and offsets as calling the tokenizer on the pairs with
    `return_overflowing_tokens=True`, but each distinct context is tokenized once: SQuAD asks
    about five questions per context, and tokenizing the contexts is most of the work.
    """
    questions = _questions(batch["question"])
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # load_tokenizer refuses these; this is for a caller that built its own
        raise ModelError(f"{type(tokenizer).__name__} is not a fast tokenizer; windows and offset mappings need one")
    from transformers import BatchEncoding

    ctx_first = _context_first(tokenizer)
    slot: dict[str, int] = {}
    ctx_slot = [slot.setdefault(c, len(slot)) for c in batch["context"]]
    with _BACKEND_LOCK, _backend_state(backend) as post_processor:
        backend.no_truncation()
        backend.no_padding()
        # Without the post-processor, a lone sequence carries no sequence-id ranges of its own
        # that would shadow the pair's when the two are put together below.
        backend.post_processor = None
        contexts = backend.encode_batch(list(slot), add_special_tokens=False)
        question_encs = backend.encode_batch(questions, add_special_tokens=False)
        backend.post_processor = post_processor
        # The tokenizer's own pair path is encode(first) + encode(second) + post_process, which
        # truncates into overlapping windows and adds the special tokens: the same steps here.
        truncation = {"strategy": "only_first" if ctx_first else "only_second", "direction": tokenizer.truncation_side}
        backend.enable_truncation(max_length, stride=doc_stride, **truncation)
        specials = post_processor.num_special_tokens_to_add(True) if post_processor is not None else 0
        encodings, sample_map, type_ids, narrowed = [], [], [], []
        context_id = 0 if ctx_first else 1
        for i, (question, c) in enumerate(zip(question_encs, ctx_slot)):
            pair = (contexts[c], question) if ctx_first else (question, contexts[c])
            # A long question leaves the context fewer tokens per window than the stride; the tokenizer
            # panics then (a Rust panic, not an Exception). Such an example's windows overlap by half
            # the room left instead, so one long question does not fail a whole run.
            room = max_length - len(question.ids) - specials
            narrow = 0 < room <= doc_stride and len(contexts[c].ids) > room
            try:
                if narrow:
                    narrowed.append(i)
                    backend.enable_truncation(max_length, stride=room // 2, **truncation)
                merged = backend.post_process(*pair, add_special_tokens=True)
            except Exception as exc:  # noqa: BLE001 - the tokenizer's only failure here: no room left
                raise DataError("features", [_no_room(batch['id'][i] if 'id' in batch else i, len(question.ids),
                                                      max_length, f" ({exc})")]) from None
            finally:
                if narrow:
                    backend.enable_truncation(max_length, stride=doc_stride, **truncation)
            windows = [merged, *merged.overflowing]
            encodings.extend(windows)
            sample_map.extend([i] * len(windows))
            type_ids.extend(_window_type_ids(windows, context_id))
    if narrowed:
        first = shown_id(batch["id"][narrowed[0]] if "id" in batch else narrowed[0])
        _log.warning("%d example(s) (the first: %s) have a question so long that fewer than doc_stride (%d) tokens of "
                     "the %d-token window are left for the context; their windows overlap by half of what is left",
                     len(narrowed), first, doc_stride, max_length)
    data = {
        "input_ids": [e.ids for e in encodings],
        "token_type_ids": type_ids,
        "attention_mask": [e.attention_mask for e in encodings],
        "offset_mapping": [e.offsets for e in encodings],
        "overflow_to_sample_mapping": sample_map,
    }
    if not uses_token_types(tokenizer):
        del data["token_type_ids"]
    return BatchEncoding(data, encoding=encodings)


def _no_room(example, question_tokens: int, max_length: int, detail: str = "") -> str:
    return (f"example {shown_id(example)}: the question is {question_tokens} tokens, which leaves no room for the "
            f"context in a {max_length}-token window{detail}; use a longer window or drop the question")


def check_questions_fit(examples: datasets.Dataset, tokenizer, max_length: int) -> None:
    """The check the window building makes on each question, on all of them at once and without
    building a window (tokenizing the questions only): a `DataError` naming the first question too
    long to leave any room for its context in a `max_length`-token window."""
    questions = _questions(examples["question"])
    lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    for i, n in enumerate(lengths):
        if n >= room:
            raise DataError("features", [_no_room(examples[i]["id"], n, max_length)])


def _window_type_ids(windows, context_id: int) -> list[list[int]]:
    """Type ids of each window, as the pair path gives them.

    The post-processor sets the first window's type ids from its template, but overflow windows
    keep the ids their tokens were encoded with, which the pair path encodes per sequence (0, 1)
    and a context encoded alone has as 0. Every window has the first one's layout around a context
    slice of its own length, so copy it.
    """
    first = windows[0]
    ids = first.type_ids
    if len(windows) == 1:
        return [ids]
    seq = first.sequence_ids
    ctx = [j for j, s in enumerate(seq) if s == context_id]
    if not ctx:
        return [w.type_ids for w in windows]
    lo, hi = ctx[0], ctx[-1] + 1
    before, inside, after = ids[:lo], ids[lo], ids[hi:]
    out = [ids]
    for w in windows[1:]:
        n_ctx = len(w.ids) - len(before) - len(after)
        out.append(before + [inside] * n_ctx + after)
    return out


# The backend tokenizer's truncation, padding and post-processor are settings on a shared object; hold them
# while a batch is tokenized, and put back what was there.
_BACKEND_LOCK = threading.Lock()


@contextlib.contextmanager
def _backend_state(backend):
    truncation, padding, post_processor = backend.truncation, backend.padding, backend.post_processor
    try:
        yield post_processor
    finally:
        backend.post_processor = post_processor
        if truncation is None:
            backend.no_truncation()
        else:
            backend.enable_truncation(**truncation)
        if padding is None:
            backend.no_padding()
        else:
            backend.enable_padding(**padding)


def _context_span(seq_ids: list[int | None], context_id: int) -> tuple[int, int]:
    """First and last token index of the context in one feature."""
    first = seq_ids.index(context_id)
    last = len(seq_ids) - 1 - seq_ids[::-1].index(context_id)
    return first, last


def _cls_index(input_ids: list[int], tokenizer) -> int:
    cls_id = tokenizer.cls_token_id
    if cls_id is not None and cls_id in input_ids:
        return input_ids.index(cls_id)
    return 0


def label_window(offsets: list[tuple[int, int]], ctx_first_tok: int, ctx_last_tok: int,
                 start_char: int, end_char: int) -> tuple[int, int] | None:
    """Token span of the answer [start_char, end_char) inside one window, or None if not inside."""
    if offsets[ctx_first_tok][0] > start_char or offsets[ctx_last_tok][1] < end_char:
        return None
    starts = np.fromiter((o[0] for o in offsets[ctx_first_tok : ctx_last_tok + 1]), dtype=np.int64)
    ends = np.fromiter((o[1] for o in offsets[ctx_first_tok : ctx_last_tok + 1]), dtype=np.int64)
    # Last token starting at or before the answer start; first token ending at or after its end.
    start_tok = ctx_first_tok + int(np.searchsorted(starts, start_char, side="right")) - 1
    end_tok = ctx_first_tok + int(np.searchsorted(ends, end_char, side="left"))
    end_tok = min(end_tok, ctx_last_tok)
    return start_tok, end_tok


def _train_batch(batch, tokenizer, max_length: int, doc_stride: int, drop_answerless: bool = False):
    enc = _tokenize(tokenizer, batch, max_length, doc_stride)
    context_id = 0 if _context_first(tokenizer) else 1
    sample_map = enc.pop("overflow_to_sample_mapping")
    offset_mapping = enc.pop("offset_mapping")
    starts, ends = [], []
    for i, offsets in enumerate(offset_mapping):
        cls = _cls_index(enc["input_ids"][i], tokenizer)
        answers = batch["answers"][sample_map[i]]
        span = None
        if answers["answer_start"]:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            # Fast path: the tokens holding the answer's first and last characters in this window.
            s_tok = enc.char_to_token(i, start_char, context_id)
            e_tok = enc.char_to_token(i, end_char - 1, context_id)
            if s_tok is not None and e_tok is not None:
                span = (s_tok, e_tok)
            else:  # an edge on whitespace or outside the window: scan the offsets
                first, last = _context_span(enc.sequence_ids(i), context_id)
                span = label_window(offsets, first, last, start_char, end_char)
        s, e = span if span is not None else (cls, cls)
        starts.append(s)
        ends.append(e)
    enc["start_positions"] = starts
    enc["end_positions"] = ends
    if drop_answerless:
        keep = [i for i, (s, e) in enumerate(zip(starts, ends)) if not (s == e == _cls_index(enc["input_ids"][i], tokenizer))]
        return {k: [v[i] for i in keep] for k, v in enc.items()}
    return enc


def _eval_batch(batch, tokenizer, max_length: int, doc_stride: int):
    enc = _tokenize(tokenizer, batch, max_length, doc_stride)
    context_id = 0 if _context_first(tokenizer) else 1
    sample_map = enc.pop("overflow_to_sample_mapping")
    enc["example_id"] = [batch["id"][j] for j in sample_map]
    enc["cls_index"] = [_cls_index(ids, tokenizer) for ids in enc["input_ids"]]
    enc["offset_mapping"] = _context_offsets(enc, sample_map, batch["context"], context_id)
    return enc


def _context_offsets(enc, sample_map: list[int], contexts: list[str], context_id: int):
    """Every window's offsets, one (length, 2) array each: context tokens' offsets trimmed to the
    characters that are not whitespace, (-1, -1) for other tokens and for context tokens with no such
    character.

    SentencePiece-style tokenizers (a Metaspace pre-tokenizer: DeBERTa-v3, XLM-R) give a word's
    token the space before it, and byte-level BPE has tokens that are only spaces or zero wide:
    an answer cut at such offsets starts with a space or is empty. Trimmed, a span's characters
    are exactly the answer's, and a token with nothing left can be neither end of an answer.

    One pass of array operations over the whole batch, handed to Arrow as arrays: offsets are the
    biggest column, and lists of lists of Python ints cost more to build than to compute.
    """
    offsets = enc["offset_mapping"]
    lengths = np.fromiter(map(len, offsets), dtype=np.int64, count=len(offsets))
    flat = np.array([o for row in offsets for o in row], dtype=np.int64).reshape(-1, 2)
    row_start = np.concatenate(([0], np.cumsum(lengths)))
    spans = np.array([_context_span(seq, context_id) if context_id in seq else (0, -1)  # a context of no tokens
                      for seq in map(enc.sequence_ids, range(len(offsets)))], dtype=np.int64).reshape(-1, 2)
    position = np.arange(len(flat)) - np.repeat(row_start[:-1], lengths)
    is_context = (position >= np.repeat(spans[:, 0], lengths)) & (position <= np.repeat(spans[:, 1], lengths))
    # Each distinct context at its own base in one character axis, one apart, so that the search
    # for a token's nearest solid (not whitespace) character never lands in a neighbour's range.
    base_of: dict[int, int] = {}
    solid_parts, next_base = [], 0
    for j in sample_map:
        if j not in base_of:
            base_of[j] = next_base
            solid_parts.append(_solid_positions(contexts[j]) + next_base)
            next_base += len(contexts[j]) + 1
    solid = np.concatenate(solid_parts) if solid_parts else np.zeros(0, dtype=np.int64)
    base = np.repeat(np.fromiter((base_of[j] for j in sample_map), dtype=np.int64, count=len(sample_map)), lengths)
    out = np.full_like(flat, -1)
    if len(solid):
        first = np.searchsorted(solid, flat[:, 0] + base, side="left")  # first solid character at or after the start
        last = np.searchsorted(solid, flat[:, 1] + base, side="left") - 1  # last one before the end
        starts = solid[np.minimum(first, len(solid) - 1)] - base
        ends = solid[np.maximum(last, 0)] + 1 - base
        keep = is_context & (first < len(solid)) & (last >= 0) & (starts < ends)
        out[keep, 0], out[keep, 1] = starts[keep], ends[keep]
    # One (length, 2) array per window: datasets writes a list of arrays to Arrow without Python ints.
    return np.split(out, row_start[1:-1])


def _solid_positions(context: str) -> np.ndarray:
    """Indices of the characters of `context` that are not whitespace."""
    if context.isascii():
        text = np.frombuffer(context.encode("ascii"), dtype=np.uint8)
        return np.flatnonzero((text != 32) & ((text < 9) | (text > 13)))
    return np.flatnonzero(~np.fromiter(map(str.isspace, context), dtype=bool, count=len(context)))


def build_train_features(examples: datasets.Dataset, tokenizer, max_length: int, doc_stride: int,
                         num_proc: int | None = None, drop_answerless: bool = False) -> datasets.Dataset:
    """Train windows with labels. `drop_answerless` (SQuAD v1 only) skips windows labelled CLS:
    a v1 model is never asked for "no answer", so they cost compute and teach nothing it uses."""
    features = examples.map(
        _train_batch,
        batched=True,
        remove_columns=examples.column_names,
        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "doc_stride": doc_stride,
                   "drop_answerless": drop_answerless},
        num_proc=num_proc,
        desc="train features",
        keep_in_memory=True,  # not as cache files beside the examples' own: those are a store entry
    )
    if len(features) == 0:
        # Said here, not as an empty dataset that the store cannot load back (an IndexError, retried).
        raise DataError("features", [
            f"no training windows: in none of the {len(examples)} examples does a {max_length}-token window "
            f"(doc_stride {doc_stride}) hold the whole answer, and windows without it are dropped (drop_answerless); "
            "raise max_length"])
    return features


def build_eval_features(examples: datasets.Dataset, tokenizer, max_length: int, doc_stride: int,
                        num_proc: int | None = None) -> datasets.Dataset:
    return examples.map(
        _eval_batch,
        batched=True,
        remove_columns=examples.column_names,
        fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "doc_stride": doc_stride},
        num_proc=num_proc,
        desc="eval features",
        keep_in_memory=True,
    )
