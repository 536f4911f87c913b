"""The store backends against a real local S3 (moto's server over HTTP, through a fault proxy):
stages appear whole or not at all, downloads are counted, the lease holds across processes and
frees itself when its holder dies, checkpoints round-trip, and `store gc` keeps what matters."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from qa_lib.s3 import StorageError
from qa_lib.store import LocalStore, S3Store, collect_garbage
from tests.conftest import ROOT
from tests.s3_services import FaultProxy, MotoServer

CREDS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
         "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def moto():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def s3env(moto, monkeypatch, request):
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("QA_S3_ENDPOINT_URL", moto.url)
    bucket = "st-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


def _write(store, stage, key, files: dict[str, bytes]):
    with store.writing(stage, key) as tmp:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)


def test_stage_round_trip_through_faults_and_a_second_cache(moto, s3env, tmp_path, monkeypatch):
    proxy = FaultProxy(moto.port, drop=0.1, slow_down=0.1, error=0.05, seed=3).start()
    monkeypatch.setenv("QA_S3_ENDPOINT_URL", proxy.url)
    files = {"features/data.arrow": os.urandom(3 * 2**20), "features/state.json": b'{"a": 1}'}
    writer = S3Store(f"s3://{s3env}/fleet", tmp_path / "worker1")
    _write(writer, "features", "k1", files)
    assert writer.has("features", "k1") and writer.downloaded == 0  # the writer keeps its own copy
    reader = S3Store(f"s3://{s3env}/fleet", tmp_path / "worker2")
    folder = reader.fetch("features", "k1")
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
            and p.name != "_COMPLETE"} == files
    assert reader.downloaded == sum(len(v) for v in files.values())
    reader.fetch("features", "k1")  # cached locally: no second download
    assert reader.downloaded == sum(len(v) for v in files.values())
    assert sum(proxy.faults[f] for f in ("drop", "slow_down", "error")) > 0, proxy.faults
    proxy.stop()


def test_a_writer_that_dies_before_its_marker_leaves_no_stage(s3env, tmp_path, monkeypatch):
    store = S3Store(f"s3://{s3env}/p", tmp_path / "w1")

    def die(*a, **k):
        raise KeyboardInterrupt("killed after uploading its files")

    monkeypatch.setattr(store, "_put_once", die)
    with pytest.raises(KeyboardInterrupt):
        _write(store, "logits", "k2", {"logits.npz": b"x" * 1000})
    other = S3Store(f"s3://{s3env}/p", tmp_path / "w2")
    assert not other.has("logits", "k2")
    with pytest.raises(StorageError, match="not in the store"):
        other.fetch("logits", "k2")
    _write(other, "logits", "k2", {"logits.npz": b"y" * 1000})  # recomputed, then readable
    assert (S3Store(f"s3://{s3env}/p", tmp_path / "w3").fetch("logits", "k2") / "logits.npz").read_bytes() == b"y" * 1000


def test_racing_writers_never_mix_files(s3env, tmp_path, monkeypatch):
    """Both upload; the marker is created once; the loser's attempt is deleted, readers see the winner."""
    a = S3Store(f"s3://{s3env}/p", tmp_path / "a")
    b = S3Store(f"s3://{s3env}/p", tmp_path / "b")
    monkeypatch.setattr(b, "has", lambda stage, key: False)  # b checked before a finished
    _write(a, "model", "k3", {"w.bin": b"A" * 100, "only-a.txt": b"a"})
    _write(b, "model", "k3", {"w.bin": b"B" * 100})
    got = S3Store(f"s3://{s3env}/p", tmp_path / "c").fetch("model", "k3")
    assert (got / "w.bin").read_bytes() == b"A" * 100 and (got / "only-a.txt").exists()
    keys = [o["Key"] for o in b.s3.list_objects_v2(Bucket=s3env, Prefix="p/model/k3/")["Contents"]]
    assert len({k.split("/")[3] for k in keys if not k.endswith("_COMPLETE")}) == 1, keys


