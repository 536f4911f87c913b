"""Data sources → examples.

Every source becomes one `datasets.Dataset` with the SQuAD columns
`id, title, context, question, answers{text: [str], answer_start: [int]}`:

- official nested SQuAD JSON (v1.1 or v2.0),
- flat JSONL / CSV / Parquet files, with an optional column mapping,
- a dataset folder written by `Dataset.save_to_disk`, or a loading-script/data folder,
- a Hub dataset name (`squad`, `squad_v2`, ...) through `datasets.load_dataset`,
- `s3://bucket/key` URIs (downloaded first through `qa_lib.s3`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import datasets

from qa_lib.config import SQUAD_COLUMNS as COLUMNS, DataSource
from qa_lib.errors import DataError, first_line, shown_id
from qa_lib.progress import datasets_bars_off
from qa_lib.sources import check_source_exists, check_whole_file
from qa_lib.text_files import (COMPRESSIONS, FLAT_READERS, check_csv, check_file_type, check_json_lines, json_type,
                               read_utf8, unpacked)

_log = logging.getLogger(__name__)


FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {
            "text": datasets.List(datasets.Value("string")),
            "answer_start": datasets.List(datasets.Value("int32")),
        },
    }
)


def load_examples(source: DataSource | str, default_split: str = "train",
                  answers_required: bool = True) -> datasets.Dataset:
    """Load a source into the SQuAD columns. Raises `DataError` naming the source on failure.
    Without `answers_required` (questions to answer, not to train or score on) a source with no
    answer columns gets empty answers, and one with no id column its row numbers (from 0) as ids."""
    if isinstance(source, str):
        source = DataSource(path=source)
    path = source.path
    if path.startswith("s3://"):
        from qa_lib.s3 import download_source

        check_whole_file(source)  # an object is one file: refused before it is downloaded
        local = download_source(path)
    else:
        local = source.local_path
        if local.is_file():
            check_whole_file(source)
    if local.is_file():
        raw = _load_file(local)
    elif local.is_dir():
        raw = _load_folder(local, source.split or default_split, source.subset)
    else:
        check_source_exists(source)
        raw = _load_hub(path, source.split or default_split, source.subset)
    ds = _normalize(raw, source.columns, path, answers_required)
    if source.limit is not None:
        ds = ds.select(range(min(source.limit, len(ds))))
    return ds


def save_dataset(dataset: datasets.Dataset, folder: Path) -> None:
    """Write `dataset` as Arrow into `folder` (a store entry being written), without datasets' "Saving
    the dataset" bars: a second's copy that printed three bars per stage between the ones worth watching."""
    with datasets_bars_off():
        dataset.save_to_disk(str(folder))


def keep_examples(storage, stage: str, key: str, examples: datasets.Dataset) -> None:
    """Write `examples` as the store entry `stage/key`, in the one layout every reader of it expects
    (its `examples` folder): the load tasks' and the command line's check before Prefect."""
    with storage.writing(stage, key) as tmp:
        save_dataset(examples, tmp / "examples")


def load_questions(source: DataSource | str, columns: dict[str, str] | None = None) -> datasets.Dataset:
    """Questions to answer from any data source the pipeline reads (SQuAD JSON, JSONL, CSV, Parquet,
    a folder, s3://...), with or without answers: ids must be unique (a file without them is keyed
    by row number, from 0) and no question or context empty; answers, where the file has them, are
    neither needed nor checked. `columns` (with a path) maps our column names to the file's, as a
    `DataSource`'s `columns` setting does."""
    from qa_lib.validate import validate_questions

    if not isinstance(source, DataSource):
        source = DataSource(path=source, columns=columns or {})
    examples = load_examples(source, default_split="validation", answers_required=False)
    validate_questions(examples, source.path)
    return examples


