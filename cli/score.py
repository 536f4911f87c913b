"""`qa-pipeline score`: the official SQuAD v1.1/v2.0 evaluation scripts, as one command, for any data
file the pipeline reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from qa_lib.errors import QAPipelineError


def run(args) -> int:
    from qa_lib.metrics import is_v2_dataset, squad_v1, squad_v2

    from qa_lib.text_files import read_utf8, unpacked

    def read(path: str, local: Path | None = None):
        # Official files travel compressed too (dev-v2.0.json.gz): read as the file inside. `local`:
        # `path`'s copy already at hand (an s3:// object downloaded), so S3 is not asked again.
        try:
            with unpacked(local or _local(path)) as plain:
                return json.loads(read_utf8(plain))
        except FileNotFoundError:
            raise QAPipelineError(f"{path}: file not found") from None
        except OSError as exc:
            raise QAPipelineError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None
        except json.JSONDecodeError as exc:
            raise QAPipelineError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: "
                                  f"{exc.msg}") from None

    if args.out_file:  # before the files are read: the official script wrote nowhere after scoring
        from qa_lib.outputs import check_output

        check_output(args.out_file, "scores")
    doc, preds = _dataset(args, read), read(args.pred_file)
    na_probs = read(args.na_prob_file) if args.na_prob_file else None
    preds, na_probs = _from_records(args, preds, na_probs)
    _check_inputs(args, doc, preds, na_probs)
    v2 = args.version == "2.0" or (args.version is None and is_v2_dataset(doc))
    try:
        if v2:
            out = squad_v2(doc["data"], preds, na_probs, args.na_prob_thresh)
        else:
            if doc.get("version") != "1.1":
                print(f"Evaluation expects v-1.1, but got dataset with v-{doc.get('version')}", file=sys.stderr)
            out = squad_v1(doc["data"], preds)
    except ValueError as exc:
        where = args.na_prob_file if str(exc).startswith("null odds") else args.pred_file
        raise QAPipelineError(f"{where}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise QAPipelineError(f"{args.data_file}: not an official SQuAD file ({type(exc).__name__}: {exc})") from None
    if args.out_file:
        from qa_lib.outputs import save_output

        save_output(args.out_file, json.dumps(out))
    else:
        # The official scripts print v2.0 results indented and v1.1 results on one line.
        print(json.dumps(out, indent=2) if v2 else json.dumps(out))
    return 0


def _local(path: str) -> Path:
    """A local file's path; an `s3://` object's copy in this worker's cache (where `answer --output`
    and a run's eval data may live), or one `StorageError` naming the object."""
    if path.startswith("s3://"):
        from qa_lib.s3 import download_source

        return download_source(path)
    return Path(path).expanduser()


def _dataset(args, read) -> dict:
    """The data file as the official scripts read it: an official SQuAD JSON file as it is; any other
    data file the pipeline reads (JSONL, CSV, Parquet, flat JSON records, a dataset folder, a Hub
    dataset) through `load_examples`, as one article of its examples, v2.0 when a question has no
    answer. An `s3://` object is either, downloaded once into this worker's cache."""
    from qa_lib.text_files import COMPRESSIONS, check_file_type

    from cli.answer import data_source, source_options_given

    source = data_source(args.data_file, args, "score")
    named = Path(args.data_file).expanduser()
    if args.data_file.startswith("s3://") or named.is_file():  # an object is a file too: said before S3 is asked
        check_file_type(named, args.data_file)
    path = _local(args.data_file)
    plain = path.with_suffix("") if path.suffix in COMPRESSIONS else path
    if plain.suffix == ".json" or (not path.exists() and plain.suffix in (".jsonl", ".csv", ".parquet")):
        doc = read(args.data_file, path)
        articles = doc.get("data") if isinstance(doc, dict) else None
        official = not isinstance(doc, list) and not (
            isinstance(articles, list) and articles and isinstance(articles[0], dict) and "paragraphs" not in articles[0])
        if official:
            if option := source_options_given(args):
                raise QAPipelineError(f"score: {option} is for other data files and folders; {args.data_file} is "
                                      "official SQuAD JSON")
            return doc
    # Only here: datasets and the loaders take a second and a half to import, the official path 0.4 s.
    from qa_lib.data import load_examples
    from qa_lib.metrics import examples_as_dataset
    from qa_lib.progress import datasets_bars_off

    with datasets_bars_off():  # the scores are the output: the file's casting bars would only bury them
        examples = load_examples(source, default_split="validation")
    v2 = any(not answers["text"] for answers in examples["answers"])
    return {"version": "2.0" if v2 else "1.1", "data": examples_as_dataset(examples)}


def _from_records(args, preds, na_probs):
    """Predictions as `evaluate`'s `squad` / `squad_v2` metrics take them (a JSON list of
    {"id", "prediction_text"} records, the tutorial's `formatted_predictions`) as the official
    scripts' {id: text}, and their "no_answer_probability", if every record has one and no null-odds
    file is given, as the null odds (what the squad_v2 metric scores them as, threshold 1.0 by default).
    Any other shape is left as it is, for the checks to name."""
    if not (isinstance(preds, list) and preds and all(
            isinstance(r, dict) and "id" in r and "prediction_text" in r for r in preds)):
        return preds, na_probs
    ids = [str(r["id"]) for r in preds]
    seen: set[str] = set()
    for i in ids:  # one pass: a count per id was quadratic in the file's length
        if i in seen:
            raise QAPipelineError(f"{args.pred_file}: id {i!r} has more than one record")
        seen.add(i)
    if na_probs is None and all("no_answer_probability" in r for r in preds):
        na_probs = {i: r["no_answer_probability"] for i, r in zip(ids, preds)}
    return {i: r["prediction_text"] for i, r in zip(ids, preds)}, na_probs


def _check_inputs(args, doc, preds, na_probs) -> None:
    if not (isinstance(doc, dict) and isinstance(doc.get("data"), list)):
        raise QAPipelineError(f"{args.data_file}: not an official SQuAD file (no top-level 'data' list)")
    if problem := _mapping_problem(preds, lambda v: isinstance(v, str)):
        raise QAPipelineError(f"{args.pred_file}: predictions must be a JSON object of question id -> answer text; "
                              f"{problem}")
    if na_probs is not None and (problem := _mapping_problem(
            na_probs, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))):
        raise QAPipelineError(f"{args.na_prob_file}: null odds must be a JSON object of question id -> number; {problem}")


def _mapping_problem(doc, fits) -> str | None:
    """What keeps `doc` from being a JSON object of id -> a value that `fits`: its own type, or the first
    id whose value does not fit (the id only: a value may be anything, including data not to print)."""
    from qa_lib.text_files import json_type

    if not isinstance(doc, dict):
        return f"it holds a JSON {json_type(doc)}"
    bad = next((k for k, v in doc.items() if not fits(v)), None)
    return None if bad is None else f"the value for {bad!r} is a JSON {json_type(doc[bad])}"
