"""A fleet: two process workers on "two machines" that share only a Prefect server and an S3 store.

Each worker has its own folder (cwd, PREFECT_HOME, HOME, local cache); the code reaches them by a
git clone of a snapshot of this checkout (the deployment's source), and stages, checkpoints,
Prefect's cache records and the training lease live in the S3 store (moto's server on loopback).
A worker's folder is moved away once it stops, so any read of it by another worker fails.
"""

from __future__ import annotations

import ast
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
import yaml
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from tests.conftest import ROOT
from tests.flow_helpers import read_logs, task_states, tiny_config
from tests.s3_services import FaultProxy, MotoServer

CREDS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
         "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "fleet"
STORE = f"s3://{BUCKET}/store"
POOL = "fleet-pool"
LEASE_TTL = 8


def _snapshot_repo(dest: Path) -> tuple[str, str]:
    """This checkout's files (tracked and new, not ignored) committed to a fresh repository."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "snapshot"], cwd=dest, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=dest, capture_output=True, text=True).stdout.strip()
    return f"file://{dest}", commit


class Worker:
    def __init__(self, fleet, name: str, endpoint: str):
        self.name, self.queue = name, f"q-{name}"
        self.home = fleet["tmp"] / name
        for sub in ("home", "cache", "prefect-home"):
            (self.home / sub).mkdir(parents=True)
        env = {k: v for k, v in fleet["env"].items() if not k.startswith(("QA_PIPELINE_", "HF_"))}
        env.update(CREDS, HOME=str(self.home / "home"), PREFECT_HOME=str(self.home / "prefect-home"),
                   QA_PIPELINE_CACHE=str(self.home / "cache"), XDG_CACHE_HOME=str(self.home / "home" / ".cache"),
                   QA_S3_ENDPOINT_URL=endpoint, QA_PIPELINE_LEASE_TTL=str(LEASE_TTL), PREFECT_LOGGING_LEVEL="INFO")
        self.log = open(fleet["tmp"] / f"{name}.log", "w")
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", POOL,
                                      "--work-queue", self.queue, "--type", "process"], cwd=self.home, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, sig=signal.SIGTERM):
        """Stop the worker and the flow runs it started; then move its folder away."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        # A flow-run process may sit in its own session: kill whatever still runs from this folder,
        # and wait till it has gone. Moved away while one was still dying (under CI's load), the
        # folder came back: the process's last write to its cache (an absolute path) made it again.
        _kill_processes_naming(self.home)
        self.home.rename(self.home.with_name(self.home.name + "-gone"))