def _load_file(path: Path) -> datasets.Dataset:
    check_file_type(path, str(path))
    suffix = path.suffix.lower()
    if suffix in COMPRESSIONS:
        return _load_compressed(path)
    if suffix == ".json":
        squad = _read_squad_json(path)
        if squad is not None:
            return squad
    if suffix in (".json", ".jsonl"):
        check_json_lines(path, read_utf8(path))
    elif suffix == ".csv":
        check_csv(path, read_utf8(path))
    try:
        kwargs = {"features": _csv_as_text(path)} if suffix == ".csv" else {}
        return _load_in_memory(FLAT_READERS[suffix], data_files=str(path), split="train", **kwargs)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a data problem to report
        raise DataError(str(path), [f"cannot read {suffix} file: {_reader_error(exc)}"]) from None


def _load_compressed(path: Path) -> datasets.Dataset:
    """A compressed file, read as the file inside (every reader and check as for the plain file)."""
    with unpacked(path) as plain:
        return _load_file(plain)


def _csv_as_text(path: Path) -> datasets.Features:
    """Every column of a CSV file as text. Left to pandas' inference, a column of answers that are all
    numbers (years, counts) became numbers, and floats once an unanswerable row left a cell empty:
    "1990" came back as "1990.0", which its context does not contain. The names are pandas' own
    (an unnamed index column is "Unnamed: 0")."""
    import pandas as pd

    names = pd.read_csv(path, nrows=0, encoding="utf-8").columns
    return datasets.Features({name: datasets.Value("string") for name in names})


def _load_in_memory(path: str, **kwargs) -> datasets.Dataset | datasets.DatasetDict:
    """`datasets.load_dataset` for local files, without the HF cache: the builder's Arrow copy goes
    to a temporary folder and the result is kept in memory. Otherwise every file read leaves a copy
    in HF_HOME (a pod's small disk fills with old data), and a read-only HF_HOME, usual in hardened
    containers, failed the run with an error that blamed the data file."""
    import tempfile

    # Bars off too: "Generating train split" is the builder's name for reading any file, an eval set's as well.
    with tempfile.TemporaryDirectory(prefix="qa-load-") as cache, _readers_quiet(), datasets_bars_off():
        return datasets.load_dataset(path, cache_dir=cache, keep_in_memory=True, **kwargs)


@contextlib.contextmanager
def _readers_quiet():
    """datasets' readers log their failures as errors of their own ("Failed to read schema from ...
    with error ...") before raising, and the error's text may quote the file: the caller reports the
    failure once, as a `DataError` that names the file and says what went wrong without its bytes."""
    library = logging.getLogger("datasets")
    level = library.level
    library.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        library.setLevel(level)


