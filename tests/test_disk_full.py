"""A full disk: one line naming where, exit 2, no retry, and no partial copy left behind.

The end-to-end test runs the CLI on real, small tmpfs mounts in a private mount namespace
(`unshare -rm`, which needs no root where unprivileged user namespaces are allowed), so the
ENOSPC comes from the kernel, through safetensors, the Trainer and shutil as it would in a pod.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from qa_lib.errors import StorageError, is_disk_full, naming_full_disk
from tests.conftest import DEV_V1, TRAIN_V1


def test_full_disk_is_recognised_in_each_library_s_words():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    # shutil.copytree collects its failures into one shutil.Error list of (src, dst, why).
    assert is_disk_full(shutil.Error([("/a/x", "/b/x", "[Errno 28] No space left on device: '/a/x' -> '/b/x'")]))
    # safetensors raises its own error type with the OS's words in the message.
    assert is_disk_full(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("saving the checkpoint failed") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(shutil.Error([("/a/x", "/b/x", "[Errno 13] Permission denied")]))
    assert not is_disk_full(ValueError("bad value"))

    with pytest.raises(StorageError, match=r"^store /s: no space left on device$") as info:
        with naming_full_disk("store /s"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(info.value.__cause__, OSError)  # the details stay in the chain, for the log
    with pytest.raises(PermissionError):
        with naming_full_disk("store /s"):
            raise PermissionError(errno.EACCES, "Permission denied")


def can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


# The scenario, in a mount namespace of its own: each CLI run's exit code, stderr and the files
# left on the small disks are written to `report` (on the normal disk, which outlives the mounts).
SCENARIO = textwrap.dedent("""
    set -u
    run() { name=$1; shift; "$PYTHON" -m cli "$@" > "$REPORT/$name.out" 2> "$REPORT/$name.err"; echo $? > "$REPORT/$name.rc"; }
    mount -t tmpfs -o size=7m tmpfs "$OUT_DISK"
    mount -t tmpfs -o size=3m tmpfs "$STORE_DISK"
    mount -t tmpfs -o size=16k tmpfs "$TINY_DISK"
    # 1. A model fits on the output disk once (4.7 MB), not twice: the second publish runs out of space.
    run first train "$CONFIG" "output_dir=$OUT_DISK/out" --store "$STORE"
    sha256sum "$OUT_DISK"/out/model/* > "$REPORT/before.sha"
    run second train "$CONFIG" "output_dir=$OUT_DISK/out" learning_rate=3e-3 --store "$STORE"
    sha256sum "$OUT_DISK"/out/model/* > "$REPORT/after.sha"
    ls -A "$OUT_DISK/out" > "$REPORT/out.ls"
    # A retrain's publish into a folder target on the same disk.
    "$PYTHON" -c "if True:
        import sys
        from qa_lib.publish.local import FolderTarget
        from qa_lib.errors import StorageError
        try:
            FolderTarget(sys.argv[1]).upload_run(sys.argv[2], 'run-1')
        except StorageError as exc:
            print(exc)" "$OUT_DISK/target" "$MODEL" > "$REPORT/target.out" 2>&1
    ls -A "$OUT_DISK/target" "$OUT_DISK/target/runs" > "$REPORT/target.ls" 2>&1
    # 2. The model does not fit in a store on a 3 MB disk: fine-tune cannot save it.
    run store train "$CONFIG" "output_dir=$REPORT/unused" --store "$STORE_DISK/store"
    # A file written whole (champion.json, answers, pins) that does not fit: the old one stays.
    mkdir "$TINY_DISK/whole" && echo -n '{"run": "old"}' > "$TINY_DISK/whole/champion.json"
    "$PYTHON" -c "if True:
        import sys
        from qa_lib.folders import write_text_whole
        from qa_lib.errors import StorageError
        try:
            write_text_whole(sys.argv[1], 'x' * 65536, 'publish target ' + sys.argv[1])
        except StorageError as exc:
            print(exc)" "$TINY_DISK/whole/champion.json" > "$REPORT/whole.out" 2>&1
    ls -A "$TINY_DISK/whole" > "$REPORT/whole.ls"; cat "$TINY_DISK/whole/champion.json" > "$REPORT/whole.kept"
    rm -r "$TINY_DISK/whole"
    # 3. Not even the examples fit: the store's own write says so.
    run tiny train "$CONFIG" "output_dir=$REPORT/unused" --store "$TINY_DISK/store"
    find "$TINY_DISK" -name '*.tmp' > "$REPORT/tiny.tmp"
""")


@pytest.mark.skipif(not can_mount_tmpfs(), reason="needs `unshare -rm` to mount a small tmpfs (no user namespaces)")
def test_a_full_disk_is_one_line_not_retried_and_leaves_no_partial_copy(prefect_server, tiny_model, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(tiny_model), "train_data": {"path": str(TRAIN_V1), "limit": 16},
        "eval_data": {"path": str(DEV_V1), "limit": 8}, "max_steps": 2, "max_length": 128, "doc_stride": 48}))
    report = tmp_path / "report"
    dirs = {name: tmp_path / name for name in ("out-disk", "store-disk", "tiny-disk")}
    for d in (report, *dirs.values()):
        d.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "CONFIG": str(config), "REPORT": str(report),
           "OUT_DISK": str(dirs["out-disk"]), "STORE_DISK": str(dirs["store-disk"]),
           "TINY_DISK": str(dirs["tiny-disk"]), "STORE": str(tmp_path / "store"),
           "PREFECT_API_URL": prefect_server.url, "MODEL": str(tiny_model)}
    subprocess.run(["unshare", "-rm", "bash", "-c", SCENARIO], env=env, check=True, timeout=600)

    def result(name):
        return int((report / f"{name}.rc").read_text()), (report / f"{name}.err").read_text()

    rc, err = result("first")
    assert rc == 0, err[-3000:]

    rc, err = result("second")
    assert rc == 2, err[-3000:]
    assert _error_lines(err) == [f"error: output_dir {dirs['out-disk'] / 'out'}: no space left on device"]
    assert "Retry 1/" not in err
    # The published model is the first run's, whole, and the failed copy left nothing beside it.
    assert (report / "after.sha").read_text() == (report / "before.sha").read_text()
    assert sorted((report / "out.ls").read_text().split()) == ["artifacts", "model", "predictions"]

    assert (report / "target.out").read_text() == f"publish target {dirs['out-disk'] / 'target'}: no space left on device\n"
    listing = (report / "target.ls").read_text()
    assert "runs:" in listing and "cannot access" not in listing and "run-1" not in listing  # no partial copy

    champion = dirs["tiny-disk"] / "whole" / "champion.json"
    assert (report / "whole.out").read_text() == f"publish target {champion}: no space left on device\n"
    assert (report / "whole.ls").read_text().split() == ["champion.json"]
    assert (report / "whole.kept").read_text() == '{"run": "old"}'

    rc, err = result("store")
    assert rc == 2, err[-3000:]
    [line] = _error_lines(err)
    assert line.startswith(f"error: fine-tune's checkpoints in {dirs['store-disk'] / 'store'}/work/model/")
    assert line.endswith(": no space left on device")
    assert "Retry 1/" not in err



def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]