def test_checkpoints_round_trip_and_only_the_newest_stays(s3env, tmp_path, caplog):
    import logging

    store = S3Store(f"s3://{s3env}/p", tmp_path / "w1")
    for step in (5, 10):
        ckpt = tmp_path / "run" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        with caplog.at_level(logging.INFO, logger="qa_lib.store"):
            store.save_checkpoint("model", "k4", ckpt)
    other = S3Store(f"s3://{s3env}/p", tmp_path / "w2")
    assert other._checkpoints("model", "k4") == [(10, "checkpoint-10")]
    with caplog.at_level(logging.INFO, logger="qa_lib.store"):
        name = other.restore_checkpoint("model", "k4", tmp_path / "w2-ckpts")
    assert name == "checkpoint-10"
    # Training waits for each transfer: said before it starts, with its size.
    assert [r.getMessage() for r in caplog.records if r.name.startswith("qa_lib.store")] == [
        f"uploading checkpoint-5 of model/k4 to s3://{s3env}/p: 18 B in 1 file",  # {"global_step": 5}
        f"uploading checkpoint-10 of model/k4 to s3://{s3env}/p: 19 B in 1 file",
        f"downloading checkpoint-10 of model/k4 from s3://{s3env}/p: 19 B in 1 file"]
    assert json.loads((tmp_path / "w2-ckpts" / name / "trainer_state.json").read_text()) == {"global_step": 10}
    other.clear_checkpoints("model", "k4")
    assert other.restore_checkpoint("model", "k4", tmp_path / "x") is None


_HOLD = """
import sys, time
from qa_lib.store import S3Store
store = S3Store(sys.argv[1], sys.argv[2])
with store.lease("model", "k5"):
    print("holding", time.time(), flush=True)
    time.sleep(float(sys.argv[3]))
print("released", time.time(), flush=True)
"""