def _kill_processes_naming(folder: Path, timeout: float = 60) -> None:
    """SIGKILL every process whose command line or environment names `folder`, until none is left."""
    names = (str(folder).encode() + b"/", str(folder).encode() + b"\0")  # not another folder it is a prefix of
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                status = (proc / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
                if status != b"Z" and any(name in (proc / f).read_bytes() for f in ("cmdline", "environ")
                                         for name in names):
                    found.append(int(proc.name))
            except (OSError, IndexError):  # gone meanwhile, or not ours to read
                continue
        if not found:
            return
        assert time.monotonic() < deadline, f"processes {found} naming {folder} would not die"
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


@pytest.fixture(scope="module")
def fleet(prefect_server, tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    moto = MotoServer().start()
    boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1", **_keys()).create_bucket(Bucket=BUCKET)
    (tmp / "src").mkdir()
    source, commit = _snapshot_repo(tmp / "src")
    cfg = tiny_config(tiny_model, "out", eval_data={"path": str(ROOT / "data/squad/dev-v2.0.sample.json"), "limit": 40})
    (tmp / "deploy.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**prefect_server.env, **CREDS, "QA_S3_ENDPOINT_URL": moto.url, "QA_DEPLOY_CONFIG": str(tmp / "deploy.yaml")}
    prefect = str(Path(sys.executable).parent / "prefect")
    made = subprocess.run([prefect, "work-pool", "create", POOL, "--type", "process"], env=env,
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    out = subprocess.run([sys.executable, "-m", "cli", "deploy", "--work-pool", POOL, "--source", source,
                          "--store", STORE], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    state = {"tmp": tmp, "env": env, "cfg": cfg, "moto": moto, "commit": commit, "workers": []}
    yield state
    for w in state["workers"]:
        if w.home.exists():
            w.stop(signal.SIGKILL)
    moto.stop()


def _keys():
    return {"aws_access_key_id": CREDS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": CREDS["AWS_SECRET_ACCESS_KEY"]}


def _worker(fleet, name, endpoint=None) -> Worker:
    w = Worker(fleet, name, endpoint or fleet["moto"].url)
    fleet["workers"].append(w)
    return w


def _submit(worker, cfg):
    return run_deployment("train_qa/train-qa", parameters={"config": cfg.model_dump(mode="json")},
                          work_queue_name=worker.queue, timeout=0).id


def _wait(run_id, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with get_client(sync_client=True) as c:
            run = c.read_flow_run(run_id)
        if run.state.is_final():
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} did not finish in {timeout} s")


def _logs(run_id, timeout=90) -> str:
    """The run's log, once its last line ("model: ...") has reached the server: a run's state can
    turn Completed before its process has sent the final batch of logs."""
    return read_logs(run_id, until="\nmodel: ", timeout_s=timeout)


def _summary(run_id) -> dict:
    """What the flow logged of its result (flow results stay on the worker)."""
    logs = _logs(run_id)
    model, code = re.search(r"^model: (\S+) \(code (\w+)\)$", logs, re.M).groups()
    metrics = ast.literal_eval(re.search(r"^metrics: (\{.*\})$", logs, re.M)[1])
    return {"model_dir": model, "code_version": code, "metrics": metrics}


def _w2(fleet) -> Worker:
    """Worker 2 of the first test, or a new one if that test did not get to start it."""
    return next((w for w in fleet["workers"] if w.name == "w2" and w.home.exists()), None) or _worker(fleet, "w2")


def _s3(fleet):
    return boto3.client("s3", endpoint_url=fleet["moto"].url, region_name="us-east-1", **_keys())


def _completed(run, fleet):
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}\n" + read_logs(run.id)[-4000:]


def test_fleet_shares_one_store(fleet):
    cfg = fleet["cfg"]
    # 1. worker 1 trains; worker 2, with an empty cache, finds every stage cached and trains nothing.
    w1 = _worker(fleet, "w1")
    first = _wait(_submit(w1, cfg))
    _completed(first, fleet)
    result = _summary(first.id)
    assert result["code_version"] == fleet["commit"], "the run must record the commit it cloned"
    assert result["model_dir"].startswith(STORE + "/model/")
    # The library's store says what a task's last minutes went to, in the run's own log.
    model_key = result["model_dir"].removeprefix(STORE + "/model/").split("/")[0]
    assert re.search(rf"^uploading model/{model_key} to {STORE}: [\d.]+ [KM]?B in \d+ files?$", _logs(first.id), re.M)
    w1.stop()
    w2 = _worker(fleet, "w2")
    again = _wait(_submit(w2, cfg))
    _completed(again, fleet)
    states = task_states(again.id)
    stage_tasks = ("load-dataset", "build-features", "fine-tune", "predict", "post-process", "compute-metrics")
    assert all(set(states[t]) == {"Cached"} for t in stage_tasks), states
    assert _summary(again.id)["metrics"] == result["metrics"]

    # 2. n_best_size changed on worker 2: only post-processing and metrics run, and they download the
    # logits and eval features they need; never the model or the training features.
    changed = _wait(_submit(w2, cfg.model_copy(update={"n_best_size": 5})))
    _completed(changed, fleet)
    states = task_states(changed.id)
    assert states["post-process"] == ["Completed"] and states["compute-metrics"] == ["Completed"], states
    assert all(set(states[t]) == {"Cached"} for t in stage_tasks[:4]), states
    logs = _logs(changed.id)
    downloaded = re.findall(r"downloaded (\w+)/\w+ from \S+: (\d+) bytes", logs)
    assert {stage for stage, _ in downloaded} == {"logits", "features", "data"}, downloaded
    assert all(int(n) > 0 for _, n in downloaded)
    announced = re.findall(rf"^downloading (\w+/\w+) from {STORE}: [\d.]+ [KM]?B in \d+ files?$", logs, re.M)
    assert sorted(announced) == sorted(re.findall(r"downloaded (\w+/\w+) from", logs)), announced


def test_a_killed_worker_run_resumes_on_the_other_from_the_store_checkpoint(fleet):
    cfg = fleet["cfg"].model_copy(update={"seed": 7, "max_steps": 400, "save_steps": 20, "logging_steps": 20})
    w1 = _worker(fleet, "w1b")
    w2 = _w2(fleet)
    doomed = _submit(w1, cfg)
    s3 = _s3(fleet)

    def checkpoint_marker():
        listing = s3.list_objects_v2(Bucket=BUCKET, Prefix="store/work/model/").get("Contents", [])
        return [o["Key"] for o in listing if re.search(r"checkpoint-\d+/_COMPLETE$", o["Key"])]

    deadline = time.time() + 400
    while not checkpoint_marker():
        assert time.time() < deadline, "no checkpoint reached the store"
        time.sleep(0.2)
    saved = int(re.search(r"checkpoint-(\d+)", checkpoint_marker()[0])[1])
    w1.stop(signal.SIGKILL)  # the machine dies mid-training
    resumed = _wait(_submit(w2, cfg))
    _completed(resumed, fleet)
    logs = _logs(resumed.id)
    step = int(re.search(r"resumed from step (\d+)", logs)[1])
    assert step >= saved, logs[-3000:]
    with get_client(sync_client=True) as c:
        assert not c.read_flow_run(doomed).state.is_completed()


def test_one_new_config_started_on_both_workers_trains_once(fleet):
    cfg = fleet["cfg"].model_copy(update={"seed": 11, "max_steps": 30, "logging_steps": 5})
    w2 = _w2(fleet)
    w3 = _worker(fleet, "w3")
    runs = [_submit(w2, cfg), _submit(w3, cfg)]
    done = [_wait(r) for r in runs]
    for run in done:
        _completed(run, fleet)
    trained = [run for run in done if re.search(r"step \d+/30 loss", _logs(run.id))]
    assert len(trained) == 1, [_logs(r.id)[-1500:] for r in done]
    assert _summary(done[0].id)["metrics"] == _summary(done[1].id)["metrics"]


def test_stages_written_through_s3_faults_are_whole(fleet):
    proxy = FaultProxy(fleet["moto"].port, drop=0.03, slow_down=0.04, error=0.03, seed=5).start()
    try:
        w4 = _worker(fleet, "w4", endpoint=proxy.url)
        cfg = fleet["cfg"].model_copy(update={"seed": 13, "doc_stride": 40})
        run = _wait(_submit(w4, cfg))
        _completed(run, fleet)
    finally:
        proxy.stop()
    assert sum(proxy.faults[f] for f in ("drop", "slow_down", "error")) > 0, proxy.faults
    # Every stage the store calls complete has exactly the files (and sizes) its marker lists.
    import json

    s3 = _s3(fleet)
    objects = {o["Key"]: o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="store/")
               for o in page.get("Contents", [])}
    markers = [k for k in objects if re.fullmatch(r"store/\w+/\w+/_COMPLETE", k) and "/work/" not in k]
    assert len(markers) >= 6
    for marker in markers:
        body = json.loads(s3.get_object(Bucket=BUCKET, Key=marker)["Body"].read())
        base = marker.rsplit("/", 1)[0] + "/" + body["attempt"]
        for rel, size in body["files"].items():
            assert objects.get(f"{base}/{rel}") == size, (marker, rel)


def test_worker_terminals_show_the_runs_without_progress_bars(fleet):
    """What an operator sees in a worker's terminal: the runs' log lines (training included), and none
    of datasets'/transformers' progress bars or the Trainer's raw dict lines (the deployments set
    QA_PIPELINE_NO_PROGRESS=1)."""
    logs = {w.name: (fleet["tmp"] / f"{w.name}.log").read_text() for w in fleet["workers"]}
    assert any(re.search(r"step \d+/\d+ loss", text) for text in logs.values()), "no training reached a terminal"
    for name, text in logs.items():
        assert "Beginning flow run" in text, name
        bars = re.findall(r".*(?:it/s\]|examples/s\]|\d+%\|).*|.*\{'(?:loss|train_runtime)'.*", text)
        assert not bars, (name, bars[:3])
