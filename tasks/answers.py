"""Save the answers of an answer_qa run where the caller wants them."""

from __future__ import annotations

import json

from prefect import task

from qa_lib.outputs import save_output
from qa_lib.store import open_store
from tasks.policy import RETRY, retry_unless_deterministic
from tasks.stage import fetch


@task(name="save-answers", retry_condition_fn=retry_unless_deterministic, **RETRY)
def save_answers(store: str, predictions: dict, output: str) -> dict:
    """The post-processed answers (the official predictions format: id → answer text, "" for no
    answer) copied whole to `output`, a file or an `s3://` object; a retry rewrites it whole."""
    text = (fetch(open_store(store), predictions) / "predictions.json").read_text(encoding="utf-8")
    save_output(output, text)
    answers = json.loads(text)
    return {"output": output, "answers": len(answers), "no_answer": sum(1 for a in answers.values() if not a),
            "sample": dict(list(answers.items())[:10])}