def _holder(location, cache, seconds, env):
    return subprocess.Popen([sys.executable, "-c", _HOLD, location, str(cache), str(seconds)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)


def test_lease_holds_across_processes_and_frees_when_its_holder_dies(moto, s3env, tmp_path):
    env = {**os.environ, "QA_PIPELINE_LEASE_TTL": "4"}
    location = f"s3://{s3env}/p"
    # A live holder renews: a second process waits for the release, well past the TTL.
    first = _holder(location, tmp_path / "w1", 9, env)
    assert first.stdout.readline().startswith("holding")
    second = _holder(location, tmp_path / "w2", 0, env)
    out, _ = second.communicate(timeout=60)
    first_out, _ = first.communicate(timeout=30)
    released = float(first_out.split()[-1])
    took = float(out.split()[1])
    assert took >= released - 0.5, (first_out, out)
    # A holder killed outright: its lease expires after the TTL and a second process takes it.
    dead = _holder(location, tmp_path / "w1", 600, env)
    assert dead.stdout.readline().startswith("holding")
    os.killpg(dead.pid, signal.SIGKILL)
    killed_at = time.time()
    out, _ = _holder(location, tmp_path / "w2", 0, env).communicate(timeout=60)
    assert 3 <= float(out.split()[1]) - killed_at < 30, out


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_gc_keeps_pinned_and_leased_entries(backend, s3env, tmp_path):
    store = LocalStore(tmp_path / "store") if backend == "local" else S3Store(f"s3://{s3env}/p", tmp_path / "c")
    for key in ("old1", "champ", "busy"):
        _write(store, "model", key, {"f": b"z" * 10})
    store.pin("champion-x", [("model", "champ")])
    assert {(e.stage, e.key) for e in store.entries()} == {("model", "old1"), ("model", "champ"), ("model", "busy")}
    assert collect_garbage(store, older_than_days=1) == []  # nothing that old
    with store.lease("model", "busy"):
        removed = collect_garbage(store, older_than_days=0)
    assert [(e.stage, e.key) for e in removed] == [("model", "old1")]
    assert not store.has("model", "old1") and store.has("model", "champ") and store.has("model", "busy")


def test_store_cli_lists_and_collects(s3env, tmp_path):
    store = LocalStore(tmp_path / "store")
    _write(store, "features", "abc", {"x": b"1" * 2048})
    run = [sys.executable, "-m", "cli", "store"]
    ls = subprocess.run([*run, "ls", "--store", str(store.root)], cwd=ROOT, capture_output=True, text=True)
    assert ls.returncode == 0 and "features" in ls.stdout and "abc" in ls.stdout and "2.0 KB" in ls.stdout, ls
    dry = subprocess.run([*run, "gc", "--older-than", "0", "--dry-run", "--store", str(store.root)], cwd=ROOT,
                         capture_output=True, text=True)
    assert "would remove features/abc" in dry.stdout and store.has("features", "abc")
    gc = subprocess.run([*run, "gc", "--older-than", "0", "--store", str(store.root)], cwd=ROOT, capture_output=True,
                        text=True)
    assert gc.returncode == 0 and "removed 1 entries" in gc.stdout and not store.has("features", "abc")
    for days in ("-1", "nan", "inf"):
        bad = subprocess.run([*run, "gc", "--older-than", days, "--store", str(store.root)], cwd=ROOT,
                             capture_output=True, text=True)
        assert bad.returncode == 2 and bad.stderr == (f"error: --older-than: must be a number of days, 0 or more, "
                                                      f"got {float(days)}\n"), bad
    # An s3:// store that is not there: one line naming it (it was botocore's error, exit 1).
    for cmd in (["ls"], ["gc", "--older-than", "30"]):
        missing = subprocess.run([*run, *cmd, "--store", "s3://no-such-store-bucket/x"], cwd=ROOT, capture_output=True,
                                 text=True)
        assert missing.returncode == 2 and missing.stderr == "error: s3://no-such-store-bucket/x: bucket does not exist\n", missing
    # Nor is a folder store that is not there (it listed "0 entries": about the wrong place), or a file.
    for where, what in ((tmp_path / "no-store", "does not exist (a run that uses it creates it)"),
                        (tmp_path / "store" / "file", "is not a folder")):
        (tmp_path / "store" / "file").write_text("")
        for cmd in (["ls"], ["gc", "--older-than", "30"]):
            missing = subprocess.run([*run, *cmd, "--store", str(where)], cwd=ROOT, capture_output=True, text=True)
            assert missing.returncode == 2, missing
            assert missing.stderr == f"error: store {where} {what}; give --store or set QA_PIPELINE_STORE\n"
            assert not (tmp_path / "no-store").exists()


def test_gc_sweeps_a_workers_local_copies_unused_for_the_age(s3env, tmp_path):
    """A long-lived worker downloads every new model and feature set; gc on that worker removes the
    copies it has not used for the age asked (at least an hour), and nothing of the store itself."""
    writer = S3Store(f"s3://{s3env}/p", tmp_path / "writer")
    for key in ("old", "reused", "fresh"):
        _write(writer, "model", key, {"w.bin": b"x" * 4096})
    cache = tmp_path / "worker"
    worker = S3Store(f"s3://{s3env}/p", cache)
    for key in ("old", "reused", "fresh"):
        worker.fetch("model", key)
    two_days_ago = time.time() - 2 * 86400
    for key in ("old", "reused"):
        os.utime(worker.cache / "model" / key / "_COMPLETE", (two_days_ago, two_days_ago))
    worker.fetch("model", "reused")  # used again today: its copy stays
    cut_off = worker.cache / "model" / ".k.1234abcd.part"  # a download killed two days ago
    (cut_off / "w.bin").parent.mkdir(parents=True)
    (cut_off / "w.bin").write_bytes(b"x" * 100)
    os.utime(cut_off, (two_days_ago, two_days_ago))

    run = [sys.executable, "-m", "cli", "store", "gc", "--older-than", "1", "--store", f"s3://{s3env}/p"]
    env = {**os.environ, "QA_PIPELINE_CACHE": str(cache)}
    dry = subprocess.run([*run, "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert "would remove 2 local copies" in dry.stdout, dry.stdout + dry.stderr
    assert (worker.cache / "model" / "old").exists()
    gc = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True)
    assert gc.returncode == 0 and "removed the local copy of model/old (4.0 KB, unused for 2.0 d)" in gc.stdout, gc
    assert "removed 0 entries" in gc.stdout  # the store's entries are a day old at most: kept
    assert sorted(p.name for p in (worker.cache / "model").iterdir()) == ["fresh", "reused"]
    assert worker.fetch("model", "old").joinpath("w.bin").read_bytes() == b"x" * 4096  # downloaded again
    assert {e.key for e in writer.entries()} == {"old", "reused", "fresh"}
    # Whatever the age asked, a copy used within the hour is never swept (a run may be reading it).
    from qa_lib.store import sweep_local_copies

    assert sweep_local_copies(worker, 0) == []
    assert sweep_local_copies(LocalStore(tmp_path / "folder"), 0) == []


def test_data_parallel_training_uploads_its_checkpoints(s3env, tiny_model, train_examples, tmp_path):
    """The multi-GPU launcher (2 CPU processes here) copies each checkpoint to the shared store, once."""
    from qa_lib.config import PipelineConfig
    from qa_lib.features import build_train_features
    from qa_lib.launch import fine_tune_distributed
    from qa_lib.modeling import load_tokenizer

    feats = build_train_features(train_examples.select(range(64)), load_tokenizer(str(tiny_model)), 128, 48)
    feats.save_to_disk(str(tmp_path / "features"))
    cfg = PipelineConfig.parse({"model": str(tiny_model), "train_data": {"path": "unused.json"}, "max_length": 128,
                                "doc_stride": 48, "max_steps": 3, "save_steps": 1, "per_device_train_batch_size": 8,
                                "output_dir": str(tmp_path / "out")})
    location = f"s3://{s3env}/p"
    result = fine_tune_distributed(cfg, str(tmp_path / "features"), tmp_path / "ddp", nproc=2,
                                   checkpoints_to=(location, "model", "kd"))
    assert result["world_size"] == 2
    store = S3Store(location, tmp_path / "reader")
    assert store._checkpoints("model", "kd") == [(3, "checkpoint-3")]
    name = store.restore_checkpoint("model", "kd", tmp_path / "restored")
    assert json.loads((tmp_path / "restored" / name / "trainer_state.json").read_text())["global_step"] == 3
    # Uploaded once every rank had written its part: a whole checkpoint, no file still being written.
    files = {p.name for p in (tmp_path / "restored" / name).iterdir()}
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"} <= files, files
    assert not any(f.startswith(".") for f in files), files


def _train_with_uploads(tiny_model, train_examples, tmp_path, store, callbacks, **overrides):
    from qa_lib.checkpoint_sync import CheckpointToStore
    from qa_lib.config import PipelineConfig
    from qa_lib.features import build_train_features
    from qa_lib.modeling import load_tokenizer
    from qa_lib.train import fine_tune

    feats = build_train_features(train_examples.select(range(48)), load_tokenizer(str(tiny_model)), 128, 48)
    cfg = PipelineConfig.parse({"model": str(tiny_model), "train_data": {"path": "unused.json"}, "max_length": 128,
                                "doc_stride": 48, "max_steps": 3, "save_steps": 1, "per_device_train_batch_size": 8,
                                "output_dir": str(tmp_path / "out"), **overrides})
    upload = CheckpointToStore(store, "model", "ka")
    with upload.finishing_on_failure():
        return fine_tune(cfg, feats, tmp_path / "train", callbacks=[*callbacks, upload])


def test_checkpoints_upload_while_training_goes_on(s3env, tiny_model, train_examples, tmp_path):
    """checkpoint-1's upload is held until training has saved checkpoint-2, and the Trainer has
    deleted checkpoint-1 (`save_total_limit: 1`): training did not wait for it, and what reached
    the store is still the whole of checkpoint-1."""
    import threading

    from transformers import TrainerCallback

    saved_2, seen = threading.Event(), {}

    class HeldStore(S3Store):
        def save_checkpoint(self, stage, key, checkpoint):
            if checkpoint.name == "checkpoint-1":
                seen["training_went_on"] = saved_2.wait(timeout=30)
            super().save_checkpoint(stage, key, checkpoint)
            seen.setdefault("in_store", []).append(self._checkpoints(stage, key))

    class SeesSecondSave(TrainerCallback):  # runs before the upload callback's on_save
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                seen["local_checkpoint_1_left"] = (Path(args.output_dir) / "checkpoint-1").exists()
                saved_2.set()

    store = HeldStore(f"s3://{s3env}/p", tmp_path / "cache")
    _train_with_uploads(tiny_model, train_examples, tmp_path, store, [SeesSecondSave()], save_total_limit=1)
    assert seen["training_went_on"] and seen["local_checkpoint_1_left"] is False
    assert seen["in_store"] == [[(1, "checkpoint-1")], [(2, "checkpoint-2")], [(3, "checkpoint-3")]]
    restored = S3Store(f"s3://{s3env}/p", tmp_path / "reader")
    # the last one is waited for: it is in the store when training returns
    assert restored.restore_checkpoint("model", "ka", tmp_path / "restored") == "checkpoint-3"
    files = {p.name for p in (tmp_path / "restored" / "checkpoint-3").iterdir()}
    assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= files, files
    # the snapshots uploaded from are gone
    assert not list((tmp_path / "train" / "checkpoints" / ".uploading").glob("*"))


def test_a_background_upload_that_fails_stops_training_with_its_error(s3env, tiny_model, train_examples, tmp_path):
    class RefusingStore(S3Store):
        def save_checkpoint(self, stage, key, checkpoint):
            if checkpoint.name == "checkpoint-1":
                raise StorageError(f"{self.location}: access denied (test)")
            super().save_checkpoint(stage, key, checkpoint)

    store = RefusingStore(f"s3://{s3env}/p", tmp_path / "cache")
    with pytest.raises(StorageError, match="access denied"):
        _train_with_uploads(tiny_model, train_examples, tmp_path, store, [])
    assert store._checkpoints("model", "ka") == []  # nothing after the failed one was uploaded


def test_training_that_fails_lets_the_checkpoint_in_flight_land_first(s3env, tiny_model, train_examples, tmp_path):
    """A failure after a save (here a callback raising at step 2, while checkpoint-1 is still on its
    way) reaches the caller only once that checkpoint is in the store, for a rerun to resume from."""
    from transformers import TrainerCallback

    class SlowStore(S3Store):
        def save_checkpoint(self, stage, key, checkpoint):
            time.sleep(2)  # a slow link
            super().save_checkpoint(stage, key, checkpoint)

    class FailsAtStep2(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise RuntimeError("the data loader broke")

    store = SlowStore(f"s3://{s3env}/p", tmp_path / "cache")
    with pytest.raises(RuntimeError, match="the data loader broke"):
        _train_with_uploads(tiny_model, train_examples, tmp_path, store, [FailsAtStep2()])
    assert store._checkpoints("model", "ka") == [(1, "checkpoint-1")]


def test_a_store_model_uri_resolves_to_its_downloaded_folder(s3env, tiny_model, tmp_path, monkeypatch):
    """`evaluate --model s3://.../model/<key>` and `answer --model ...` read a model from the shared store."""
    from qa_lib.modeling import resolve_model

    key = "0123456789abcdef01234567"
    with S3Store(f"s3://{s3env}/p", tmp_path / "writer").writing("model", key) as tmp:
        shutil.copytree(tiny_model, tmp / "model")
    monkeypatch.setenv("QA_PIPELINE_CACHE", str(tmp_path / "reader"))
    for uri in (f"s3://{s3env}/p/model/{key}", f"s3://{s3env}/p/model/{key}/model"):
        folder = Path(resolve_model(uri))
        assert (folder / "config.json").read_bytes() == (tiny_model / "config.json").read_bytes()
        assert str(folder).startswith(str(tmp_path / "reader"))


def test_a_renewal_whose_response_is_lost_keeps_the_lease(moto, s3env, tmp_path, monkeypatch):
    """botocore resends a renewal whose response was lost; the resend fails its If-Match against our
    own new ETag. The lease reads itself back, finds itself, and holds on."""
    import qa_lib.store.s3 as s3_store

    monkeypatch.setattr(s3_store, "LEASE_TTL_S", 2.0)
    proxy = FaultProxy(moto.port, drop=0, slow_down=0, error=0).start()
    monkeypatch.setenv("QA_S3_ENDPOINT_URL", proxy.url)
    store = S3Store(f"s3://{s3env}/p", tmp_path / "c")
    with store.lease("model", "k6") as lease:
        proxy.lose_response_of = f"PUT /{s3env}/p/locks/model-k6.json".encode()
        time.sleep(2.0)  # four renewals
        assert proxy.lost, "the renewal's response was never dropped"
        assert not lease.lost
    listing = store.s3.list_objects_v2(Bucket=s3env, Prefix="p/locks/").get("Contents", [])
    assert listing == [], "a lease still held is not released"
    proxy.stop()


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_gc_sweeps_what_dead_writers_left_but_not_young_uploads(backend, s3env, tmp_path, monkeypatch):
    import qa_lib.store as store_module

    store = LocalStore(tmp_path / "store") if backend == "local" else S3Store(f"s3://{s3env}/p", tmp_path / "c")
    _write(store, "logits", "done", {"logits.npz": b"z" * 10})
    if backend == "local":
        leftover = store.root / "logits" / ".dead.0123abcd.tmp"
        leftover.mkdir(parents=True)
        (leftover / "logits.npz").write_bytes(b"half")
    else:
        with monkeypatch.context() as m:
            m.setattr(store, "_put_once", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
            with pytest.raises(KeyboardInterrupt):
                _write(store, "logits", "dead", {"logits.npz": b"half"})
    assert collect_garbage(store, older_than_days=0, dry_run=True) == [e for e in store.entries()]  # young: kept
    monkeypatch.setattr(store_module, "ORPHAN_MIN_AGE_S", 0)
    time.sleep(1.1)  # S3 LastModified has one-second resolution
    assert [(e.stage, e.size) for e in store.orphans(time.time())] == [("logits", 4)]  # the complete one is none
    removed = collect_garbage(store, older_than_days=0)
    assert sorted(e.size for e in removed) == [4, 10], removed
    assert store.orphans(time.time() + 10) == [] and not store.has("logits", "done")


def test_a_full_local_cache_is_named_and_nothing_is_uploaded(s3env, tiny_model, tmp_path):
    """An s3 store computes each stage in its local cache first: a full cache disk is one
    StorageError naming it, and no half-written stage reaches the bucket. Real ENOSPC, from a
    16 KB tmpfs in a private mount namespace."""
    import textwrap

    from tests.test_disk_full import can_mount_tmpfs

    if not can_mount_tmpfs():
        pytest.skip("needs `unshare -rm` to mount a small tmpfs (no user namespaces)")
    cache = tmp_path / "cache"
    cache.mkdir()
    script = textwrap.dedent(f"""
        import sys
        from qa_lib.errors import StorageError
        from qa_lib.store.s3 import S3Store
        store = S3Store("s3://{s3env}/p", {str(cache)!r})
        try:
            with store.writing("features", "k1") as tmp:
                (tmp / "data.arrow").write_bytes(b"x" * 65536)
        except StorageError as exc:
            print(exc)
        print("has", store.has("features", "k1"))
        try:  # a stage another worker wrote, too big to download here
            store.fetch("features", "k2")
        except StorageError as exc:
            print(exc)
        import os
        from qa_lib.s3 import download_source
        os.environ["QA_PIPELINE_CACHE"] = {str(cache)!r}
        try:  # an s3:// data source goes through the same cache
            download_source("s3://{s3env}/d/big.jsonl")
        except StorageError as exc:
            print(exc)
        from qa_lib.s3 import download_model
        try:  # a published champion, for `answer --model s3://.../champion`
            download_model("s3://{s3env}/serve/champion")
        except StorageError as exc:
            print(exc)
        import pathlib
        print("left", sorted(p.name for p in pathlib.Path({str(cache)!r}).rglob("*") if p.name != "stages"
                            and p.suffix in (".tmp", ".part")))
    """)
    _write(S3Store(f"s3://{s3env}/p", tmp_path / "writer"), "features", "k2", {"data.arrow": b"y" * 65536})
    boto3.client("s3", endpoint_url=os.environ["QA_S3_ENDPOINT_URL"]).put_object(Bucket=s3env, Key="d/big.jsonl",
                                                                               Body=b"z" * 65536)
    from qa_lib.publish.run import publish_run
    from qa_lib.publish.s3_target import S3Target

    target = S3Target(f"s3://{s3env}/serve")
    location = publish_run(target, str(tiny_model), {"f1": 1.0}, {"model": "tiny"}, {}, "r1", "dev.json", False)
    target.put_pointer({"run_id": "r1", "location": location}, None)
    out = subprocess.run(["unshare", "-rm", "bash", "-c", f'mount -t tmpfs -o size=16k tmpfs "{cache}" && '
                          f'"{sys.executable}" -c "$SCRIPT"'], env={**os.environ, "SCRIPT": script},
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    write, has, fetch, source, champion, left = out.stdout.splitlines()
    assert champion == f"s3://{s3env}/serve/champion: no space left on device in the local cache {cache}"
    assert source == f"s3://{s3env}/d/big.jsonl: no space left on device in the local cache {cache}"
    for message in (write, fetch):
        assert message.startswith(f"the s3://{s3env}/p store's local cache {cache}/")
        assert message.endswith(": no space left on device")
    assert (has, left) == ("has False", "left []")


def test_an_unwritable_local_cache_is_named_by_the_checks(s3env, tmp_path, monkeypatch):
    """An s3 store computes and downloads through this worker's cache: one that cannot be written
    (a read-only home in a hardened pod) failed the first stage three times, then an OSError, exit 1."""
    from qa_lib.config import DataSource
    from qa_lib.sources import check_source_exists

    (tmp_path / "file").write_text("")
    cache = tmp_path / "file" / "cache"  # under a file: not writable, even by root
    store = S3Store(f"s3://{s3env}/p", cache)
    message = f"local cache {cache}: cannot write there (Not a directory); set QA_PIPELINE_CACHE to a writable folder"
    with pytest.raises(StorageError) as info:
        store.check()
    assert str(info.value) == message
    store.check(cache=False)  # listing needs no cache
    # An s3:// data source is downloaded into the same cache: preflight's existence check says so too.
    boto3.client("s3", endpoint_url=os.environ["QA_S3_ENDPOINT_URL"]).put_object(Bucket=s3env, Key="d/train.json",
                                                                               Body=b"{}")
    monkeypatch.setenv("QA_PIPELINE_CACHE", str(cache))
    with pytest.raises(StorageError) as info:
        check_source_exists(DataSource(path=f"s3://{s3env}/d/train.json"))
    assert str(info.value) == message
