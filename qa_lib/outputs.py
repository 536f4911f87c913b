"""A command's output file, local or an `s3://` object: checked before the work, written whole or
not at all. One place for `answer --output`, `predict` runs and `score --out-file`."""

from __future__ import annotations

from pathlib import Path

from qa_lib.errors import StorageError


def check_output(output: str, what: str, keep: bool = True) -> None:
    """Fail before any work when the `what` ("answers", "scores") could not be saved to
    `output` (a file path, or an `s3://bucket/key` object): a folder there, a parent that cannot be
    made or written, a bucket that is missing or refuses writes. `keep=False` removes the folders a
    local check made."""
    from qa_lib import s3
    from qa_lib.folders import write_problem

    if output.startswith("s3://"):
        s3.object_key(output)
        s3.S3Prefix(output.rsplit("/", 1)[0]).check_writable(f"the {what} could not be saved")
        return
    path = Path(output).expanduser()
    if path.is_dir():
        raise StorageError(f"{output}: a folder; give the {what} file's name (e.g. {Path(output) / f'{what}.json'})")
    if problem := write_problem(path.parent, keep=keep):
        raise StorageError(f"{output}: cannot write here ({problem})")


def save_output(output: str, text: str) -> None:
    """`text` written whole to `output` (a file, or an `s3://` object in one PUT), or not at all."""
    from qa_lib import s3
    from qa_lib.folders import write_text_whole

    if output.startswith("s3://"):
        s3.put_text(output, text)
    else:
        write_text_whole(Path(output).expanduser(), text, output)
