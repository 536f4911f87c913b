"""Files written whole: all of the text or the file as it was, never a stray temporary file."""

from __future__ import annotations

import os

import pytest

from qa_lib.folders import write_text_whole


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_a_file_is_written_whole_with_the_umask_s_permissions(tmp_path, umask_027):
    path = tmp_path / "answers.json"
    write_text_whole(path, '{"q1": "Denver Broncos — 24–10"}')
    assert path.read_text(encoding="utf-8") == '{"q1": "Denver Broncos — 24–10"}'
    # What a plain open() would give under this umask: a team's readers of a shared folder can read
    # it. A file from tempfile is owner-only (0600) whatever the umask.
    assert path.stat().st_mode & 0o777 == 0o640
    write_text_whole(path, "{}")
    assert path.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["answers.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "champion.json"
    path.write_text('{"run": "old"}')
    # A lone surrogate cannot be encoded: the write fails after the new file was opened.
    with pytest.raises(UnicodeEncodeError):
        write_text_whole(path, '{"run": "new \ud800"}')
    assert path.read_text() == '{"run": "old"}'
    assert [p.name for p in tmp_path.iterdir()] == ["champion.json"]
    with pytest.raises(FileNotFoundError):
        write_text_whole(tmp_path / "missing" / "x.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["champion.json"]
