"""Where a data source is, checked cheaply by preflight before any data is read: a local file or
folder that is there and of a type the loaders read, an `s3://` object that answers, a Hub name
where the Hub can be reached. Without `datasets` (seconds to import), so that a mistyped path is
said at once."""

from __future__ import annotations

from pathlib import Path

from qa_lib.config import DataSource
from qa_lib.errors import DataError
from qa_lib.text_files import COMPRESSIONS, FLAT_READERS, check_file_type


def check_source_exists(source: DataSource) -> None:
    """A local file or folder that is not there, refused by name (cheap: preflight runs it for every
    source, so a missing eval file does not wait until the training data has been read). A name
    that is not a path is left to the Hub loader. An `s3://` object is asked for its size (one HEAD)."""
    path = source.path
    if path.startswith("s3://"):
        from qa_lib.s3 import check_cache_writable, object_fingerprint

        check_whole_file(source)  # an object is one file: refused before S3 is asked
        check_file_type(Path(path), path)
        object_fingerprint(path)
        check_cache_writable()  # where it will be downloaded
        return
    local = source.local_path
    if local.is_file():
        check_whole_file(source)
        check_file_type(local, path)
    if local.exists():
        return
    if local.suffix in (*FLAT_READERS, *COMPRESSIONS) or "/" in path and path.startswith((".", "/", "~")):
        # Relative paths are read from the current folder, not the config file's: say which.
        where = "" if local.is_absolute() else f" (relative to {Path.cwd()})"
        raise DataError(path, [f"file or folder not found{where}"])
    _check_hub_reachable(path)


def check_whole_file(source: DataSource) -> None:
    """A file is one split of one subset, read whole: a `split` or `subset` given for it would be
    ignored, and the run would train or score on data the config did not mean."""
    for key, value in (("split", source.split), ("subset", source.subset)):
        if value is not None:
            raise DataError(source.path, [f"{key} {value!r} given for a single file, which has no {key}s and is read "
                                          f"whole; remove it ({key} chooses among a data folder's or Hub dataset's "
                                          f"{key}s)"])


def _check_hub_reachable(name: str) -> None:
    """A Hub dataset where the Hub cannot be reached is refused at once: datasets would retry each
    file for about 25 s before saying so. In offline mode datasets reads its cache at once itself."""
    import datasets  # only for a Hub name, which datasets then loads

    from qa_lib.hub_reach import why_hub_unreachable

    if not datasets.config.HF_HUB_OFFLINE and (reason := why_hub_unreachable()) is not None:
        raise DataError(name, [f"not a local file or folder, and {reason}: give a local path (or set "
                               "HF_DATASETS_OFFLINE=1 to read the Hugging Face cache's copy)"])
