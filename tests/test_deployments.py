"""End to end: a real server, a process work pool and worker, deployments registered from
deployments/definitions.py, a run triggered through the API as the UI does, the nightly
schedule read back, and the data-landed event starting a retrain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from tests.conftest import ROOT
from tests.flow_helpers import artifacts, tiny_config


def _wait(predicate, timeout, every=1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


@pytest.fixture(scope="module")
def deployed(prefect_server, tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    cfg = tiny_config(tiny_model, tmp / "out", publish_target=str(tmp / "published"), eval_data={
        "path": str(ROOT / "data/squad/dev-v2.0.sample.json"), "limit": 30})
    config_file = tmp / "deploy.yaml"
    import yaml

    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**prefect_server.env, "QA_WORK_POOL": "test-pool", "QA_DEPLOY_CONFIG": str(config_file),
           "QA_RETRAIN_CRON": "30 3 * * *", "QA_RETRAIN_TZ": "Europe/Paris", "QA_PIPELINE_STORE": str(tmp / "store"),
           "QA_PIPELINE_NO_PROGRESS": "1"}
    prefect = str(Path(sys.executable).parent / "prefect")
    subprocess.run([prefect, "work-pool", "create", "test-pool", "--type", "process"], env=env, check=True,
                   capture_output=True)
    out = subprocess.run([sys.executable, "-m", "qa_lib.cli", "deploy", "--work-pool", "test-pool"], cwd=ROOT,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    worker_log = open(tmp / "worker.log", "w")
    worker = subprocess.Popen([prefect, "worker", "start", "--pool", "test-pool", "--type", "process"], cwd=ROOT,
                              env=env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True)
    yield {"cfg": cfg, "tmp": tmp, "env": env, "registered": out.stdout}
    os.killpg(worker.pid, 15)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:  # still winding down a flow-run child under load: stop it hard
        os.killpg(worker.pid, 9)
        worker.wait(30)


def _deployment(name):
    with get_client(sync_client=True) as c:
        return c.read_deployment_by_name(name)


def _wait_run(run_id, timeout=400):
    def done():
        with get_client(sync_client=True) as c:
            run = c.read_flow_run(run_id)
        return run if run.state.is_final() else None
    return _wait(done, timeout, 2)


def test_registered_with_schedule_and_concurrency(deployed):
    assert "train_qa/train-qa" in deployed["registered"]
    retrain = _deployment("retrain/retrain")
    assert retrain.work_pool_name == "test-pool"
    crons = [(s.schedule.cron, s.schedule.timezone) for s in retrain.schedules]
    assert crons == [("30 3 * * *", "Europe/Paris")]
    assert retrain.global_concurrency_limit is not None and retrain.global_concurrency_limit.limit == 1
    train = _deployment("train_qa/train-qa")
    assert train.parameters["config"]["max_length"] == 128  # the UI form's defaults


def test_run_triggered_like_the_ui_with_overrides(deployed):
    from prefect.deployments import run_deployment

    cfg = deployed["cfg"].model_dump(mode="json")
    cfg["n_best_size"] = 7
    run = run_deployment("train_qa/train-qa", parameters={"config": cfg}, timeout=0)
    final = _wait_run(run.id)
    assert final is not None and final.state.is_completed(), final and final.state
    assert final.parameters["config"]["n_best_size"] == 7
    arts = artifacts(run.id)
    rows = {r["metric"]: r["value"] for r in (json.loads(arts["qa-metrics"].data)
                                              if isinstance(arts["qa-metrics"].data, str) else arts["qa-metrics"].data)}
    assert rows["total"] == 30 and "f1" in rows


def test_data_landed_event_starts_a_retrain(deployed):
    from prefect.events import emit_event

    retrain = _deployment("retrain/retrain")
    time.sleep(5)  # let the automation for the trigger load
    emit_event(event="qa-pipeline.training-data.landed", resource={"prefect.resource.id": "qa-pipeline.dataset.squad"})

    def created():
        with get_client(sync_client=True) as c:
            from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

            runs = c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[retrain.id])))
        # Nightly runs are scheduled hours ahead; the event's run is due now.
        soon = datetime.now(timezone.utc) + timedelta(minutes=2)
        return [r for r in runs if r.expected_start_time and r.expected_start_time <= soon]

    runs = _wait(created, 120, 2)
    assert runs, "no retrain run created by the event"
    final = _wait_run(runs[0].id, 400)
    assert final is not None and final.state.is_completed(), final and final.state
    assert (deployed["tmp"] / "published" / "champion.json").exists()
