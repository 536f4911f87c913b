"""`qa-pipeline answer`: one question about one context, answered by a trained model."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def run(args) -> int:
    from transformers.utils import logging as hf_logging

    from qa_lib.answer import answer

    context = args.context if args.context is not None else read_context(args.context_file)
    # One model load for one answer: its "Loading weights" bar is only noise before the JSON.
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        result = answer(args.model, args.question, context, top_k=args.top_k,
                        max_answer_len=args.max_answer_len, handle_impossible_answer=args.handle_impossible_answer,
                        max_length=args.max_length, doc_stride=args.doc_stride)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    items = result if isinstance(result, list) else [result]
    print(json.dumps([a.to_dict() for a in items] if args.top_k > 1 else items[0].to_dict(), ensure_ascii=False))
    return 0


def read_context(name: str) -> str:
    """A context from a file or stdin, checked as UTF-8 like every data file (no bytes echoed)."""
    from qa_lib.errors import DataError
    from qa_lib.text_files import read_utf8

    if name == "-":
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError("stdin", [f"not UTF-8 (byte offset {exc.start})"]) from None
    path = Path(name).expanduser()
    if not path.is_file():
        raise DataError(name, ["file not found"])
    return read_utf8(path)
