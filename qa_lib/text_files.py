"""Checks on a local text file before a reader sees it: encoding, JSON lines, CSV shape.

`datasets`' JSON and CSV builders report a broken file as their own internals ("An error occurred
while generating the dataset", `StopIteration`), with no line number, and a decode error's text
carries the file's bytes. These checks name the file, the line or byte offset and what is wrong,
and never quote the file's contents.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import lzma
import shutil
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from qa_lib.errors import DataError, StorageError, naming_full_disk

# `train.jsonl.gz` and the like: read as the file inside, opened with that module's `open`.
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}
# A data file's type, by its suffix: the `datasets` builder that reads it.
FLAT_READERS = {".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".json": "json"}
_FILE_TYPES = "use SQuAD .json, .jsonl, .csv or .parquet, each also as .gz, .bz2 or .xz"


def check_file_type(file: Path, name: str) -> None:
    """A file the loaders cannot read, refused by its name alone: a README or a .txt given for the
    data was found only once the run had started and Prefect had logged around it. Here, not in
    `data`, so that `score` can say it before `datasets` is imported (seconds)."""
    suffix = file.suffix.lower()
    if suffix in COMPRESSIONS:  # read as the file inside
        inner = Path(file.stem).suffix
        if inner.lower() not in FLAT_READERS:
            raise DataError(name, [f"unsupported file type {inner + file.suffix!r} ({_FILE_TYPES})"])
    elif not suffix:
        raise DataError(name, [f"no file type in the name ({_FILE_TYPES})"])
    elif suffix not in FLAT_READERS:
        raise DataError(name, [f"unsupported file type {suffix!r} ({_FILE_TYPES})"])


# Byte-order marks of encodings that are not UTF-8, named so the user knows what to convert from.
_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
         (b"\xfe\xff", "UTF-16"))


def read_utf8(path: Path) -> str:
    """The file's text; a `DataError` with the byte offset if it is not UTF-8 (a UTF-8 BOM is allowed)."""
    data = path.read_bytes()
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise DataError(str(path), [f"not UTF-8: the file starts with a {name} byte-order mark; "
                                        "save it as UTF-8"])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(str(path), [f"not UTF-8: undecodable byte at offset {exc.start} (line {line}); "
                                    "save the file as UTF-8 (Latin-1 and UTF-16 are not read)"]) from None


@contextmanager
def unpacked(path: Path) -> Iterator[Path]:
    """The plain file: `path` itself, or for a compressed one (`COMPRESSIONS`) a temporary file of its
    inner name (`dev.json.gz` -> `dev.json`), removed afterwards. A `DataError` raised while it is in
    use names `path`, not the temporary file; byte offsets and line numbers are those of the unpacked
    text, what `zcat` shows. A corrupt file is a `DataError`, a disk that cannot take the unpacked
    text a `StorageError`."""
    module = COMPRESSIONS.get(path.suffix.lower())
    if module is None:
        yield path
        return
    opener = importlib.import_module(module).open
    with tempfile.TemporaryDirectory(prefix="qa-unpack-") as folder:
        plain = Path(folder) / path.stem
        try:
            with naming_full_disk(f"{path} (unpacking into {folder})"), opener(path, "rb") as src, \
                    plain.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            if isinstance(exc, FileNotFoundError) and exc.filename == str(path):
                raise
            if isinstance(exc, OSError) and exc.errno is not None:  # the disk, not the data
                raise StorageError(f"{path}: cannot unpack into {folder}: {exc.strerror}") from None
            kind = "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__
            raise DataError(str(path), [f"corrupt or truncated {path.suffix[1:]} file ({kind})"]) from None
        try:
            yield plain
        except DataError as exc:
            raise DataError(str(path), [p.replace(str(plain), str(path)) for p in exc.problems]) from None


def json_type(value) -> str:
    """JSON's name for a parsed value's type, for messages about a file's shape."""
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), "null")


def check_json_lines(path: Path, text: str) -> None:
    """Every non-blank line is one JSON object; the first broken line is named."""
    records = 0
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(str(path), [f"line {n}: not valid JSON ({exc.msg} at column {exc.colno})"]) from None
        if not isinstance(value, dict):
            raise DataError(str(path), [f"line {n}: a JSON {json_type(value)}, not an object "
                                        "(one record per line)"])
        records += 1
    if records == 0:
        raise DataError(str(path), ["empty file: no JSON records"])


def _separator_hint(header: list[str]) -> str:
    """Why a header might read as one field: a spreadsheet's export with another separator."""
    if len(header) != 1:
        return ""
    found = [name for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'")) if sep in header[0]]
    return f" (it is separated by {found[0]}; CSV files are read comma-separated)" if found else ""


def check_csv(path: Path, text: str) -> None:
    """A header and at least one row, each row with the header's number of fields."""
    # strict: an unclosed quote is an error here, not a row that swallows the rest of the file.
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(rows, None)
        if header is None or not any(cell.strip() for cell in header):
            raise DataError(str(path), ["empty file: no header and no rows"])
        count = 0
        for row in rows:
            if not row:
                continue
            count += 1
            if len(row) != len(header):
                raise DataError(str(path), [f"line {rows.line_num}: {len(row)} fields, but the header has "
                                            f"{len(header)}{_separator_hint(header)}"])
    except csv.Error as exc:
        raise DataError(str(path), [f"line {rows.line_num}: malformed CSV ({exc})"]) from None
    if count == 0:
        raise DataError(str(path), ["header only: no rows"])
