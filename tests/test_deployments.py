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
from tests.flow_helpers import artifacts, read_logs, tiny_config


def _wait(predicate, timeout, every=1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


# The crash automation's grace here: the shortest that still spans one 30 s heartbeat interval, so
# the dead-machine test waits 45 s for it rather than the default 90.
GRACE_S = 45


@pytest.fixture(scope="module")
def deployed(prefect_server, tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    cfg = tiny_config(tiny_model, tmp / "out", publish_target=str(tmp / "published"), eval_data={
        "path": str(ROOT / "data/squad/dev-v2.0.sample.json"), "limit": 30})
    config_file = tmp / "deploy.yaml"
    import yaml

    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    # --config wins over QA_DEPLOY_CONFIG: the deployments' parameters below are the tiny config's.
    env = {**prefect_server.env, "QA_WORK_POOL": "test-pool", "QA_DEPLOY_CONFIG": "configs/default.yaml",
           "QA_RETRAIN_CRON": "30 3 * * *", "QA_RETRAIN_TZ": "Europe/Paris", "QA_PIPELINE_STORE": str(tmp / "store"),
           "QA_PIPELINE_NO_PROGRESS": "1", "QA_HEARTBEAT_GRACE_S": str(GRACE_S)}
    prefect = str(Path(sys.executable).parent / "prefect")
    subprocess.run([prefect, "work-pool", "create", "test-pool", "--type", "process"], env=env, check=True,
                   capture_output=True)
    out = subprocess.run([sys.executable, "-m", "cli", "deploy", "--work-pool", "test-pool", "--config", str(config_file)],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    worker_log = open(tmp / "worker.log", "w")
    worker = subprocess.Popen([prefect, "worker", "start", "--pool", "test-pool", "--type", "process"], cwd=ROOT,
                              env=env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True)
    yield {"cfg": cfg, "tmp": tmp, "env": env, "registered": out.stdout, "worker": worker}
    if worker.poll() is not None:  # the machine-death test killed it already
        return
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


def test_every_deployment_runs_as_registered(deployed):
    """train-qa and evaluate-qa started with no parameters of their own, retrain's next nightly run
    brought forward to now, then answer-qa with the champion it promoted: each runs with exactly the
    registered parameters, to completion."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, \
        FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.states import Scheduled

    for name in ("train_qa/train-qa", "evaluate_qa/evaluate-qa"):
        run = run_deployment(name, timeout=0)
        final = _wait_run(run.id)
        assert final is not None and final.state.is_completed(), (name, final and final.state)
        assert final.parameters == _deployment(name).parameters, name

    retrain = _deployment("retrain/retrain")

    def nightly():
        with get_client(sync_client=True) as c:
            return c.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[retrain.id])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                    any_=[StateType.SCHEDULED]))))

    scheduled = _wait(nightly, 60, 2)
    assert scheduled, "the scheduler created no nightly retrain run"
    run = min(scheduled, key=lambda r: r.expected_start_time)
    assert run.expected_start_time > datetime.now(timezone.utc) + timedelta(minutes=5)  # really the nightly one
    with get_client(sync_client=True) as c:
        c.set_flow_run_state(run.id, Scheduled(scheduled_time=datetime.now(timezone.utc)), force=True)
    final = _wait_run(run.id, 400)
    assert final is not None and final.state.is_completed(), final and final.state
    assert final.parameters == retrain.parameters

    # With a champion now promoted, answer-qa as registered answers the eval set's questions with it.
    answer = _deployment("answer_qa/answer-qa")
    run = run_deployment("answer_qa/answer-qa", timeout=0)
    final = _wait_run(run.id)
    assert final is not None and final.state.is_completed(), final and final.state
    assert final.parameters == answer.parameters
    saved = json.loads((Path(deployed["cfg"].output_dir) / "answers" / "predictions.json").read_text())
    assert len(saved) == 30 and all(isinstance(a, str) for a in saved.values())
    assert (deployed["tmp"] / "published" / "champion.json").exists()


def test_a_cross_field_mistake_in_the_form_fails_the_run_with_its_one_line(deployed):
    from prefect.deployments import run_deployment

    cfg = deployed["cfg"].model_dump(mode="json")
    cfg["doc_stride"] = 500
    run = run_deployment("train_qa/train-qa", parameters={"config": cfg}, timeout=0)
    final = _wait_run(run.id, 200)
    assert final is not None and final.state.is_failed(), final and final.state
    message = final.state.message
    assert "doc_stride (500) must be smaller than max_length (128)" in message.splitlines()[0], message
    assert len(message.splitlines()) == 1, message


def test_form_marks_valued_fields_required_and_partial_configs_still_run(deployed):
    """The form shows fields that need a value without "(Optional)"; a caller may still send a
    partial config (the flow fills in the defaults) and a wrong type fails the run in one line."""
    from prefect.deployments import run_deployment

    schema = _deployment("train_qa/train-qa").parameter_openapi_schema["definitions"]["PipelineConfig"]
    assert {"model", "learning_rate", "n_best_size", "max_length", "seed", "precision"} <= set(schema["required"])
    assert not {"train_data", "eval_data", "publish_target", "hub_repo_id"} & set(schema["required"])
    partial = deployed["cfg"].model_dump(mode="json", exclude={"n_best_size", "seed", "warmup_ratio", "lr_scheduler_type"})
    run = run_deployment("train_qa/train-qa", parameters={"config": partial}, timeout=0)
    final = _wait_run(run.id)
    assert final is not None and final.state.is_completed(), final and final.state
    wrong = {**partial, "learning_rate": "fast"}
    run = run_deployment("train_qa/train-qa", parameters={"config": wrong}, timeout=0)
    final = _wait_run(run.id, 200)
    assert final is not None and final.state.is_failed(), final and final.state
    assert len(final.state.message.splitlines()) == 1 and "learning_rate" in final.state.message, final.state.message


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


def test_retrain_is_registered_with_what_it_needs_to_run(tmp_path):
    """The shipped default config has no publish_target: retrain gets the project's registry folder
    (it used to be registered without one and fail every night); without an eval set, deploy refuses."""
    from deployments.definitions import DEPLOYMENTS
    from deployments.register import DEFAULT_REGISTRY, deployment_config
    from qa_lib.config import PipelineConfig
    from qa_lib.errors import ConfigError

    default = PipelineConfig.from_yaml(ROOT / "configs" / "default.yaml")
    assert default.publish_target is None
    by_name = {spec["name"]: spec for spec in DEPLOYMENTS}
    retrain = deployment_config(by_name["retrain"], default, "default.yaml")
    assert retrain.publish_target == str(DEFAULT_REGISTRY) and retrain.eval_data == default.eval_data
    assert deployment_config(by_name["train-qa"], default, "default.yaml") == default
    # answer-qa answers with the champion retrain promotes: the same target.
    assert deployment_config(by_name["answer-qa"], default, "default.yaml") == retrain
    chosen = default.model_copy(update={"publish_target": str(tmp_path)})
    assert deployment_config(by_name["retrain"], chosen, "x.yaml").publish_target == str(tmp_path)
    with pytest.raises(ConfigError, match="deploy: retrain .* needs eval_data.* set it in x.yaml"):
        deployment_config(by_name["retrain"], default.model_copy(update={"eval_data": None}), "x.yaml")


@pytest.mark.parametrize("variable, value", [
    ("QA_RETRAIN_TZ", "Mars/Olympus"), ("QA_RETRAIN_CRON", "nightly"), ("QA_RETRAIN_CRON", "61 2 * * *"),
    ("QA_GPUS", "two"), ("QA_GPUS", "-1"), ("QA_HEARTBEAT_GRACE_S", "soon"),
])
def test_a_bad_deploy_setting_is_one_line_before_anything_is_registered(variable, value, capsys, monkeypatch):
    """The server here is a closed port: any call to it before the check would fail otherwise."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from cli.main import main

    monkeypatch.setenv(variable, value)
    # A setting, not the variable: the session's server fixture holds PREFECT_API_URL as a setting.
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert main(["deploy", "--work-pool", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {variable} must be ") and err.count("\n") == 1
    assert value not in err


def test_deploy_registers_the_config_given_by_option_from_where_it_runs(tmp_path, monkeypatch, capsys):
    """`deploy --config`, a path from the working folder, wins over QA_DEPLOY_CONFIG: its problem is
    named, before any server is asked (the closed port would fail otherwise)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from cli.main import main

    (tmp_path / "mine.yaml").write_text("model: x\nlerning_rate: 0.1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QA_DEPLOY_CONFIG", "configs/default.yaml")
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert main(["deploy", "--config", "mine.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "lerning_rate: unknown key; did you mean learning_rate?" in err and "mine.yaml" in err


def test_deploy_needs_a_reachable_server_with_the_pool(prefect_server, tmp_path):
    """Each one line, exit 2, before anything is registered: no server set (a temporary server's
    deployments vanish with it), a server that does not answer (an httpx ConnectError; "RuntimeError:
    Failed to reach API" for train, exit 1), a pool it does not have (Prefect's ValueError, exit 1).
    Run as the user runs them: in-process, Prefect's console handler would keep pytest's stream."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")

    def cli(*argv, api=None):
        return subprocess.run([sys.executable, "-m", "cli", *argv], cwd=ROOT, capture_output=True, text=True,
                              env={**env, **({"PREFECT_API_URL": api} if api else {})})

    alone = cli("deploy")
    assert alone.returncode == 2
    assert alone.stderr.startswith("error: deploy needs a Prefect server to register with: set PREFECT_API_URL")
    closed = "http://127.0.0.1:9/api"
    for argv in (["deploy"], ["train", str(ROOT / "configs/default.yaml")]):
        out = cli(*argv, api=closed)
        assert out.returncode == 2
        assert out.stderr == f"error: cannot reach the Prefect API at {closed} (PREFECT_API_URL): ConnectError\n"
    out = cli("deploy", "--work-pool", "no-such-pool", api=prefect_server.url)
    assert out.returncode == 2
    assert out.stderr == (f"error: work pool 'no-such-pool' not found on {prefect_server.url}: create it first "
                          "(prefect work-pool create no-such-pool --type process)\n")
    # The pool named in the environment, as deployments/definitions.py documents, when --work-pool is not given.
    env["QA_WORK_POOL"] = "pool-from-env"
    out = cli("deploy", api=prefect_server.url)
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: work pool 'pool-from-env' not found on {prefect_server.url}")
    with get_client(sync_client=True) as client:
        assert not [d for d in client.read_deployments() if d.work_pool_name in ("no-such-pool", "pool-from-env")]


def test_numbers_from_the_environment_are_checked_where_they_are_read(monkeypatch):
    from qa_lib.env import env_number
    from qa_lib.errors import ConfigError
    from qa_lib.launch import process_count

    monkeypatch.setenv("QA_PIPELINE_NPROC", "2")
    assert process_count() == 2
    for bad in ("0", "two", "1.5"):
        monkeypatch.setenv("QA_PIPELINE_NPROC", bad)
        with pytest.raises(ConfigError, match="^QA_PIPELINE_NPROC must be a whole number of training processes"):
            process_count()
    monkeypatch.setenv("QA_X", " 2.5 ")
    assert env_number("QA_X", 1.0, 1.0, "x") == 2.5
    for bad in ("nan", "inf", "0.5", ""):
        monkeypatch.setenv("QA_X", bad)
        if bad:
            with pytest.raises(ConfigError, match="^QA_X must be x$"):
                env_number("QA_X", 1.0, 1.0, "x")
        else:
            assert env_number("QA_X", 1.0, 1.0, "x") == 1.0
    # Read when the S3 store is first used: a one-line error, exit 2, not an import traceback.
    out = subprocess.run([sys.executable, "-m", "cli", "store", "ls", "--store", "s3://bucket/qa"], cwd=ROOT,
                         env={**os.environ, "QA_PIPELINE_LEASE_TTL": "two minutes"}, capture_output=True, text=True)
    assert (out.returncode, out.stderr) == (2, "error: QA_PIPELINE_LEASE_TTL must be a number of seconds, 1 or more\n")


def test_the_crash_grace_is_checked_and_a_new_one_updates_the_automation(deployed):
    from prefect.automations import Automation

    from deployments.register import ZOMBIE_AUTOMATION, ensure_zombie_automation, heartbeat_grace
    from qa_lib.errors import ConfigError

    def grace():
        found = Automation.read(name=ZOMBIE_AUTOMATION)
        return found.trigger.within.total_seconds(), found.actions[0].message

    assert grace() == (GRACE_S, f"no heartbeat for {GRACE_S} s: the run's process or machine died")
    for bad in ("30", "1.5", "soon"):
        with pytest.raises(ConfigError, match="QA_HEARTBEAT_GRACE_S must be a whole number of seconds above"):
            heartbeat_grace(bad)
    ensure_zombie_automation(heartbeat_grace("120"))
    assert grace() == (120, "no heartbeat for 120 s: the run's process or machine died")
    ensure_zombie_automation(GRACE_S)  # as registered, for the test below
    assert grace()[0] == GRACE_S
    with get_client(sync_client=True) as c:
        assert len(c.read_automations_by_name(ZOMBIE_AUTOMATION)) == 1  # updated, not added


def test_a_run_cancelled_during_training_ends_cancelled(deployed):
    """The runner cancels a run with a SIGTERM that it counts as a cancel only while Prefect's own
    handler is installed. A training that held the signal to save a checkpoint first ended Crashed;
    under a runner it leaves the signal to Prefect."""
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    cfg = deployed["cfg"].model_dump(mode="json")
    cfg.update(max_steps=100000, save_steps=100000, logging_steps=20)  # trains until cancelled
    run = run_deployment("train_qa/train-qa", parameters={"config": cfg}, timeout=0)
    started = _wait(lambda: [f for f in (deployed["tmp"] / "store").glob("work/model/*/events.log")
                             if f.read_text().count("train-start") and f.stat().st_mtime > run.created.timestamp()],
                    300, 1)
    assert started, "training never started"
    time.sleep(3)
    with get_client(sync_client=True) as c:
        c.set_flow_run_state(run.id, Cancelling(), force=True)  # what the UI's Cancel does
    final = _wait_run(run.id, 120)
    assert final is not None and final.state.is_cancelled(), final and final.state
    assert "saving a checkpoint" not in read_logs(run.id)


def test_a_run_rescheduled_by_its_pods_sigterm_saves_a_checkpoint_first(deployed):
    """A Kubernetes or Docker worker's job runs `prefect flow-run execute`, which, with
    PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule, answers the SIGTERM of an evicted or
    preempted pod by sending its run the intent to reschedule, then SIGTERM. Training saves a
    checkpoint in the store first (the next attempt, on any worker, resumes from it), and the run
    goes back to Scheduled rather than Crashed. The run waits in a paused queue so that the
    module's worker leaves it to the supervisor started here."""
    prefect = str(Path(sys.executable).parent / "prefect")
    env = deployed["env"]
    for verb in ("create", "pause"):
        subprocess.run([prefect, "work-queue", verb, "held", "--pool", "test-pool"], env=env, check=True,
                       capture_output=True)
    cfg = deployed["cfg"].model_dump(mode="json")
    cfg.update(max_steps=100000, save_steps=100000, logging_steps=20, seed=7)  # trains until stopped
    deployment = _deployment("train_qa/train-qa")
    with get_client(sync_client=True) as c:
        run = c.create_flow_run_from_deployment(deployment.id, parameters={"config": cfg}, work_queue_name="held")
    job_env = {k: str(v) for k, v in (deployment.job_variables or {}).get("env", {}).items()}  # as the job gets it
    with open(deployed["tmp"] / "execute.log", "w") as log:
        supervisor = subprocess.Popen([prefect, "flow-run", "execute", str(run.id)], cwd=ROOT, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      env={**env, **job_env, "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR": "reschedule",
                                           "PREFECT_LOGGING_LEVEL": "INFO"})  # the module's WARNING hides the steps
        try:
            def step_logged():
                return "step 20/100000" in read_logs(run.id)
            assert _wait(step_logged, 300, 1), (deployed["tmp"] / "execute.log").read_text()[-3000:]
            supervisor.send_signal(15)  # the pod's main process only, as Kubernetes does
            supervisor.wait(120)
        finally:
            if supervisor.poll() is None:
                os.killpg(supervisor.pid, 9)
    with get_client(sync_client=True) as c:
        state = c.read_flow_run(run.id).state
    logs = read_logs(run.id, until="saved in")
    with get_client(sync_client=True) as c:
        c.delete_flow_run(run.id)  # or the worker would train it for ever once the queue resumes
    assert state.is_scheduled() and state.name == "AwaitingRetry", state
    saved = [line for line in logs.splitlines() if "saved in" in line and "stopping for SIGTERM" in line]
    assert len(saved) == 1 and "saving a checkpoint at step" in logs, logs[-3000:]
    step = saved[0].split("checkpoint-")[1].split()[0]
    checkpoints = list((deployed["tmp"] / "store").glob(f"work/model/*/checkpoints/checkpoint-{step}"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "trainer_state.json").exists()


def test_a_run_whose_machine_dies_is_marked_crashed(deployed):
    """The worker and its flow run killed at once, as when a GPU machine is preempted: nothing is
    left to report a state, so the heartbeat automation that deploy creates marks the run Crashed
    instead of leaving it Running. Runs last: it kills this module's worker."""
    import psutil
    from prefect.deployments import run_deployment

    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    cfg = deployed["cfg"].model_dump(mode="json")
    cfg.update(max_steps=100000, save_steps=100000, logging_steps=1000)  # trains until killed
    run = run_deployment("train_qa/train-qa", parameters={"config": cfg}, timeout=0)

    def training():
        with get_client(sync_client=True) as c:
            state = c.read_flow_run(run.id).state
        return state.is_running() and state
    assert _wait(training, 120, 1), "the run never started"

    def heartbeat():  # the automation watches a run only once it has heard a heartbeat from it
        beats = EventFilter(event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                            resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]))
        with get_client(sync_client=True) as c:
            return c.read_events(beats, limit=1).events  # the server takes at most 50
    assert _wait(heartbeat, 60, 1), "no heartbeat from the run"
    worker = psutil.Process(deployed["worker"].pid)
    for proc in [*worker.children(recursive=True), worker]:
        proc.kill()
    deployed["worker"].wait(30)

    def crashed():
        with get_client(sync_client=True) as c:
            state = c.read_flow_run(run.id).state
        return state.is_crashed() and state
    state = _wait(crashed, GRACE_S + 120, 3)
    assert state, "the dead run was left Running"
    assert f"no heartbeat for {GRACE_S} s" in state.message