def _read_squad_json(path: Path) -> datasets.Dataset | None:
    """Flatten official nested SQuAD JSON, or read a list of flat records (top-level, or under
    'data'); None if the file is JSON but in neither shape (then it is read as JSON lines)."""
    text = read_utf8(path)
    if not text.strip():
        raise DataError(str(path), ["empty file"])
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("{") and "\n{" in text.strip():
            return None  # JSON lines with a .json suffix
        raise DataError(str(path), [f"corrupt or truncated JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]) from None
    if isinstance(doc, dict) and "data" in doc and not isinstance(doc["data"], list):
        # Read on as flat records, the file was "one record with a 'data' column", then called a folder.
        raise DataError(str(path), [f"'data' holds a JSON {json_type(doc['data'])}; official SQuAD JSON has a list "
                                    "of articles there (or flat records: a list of objects)"])
    if isinstance(doc, list):
        # One JSON array of records (`json.dump(rows)`, pandas' `to_json(orient="records")`).
        if not doc:
            raise DataError(str(path), ["empty file: an empty list of records"])
        if (bad := next((i for i, r in enumerate(doc) if not isinstance(r, dict)), None)) is not None:
            raise DataError(str(path), [f"record {bad}: a JSON {json_type(doc[bad])}, not an object (a list of "
                                        "records holds one object per question)"])
        return _records(path, doc, "the records")
    if not (isinstance(doc, dict) and isinstance(doc.get("data"), list)):
        return None
    if doc["data"] and all(isinstance(r, dict) and "paragraphs" not in r and "question" in r for r in doc["data"]):
        # Flat records under "data" (what `Dataset.to_json(..., lines=False)`-style exports write).
        return _records(path, doc["data"], "the records under 'data'")
    rows: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    problems, flagged = [], []
    for a, article in enumerate(doc["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            problems.append(f"data[{a}]: an article needs a 'paragraphs' list")
            continue
        title = article.get("title", "")
        for p, para in enumerate(article["paragraphs"]):
            if not isinstance(para, dict) or not isinstance(para.get("context"), str) \
                    or not isinstance(para.get("qas"), list):
                problems.append(f"data[{a}].paragraphs[{p}]: needs a 'context' string and a 'qas' list")
                continue
            for q, qa in enumerate(para["qas"]):
                if not isinstance(qa, dict):
                    problems.append(f"data[{a}].paragraphs[{p}].qas[{q}]: not an object")
                    continue
                where = shown_id(qa["id"]) if _is_id(qa.get("id")) else f"data[{a}].paragraphs[{p}].qas[{q}]"
                if "id" not in qa or "question" not in qa:
                    problems.append(f"{where}: missing 'id' or 'question'")
                    continue
                # str() would make a null id the id "None", and a question of digits would pass as text.
                if not _is_id(qa["id"]) or not isinstance(qa["question"], str | None):
                    problems.append(f"data[{a}].paragraphs[{p}].qas[{q}]: 'id' must be a string or an integer "
                                    "and 'question' a string")
                    continue
                # The official v2.0 script, like datasets' squad_v2, decides by `answers` alone, so the
                # pipeline's scores match its own; a flag that says otherwise is only reported.
                answers = qa.get("answers", [])
                if qa.get("is_impossible") and answers:
                    flagged.append(str(where))
                try:
                    texts = [_text(x["text"]) for x in answers]
                    starts = [_start(x["answer_start"]) for x in answers]
                except (KeyError, TypeError, ValueError):
                    problems.append(f"{where}: each answer needs a 'text' string and an integer 'answer_start'")
                    continue
                rows["id"].append(str(qa["id"]))
                rows["title"].append(title)
                rows["context"].append(para["context"])
                rows["question"].append(qa["question"])
                rows["answers"].append({"text": texts, "answer_start": starts})
    if problems:
        raise DataError(str(path), problems)
    if flagged:
        _log.warning("%s: %d question(s) marked is_impossible have answers (the first: %s); they are read as "
                     "answerable, as the official v2.0 script scores them", path, len(flagged), flagged[0])
    return datasets.Dataset.from_dict(rows, features=FEATURES)


def _records(path: Path, records: list[dict], what: str) -> datasets.Dataset:
    try:
        return datasets.Dataset.from_list(records)
    except Exception as exc:  # noqa: BLE001 - mixed record shapes
        raise DataError(str(path), [f"cannot read {what}: {_reader_error(exc)}"]) from None


def _load_folder(path: Path, split: str, subset: str | None = None) -> datasets.Dataset:
    saved = (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
    if saved and subset is not None:
        raise DataError(str(path), [f"subset {subset!r} given for a save_to_disk folder, which has no subsets"])
    try:
        if saved:
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = _load_in_memory(str(path), name=subset, split=split)
    except Exception as exc:  # noqa: BLE001
        raise DataError(str(path), [f"cannot load dataset folder: {_missing_subset_hint(first_line(exc))}"]) from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(str(path), [f"no split {split!r}; available: {sorted(loaded)}"])
        loaded = loaded[split]
    return loaded


# Each Hub dataset's commit, as `hub_reach.remember` keeps it: named for the key and again to load it.
_revisions: dict[tuple[str, str], tuple[float, str]] = {}


def hub_dataset_ref(path: str) -> tuple[str, str | None]:
    """The name and the commit of the Hub's dataset `path` (`name`, or `name@revision` for a branch,
    tag or commit rather than the default branch's head). The commit is the one it is at now, which
    both keys the data stage and is what `load_examples` loads, so a dataset updated on the Hub is
    loaded again rather than served from the stage built from the old commit. Without the Hub
    (offline, the cache's copy is read), or when the Hub does not say, the revision named, if any
    (the loader then reports what is wrong)."""
    name, _, revision = path.partition("@")
    return name, _hub_dataset_commit(path, name, revision)


def _hub_dataset_commit(path: str, name: str, revision: str) -> str | None:
    from huggingface_hub import HfApi

    from qa_lib.hub_reach import recalled, remember, why_hub_unreachable

    if datasets.config.HF_HUB_OFFLINE or why_hub_unreachable() is not None:
        return revision or None
    if (known := recalled(_revisions, path)) is not None:
        return known
    try:
        sha = HfApi().dataset_info(name, revision=revision or None).sha
    except Exception:  # noqa: BLE001 - unknown, gated or failing: load_dataset's own message names it
        return revision or None
    remember(_revisions, path, sha)
    return sha


def _load_hub(path: str, split: str, subset: str | None = None) -> datasets.Dataset:
    try:
        name, revision = hub_dataset_ref(path)
        return datasets.load_dataset(name, subset, split=split, revision=revision)
    except Exception as exc:  # noqa: BLE001
        raise DataError(path, [f"cannot load Hub dataset (offline or unknown name?): "
                               f"{_missing_subset_hint(first_line(exc))}"]) from None


def _missing_subset_hint(message: str) -> str:
    # datasets says "Config name is missing" and lists them: say which key of ours names one.
    return message + " (name one with the source's `subset`)" if "Config name is missing" in message else message


def _normalize(ds: datasets.Dataset, mapping: dict[str, str], source: str,
               answers_required: bool = True) -> datasets.Dataset:
    """Rename mapped columns, build `answers` from flat columns, and check what is missing. `mapping`
    is a `DataSource`'s `columns`, whose names it has checked already."""
    renames = {src: dst for dst, src in mapping.items() if src != dst}
    absent = [src for src in renames if src not in ds.column_names]
    if absent:
        raise DataError(source, [f"mapped column(s) not in the data: {absent}; columns are {ds.column_names}"])
    ds = ds.rename_columns(renames) if renames else ds
    if "id" not in ds.column_names and not answers_required:
        # A sheet of questions and contexts to answer often has no ids: the row is the id, as the
        # answers' order would be in a list.
        ds = ds.add_column("id", [str(i) for i in range(len(ds))])
    cols = set(ds.column_names)
    missing = [c for c in ("id", "context", "question") if c not in cols]
    if "answers" not in cols and not {"answer_text", "answer_start"} <= cols and answers_required:
        missing.append("answers (or answer_text + answer_start)")
    if missing:
        if "data" in cols and "context" not in cols:  # a folder of official SQuAD files, read as flat records
            raise DataError(source, ["holds official SQuAD JSON (a 'data' list of articles), which is read from a "
                                     "file, not a folder: point the path at the .json file itself"])
        name = missing[0].split()[0]
        raise DataError(source, [f"missing column(s): {', '.join(missing)}; columns are {sorted(cols)} (name the "
                                 f"source's own: columns.{name}=<column> in a config, --column {name}=<column> on "
                                 "the command line)"])

    for column in ("context", "question"):
        _check_text_column(ds, column, source)
    if "answers" not in cols or ds.features["answers"] != FEATURES["answers"] or "title" not in cols:
        try:
            ds = ds.map(_flat_to_squad, batched=True, remove_columns=ds.column_names, features=FEATURES,
                        desc="normalizing columns", keep_in_memory=True)
        except _BadAnswers as exc:
            raise DataError(source, [str(exc)]) from None
        except (KeyError, TypeError, ValueError) as exc:  # the message may quote the data: only its kind
            raise DataError(source, [f"cannot read answers ({type(exc).__name__})"]) from None
    # In memory: datasets would otherwise write its cache files beside a save_to_disk folder's own
    # files, that is into the user's data folder, changing its fingerprint (and so every stage's key).
    with datasets_bars_off():  # a cast of a few columns, done before a bar could say anything
        return ds.select_columns(list(COLUMNS)).cast(FEATURES, keep_in_memory=True)


def _check_text_column(ds: datasets.Dataset, column: str, source: str) -> None:
    """A context or question that is not text (a number, a list) is refused, as official SQuAD JSON's
    are: cast to a string, a numeric column mapped by mistake (`--column question=qid`) trained on "7".
    A CSV's cells are all text; JSON lines give a typed column, or one of mixed values row by row."""
    feature = ds.features[column]
    if isinstance(feature, datasets.Value):
        if feature.dtype in ("string", "large_string", "null"):  # null: no value at all, said as empty later
            return
        raise DataError(source, [f"column {column!r} holds {feature.dtype} values, not text (name the source's own "
                                 f"text column: columns.{column}=<column> in a config, --column {column}=<column> on "
                                 "the command line)"])
    for row, value in enumerate(ds[column]):
        if value is not None and not isinstance(value, str):
            ex_id = ds[row]["id"]
            where = shown_id(ex_id) if _is_id(ex_id) else f"row {row}"
            raise DataError(source, [f"{where}: {column} is a JSON {json_type(value)}, not text"])


def _flat_to_squad(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    n = len(batch["id"])
    out: dict[str, list[Any]] = {
        "id": [str(x) if _is_id(x) else "" for x in batch["id"]],  # not an id: reported as empty
        "title": [str(x) if x is not None else "" for x in batch.get("title", [""] * n)],
        "context": [x if x is not None else "" for x in batch["context"]],
        "question": [x if x is not None else "" for x in batch["question"]],
        "answers": [],
    }
    if "answers" in batch:
        for ex_id, value in zip(out["id"], batch["answers"]):
            try:
                out["answers"].append(_parse_answers(value))
            except json.JSONDecodeError:
                raise _BadAnswers(f"{shown_id(ex_id)}: answers is not valid JSON") from None
            except (KeyError, TypeError, ValueError):
                raise _BadAnswers(f"{shown_id(ex_id)}: answers must be {{text: [...], answer_start: [int, ...]}} or "
                                  "a list of {text, answer_start} records") from None
    elif "answer_text" not in batch or "answer_start" not in batch:  # questions only (answers not required)
        out["answers"] = [{"text": [], "answer_start": []} for _ in range(n)]
    else:
        for ex_id, text, start in zip(out["id"], batch["answer_text"], batch["answer_start"], strict=True):
            if text is None or text == "" or start is None or (isinstance(start, float) and start != start):
                out["answers"].append({"text": [], "answer_start": []})
                continue
            try:
                out["answers"].append({"text": [str(text)], "answer_start": [_start(start)]})
            except (TypeError, ValueError):
                raise _BadAnswers(f"{shown_id(ex_id)}: answer_start is not an integer") from None
    return out


def _is_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _text(value: Any) -> str:
    """An answer's text as written, or a whole number written without quotes (a year, a count) as its
    digits. A null, a float or an object is malformed: str() of a null made "None", which was then
    reported as a 4-character answer missing from its context."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise TypeError("answer text is not a string")
    return value


def _start(value: Any) -> int:
    """A character offset as a flat file holds it: 18, "18", or 18.0 / "18.0" (what pandas writes for an
    integer column that has empty cells); 18.5 or "x" is a ValueError, not truncated."""
    if isinstance(value, bool):  # int(True) is 1: a flag where an offset belongs is malformed
        raise TypeError("answer_start is not an integer")
    if isinstance(value, str):
        value = float(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("answer_start is not an integer")
    return int(value)


class _BadAnswers(ValueError):
    """A row whose answers cannot be read, named by id (its values are not quoted)."""


def _parse_answers(value: Any) -> dict[str, list[Any]]:
    if isinstance(value, str):  # CSV cells hold JSON
        value = json.loads(value) if value.strip() else {"text": [], "answer_start": []}
    if isinstance(value, list):  # list of {"text", "answer_start"} records
        return {"text": [a["text"] for a in value], "answer_start": [_start(a["answer_start"]) for a in value]}
    if value is None:
        return {"text": [], "answer_start": []}
    return {"text": list(value["text"]), "answer_start": [_start(s) for s in value["answer_start"]]}


def _reader_error(exc: BaseException) -> str:
    """What a reader said about the file's contents: the root cause (`datasets` wraps it in "An
    error occurred while generating the dataset"), with quoted values blanked, since readers quote
    the data they choke on."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", first_line(exc))
