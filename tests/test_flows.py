"""The flows against a real Prefect API server: states, caching, artifacts, retries, resume, locking."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect import flow

from flows.evaluate_qa import evaluate_qa
from flows.train_qa import train_qa
from qa_lib.cpu_precision import native_bf16_cpu
from qa_lib.errors import DataError
from tests.conftest import DEV_V2, ROOT, TRAIN_V1
from tests.flow_helpers import artifacts, read_logs, task_runs, task_states, tiny_config

STAGES = ["load-dataset", "build-features", "fine-tune", "predict", "post-process", "compute-metrics"]


def _run(cfg, store):
    state = train_qa(config=cfg, store_root=str(store), return_state=True)
    return state.result(), state.state_details.flow_run_id


@pytest.fixture(scope="module")
def first_run(prefect_server, tiny_model, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    out = tmp_path_factory.mktemp("out")
    cfg = tiny_config(tiny_model, out)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tasks.evaluate.PREDICT_LOG_EVERY_S", 0.0)  # a line per batch, as a long prediction logs
        result, run_id = _run(cfg, store)
    return cfg, store, result, run_id


def test_first_run_completes_every_stage(first_run):
    cfg, store, result, run_id = first_run
    states = task_states(run_id)
    for stage in STAGES:
        assert set(states[stage]) == {"Completed"}, (stage, states)
    assert states["load-dataset"] == ["Completed", "Completed"]  # train and eval data
    assert set(result["metrics"]) >= {"exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"}
    model_dir = Path(result["model_dir"])
    from transformers import AutoModelForQuestionAnswering

    AutoModelForQuestionAnswering.from_pretrained(model_dir)
    preds = json.loads((Path(cfg.output_dir) / "predictions" / "predictions.json").read_text())
    assert len(preds) == 60


def test_artifacts(first_run):
    cfg, store, result, run_id = first_run
    arts = artifacts(run_id)
    table = json.loads(arts["qa-metrics"].data) if isinstance(arts["qa-metrics"].data, str) else arts["qa-metrics"].data
    rows = {r["metric"]: r["value"] for r in table}
    assert rows["f1"] == pytest.approx(result["metrics"]["f1"], abs=1e-3)
    assert rows["NoAns_total"] == result["metrics"]["NoAns_total"]
    summary = arts["qa-run-summary"].data
    assert result["train_data_key"] in summary and result["model_key"] in summary
    assert "data:image/png;base64," in summary and "fine-tune" in summary  # plot + timings per step
    assert arts["training-progress"].data == 100.0
    assert arts["prediction-progress"].data == 100.0
    assert (Path(cfg.output_dir) / "artifacts" / "loss_f1.png").read_bytes()[:4] == b"\x89PNG"


def test_prediction_reports_its_progress_to_the_run(first_run):
    """A worker has no progress bar: prediction logs the features done, their rate and the time left."""
    cfg, store, result, run_id = first_run
    # The last batch's line: "about 0 s left" can close an earlier one too (at 400 features/s, 28 to go), and
    # logs reach the server in batches, so waiting for it alone could read before the last line came.
    logs = read_logs(run_id, until="(100 % of the tokens)")
    lines = [line for line in logs.splitlines() if line.startswith("predicted ")]
    counts = [tuple(int(n) for n in line.split()[1:4:2]) for line in lines]  # (done, total)
    total = counts[-1][1]
    assert [done for done, _ in counts] == [min(k, total) for k in range(32, total + 32, 32)], lines
    assert {t for _, t in counts} == {total} and total >= 60  # every eval question, each one window or more
    assert f"predicted {total} of {total} features (100 % of the tokens) in " in lines[-1], lines[-1]
    assert "features/s, about 0 s left" in lines[-1], lines[-1]


def test_a_data_parallel_training_reports_its_progress_to_the_run(prefect_server, tiny_model, tmp_path, monkeypatch):
    """On a multi-GPU worker the ranks train in processes of their own (2 CPU processes here): the
    run's log still says each step's loss and the progress artifact reaches 100 %, as in-process."""
    monkeypatch.setenv("QA_PIPELINE_NPROC", "2")
    cfg = tiny_config(tiny_model, tmp_path / "out", eval_data=None, max_steps=3)
    _, run_id = _run(cfg, tmp_path / "store")
    logs = read_logs(run_id, until="trained on padded batches")  # fine-tune's last line
    assert "launching data-parallel training on 2 processes" in logs
    assert "trained on padded batches, fp32 in 2 processes" in logs  # as the Trainer counted them
    # Before it trains, a run that auto put in fp32 on a CPU with bf16 instructions says bf16 is faster there.
    assert ("precision=bf16 trains faster here" in logs.split("launching data-parallel")[0]) == native_bf16_cpu()
    steps = [line for line in logs.splitlines() if line.startswith("step ")]
    assert [line.split(" loss")[0] for line in steps] == ["step 1/3", "step 2/3", "step 3/3"], logs
    # Timed from the first loss logged: the lines after it say the time a step and the time left.
    assert re.fullmatch(r"step 1/3 loss [\d.]+", steps[0]), steps
    assert re.fullmatch(r"step 2/3 loss [\d.]+ \(\d+\.\d\d s a step, about \d+ s left\)", steps[1]), steps
    assert steps[2].endswith(" s a step, about 0 s left)"), steps
    assert artifacts(run_id)["training-progress"].data == 100.0


def test_unchanged_rerun_is_all_cached(first_run):
    cfg, store, result, _ = first_run
    t = time.perf_counter()
    again, run_id = _run(cfg, store)
    elapsed = time.perf_counter() - t
    states = task_states(run_id)
    for stage in STAGES:
        assert set(states[stage]) == {"Cached"}, (stage, states)
    assert again["metrics"] == result["metrics"]
    print(f"cached rerun: {elapsed:.1f}s")


def test_a_train_run_whose_config_names_publish_places_says_it_publishes_nowhere(first_run, tmp_path):
    """One config often serves train and retrain: a train run with publish_target and hub_repo_id
    set finished without a word, and the push it seemed to ask for was looked for on the Hub. They
    do not key any stage: the rerun is cached, and says so in its log."""
    cfg, store, result, _ = first_run
    named = cfg.model_copy(update={"publish_target": str(tmp_path / "registry"), "hub_repo_id": "org/qa-model"})
    again, run_id = _run(named, store)
    assert set(task_states(run_id)["fine-tune"]) == {"Cached"} and again["model_key"] == result["model_key"]
    logs = read_logs(run_id, until="publishes nowhere")
    assert ("train publishes nowhere; publish_target and hub_repo_id are retrain's, which gates the model against the "
            f"champion, promotes it and pushes it (qa-pipeline retrain); this run's model stays in {cfg.output_dir}") in logs
    assert not (tmp_path / "registry").exists()


def test_doc_stride_change_rebuilds_from_features_not_data(first_run):
    cfg, store, _, _ = first_run
    _, run_id = _run(cfg.model_copy(update={"doc_stride": 32}), store)
    states = task_states(run_id)
    assert states["load-dataset"] == ["Cached", "Cached"]
    # Train windows are rebuilt; eval windows have their own stride (eval_doc_stride) and are reused.
    assert states["build-features"] == ["Completed", "Cached"]
    for stage in ["fine-tune", "predict", "post-process", "compute-metrics"]:
        assert states[stage] == ["Completed"], (stage, states)


def test_n_best_change_reruns_postprocess_and_metrics_only(first_run):
    cfg, store, _, _ = first_run
    _, run_id = _run(cfg.model_copy(update={"n_best_size": 5}), store)
    states = task_states(run_id)
    for stage in ["load-dataset", "build-features", "fine-tune", "predict"]:
        assert set(states[stage]) == {"Cached"}, (stage, states)
    assert states["post-process"] == ["Completed"] and states["compute-metrics"] == ["Completed"]


def test_deleted_store_folder_is_rebuilt_not_served_from_cache(first_run):
    import shutil

    cfg, store, _, _ = first_run
    shutil.rmtree(store / "logits")
    _, run_id = _run(cfg, store)
    states = task_states(run_id)
    assert states["predict"] == ["Completed"] and states["fine-tune"] == ["Cached"]


def test_validation_error_fails_at_once_without_retry(prefect_server, tiny_model, tmp_path):
    doc = json.loads(TRAIN_V1.read_text())
    qa = doc["data"][0]["paragraphs"][0]["qas"][0]
    qa["answers"][0]["answer_start"] += 5
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    cfg = tiny_config(tiny_model, tmp_path / "out", train_data={"path": str(bad)})
    state = train_qa(config=cfg, store_root=str(tmp_path / "store"), return_state=True)
    assert state.is_failed()
    with pytest.raises(DataError, match=qa["id"]):
        state.result()
    runs = {r.name.rsplit("-", 1)[0]: r for r in task_runs(state.state_details.flow_run_id)}
    assert runs["load-dataset"].run_count == 1 and runs["load-dataset"].state.is_failed()
    assert qa["id"] in runs["load-dataset"].state.message
    assert "fine-tune" not in runs and "build-features" not in runs


def test_bad_eval_data_fails_before_training(prefect_server, tiny_model, tmp_path):
    doc = json.loads(DEV_V2.read_text())
    qa = next(q for q in doc["data"][0]["paragraphs"][0]["qas"] if q["answers"])
    qa["answers"][0]["answer_start"] += 3
    bad = tmp_path / "bad-dev.json"
    bad.write_text(json.dumps(doc))
    cfg = tiny_config(tiny_model, tmp_path / "out", eval_data={"path": str(bad)})
    state = train_qa(config=cfg, store_root=str(tmp_path / "store"), return_state=True)
    assert state.is_failed()
    with pytest.raises(DataError, match=qa["id"]):
        state.result()
    names = [r.name.rsplit("-", 1)[0] for r in task_runs(state.state_details.flow_run_id)]
    assert names.count("load-dataset") == 2
    assert "build-features" not in names and "fine-tune" not in names


def test_the_library_s_warnings_reach_the_run_s_log(prefect_server, tiny_model, tmp_path):
    """qa_lib warns through `logging`, which Prefect does not send to its API: a deployment's run page
    never showed them. A training file with a question flagged impossible that has an answer
    warns as it loads; an eval file that is read as truncated JSON ends the run before anything is
    trained."""
    doc = json.loads(TRAIN_V1.read_text())
    qa = doc["data"][0]["paragraphs"][0]["qas"][0]
    qa["is_impossible"] = True
    flagged = tmp_path / "flagged.json"
    flagged.write_text(json.dumps(doc))
    truncated = tmp_path / "truncated.json"
    truncated.write_text(DEV_V2.read_text()[:5000])
    cfg = tiny_config(tiny_model, tmp_path / "out", train_data={"path": str(flagged), "limit": 8},
                      eval_data={"path": str(truncated)})
    state = train_qa(config=cfg, store_root=str(tmp_path / "store"), return_state=True)
    assert state.is_failed()
    warning = f"1 question(s) marked is_impossible have answers (the first: {qa['id']})"
    assert warning in read_logs(state.state_details.flow_run_id, until=warning)


def test_what_the_store_s_threads_log_is_in_the_run_s_log(prefect_server, tmp_path, monkeypatch):
    """The checkpoint upload thread's notices ("uploading checkpoint-N ...") and the lease renewal
    thread's warning reach the run's log: the handler that sends the library's records finds the
    run in the context, which a new thread lacks unless it is given it."""
    from types import SimpleNamespace

    import boto3
    from prefect import get_run_logger
    from transformers import TrainerControl

    from qa_lib.checkpoint_sync import CheckpointToStore
    from qa_lib.store import S3Store
    from tasks.library_logs import send_library_logs
    from tests.s3_services import MotoServer

    monkeypatch.setattr("qa_lib.store.s3.LEASE_TTL_S", 1.0)  # renewed every 0.25 s
    checkpoint = tmp_path / "checkpoints" / "checkpoint-1"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 1}')
    moto = MotoServer().start()
    try:
        for k, v in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1",
                     "QA_S3_ENDPOINT_URL": moto.url}.items():
            monkeypatch.setenv(k, v)
        boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(Bucket="ckpt-logs")

        @flow
        def save_one():
            send_library_logs()
            store = S3Store("s3://ckpt-logs/p", tmp_path / "cache")
            upload = CheckpointToStore(store, "model", "kbg", get_run_logger())
            upload.on_save(SimpleNamespace(output_dir=str(checkpoint.parent), process_index=0),
                           SimpleNamespace(global_step=1), TrainerControl())
            went_on = upload._thread is not None  # training would go on meanwhile
            upload.wait()
            with store.lease("model", "kbg") as lease:
                store.s3.delete_object(Bucket="ckpt-logs", Key="p/locks/model-kbg.json")  # as if taken over
                deadline = time.time() + 30
                while not lease.lost and time.time() < deadline:
                    time.sleep(0.05)
            return went_on and lease.lost

        state = save_one(return_state=True)
    finally:
        moto.stop()
    assert state.result() is True
    logs = read_logs(state.state_details.flow_run_id, until="checkpoint at step 1 saved")
    assert "uploading checkpoint-1 of model/kbg to s3://ckpt-logs/p: 18 B in 1 file" in logs, logs
    assert "was taken over: this worker stalled past 1 s" in read_logs(state.state_details.flow_run_id,
                                                                        until="was taken over"), logs


def test_the_library_s_logger_gets_one_api_handler_whatever_prefect_already_gives_it():
    """Named in PREFECT_LOGGING_EXTRA_LOGGERS, `qa_lib` has Prefect's own API handler: ours as well
    would send each record twice. Otherwise ours, once however many flows start."""
    import logging

    from prefect.settings import PREFECT_LOGGING_EXTRA_LOGGERS, temporary_settings

    from tasks import library_logs

    library = logging.getLogger("qa_lib")
    ours = [h for h in library.handlers if isinstance(h, library_logs._InRunsOnly)]
    for handler in ours:
        library.removeHandler(handler)
    try:
        with temporary_settings({PREFECT_LOGGING_EXTRA_LOGGERS: "qa_lib"}):
            library_logs.send_library_logs()
        assert not [h for h in library.handlers if isinstance(h, library_logs._InRunsOnly)]
        library_logs.send_library_logs()
        library_logs.send_library_logs()
        assert len([h for h in library.handlers if isinstance(h, library_logs._InRunsOnly)]) == 1
    finally:
        for handler in [h for h in library.handlers if isinstance(h, library_logs._InRunsOnly)]:
            library.removeHandler(handler)
        for handler in ours:
            library.addHandler(handler)


def test_eval_windows_that_cannot_be_built_fail_before_training(prefect_server, tiny_model, tmp_path):
    """An eval question that leaves no room for its context in the eval window: the eval features
    used to be built after training, so this failed only once the training was done."""
    doc = json.loads(DEV_V2.read_text())
    qa = doc["data"][0]["paragraphs"][0]["qas"][0]
    qa["question"] = "why " * 400
    long = tmp_path / "long-question-dev.json"
    long.write_text(json.dumps(doc))
    cfg = tiny_config(tiny_model, tmp_path / "out", eval_data={"path": str(long)})
    state = train_qa(config=cfg, store_root=str(tmp_path / "store"), return_state=True)
    assert state.is_failed()
    with pytest.raises(DataError, match=f"example {qa['id']}: the question is 400 tokens"):
        state.result()
    runs = [r for r in task_runs(state.state_details.flow_run_id)]
    names = [r.name.rsplit("-", 1)[0] for r in runs]
    assert names.count("build-features") == 2 and "fine-tune" not in names
    assert all(r.run_count == 1 for r in runs)  # a DataError is not retried


def test_publishing_to_output_dir_swaps_model_and_predictions_and_keeps_the_rest(tmp_path):
    """output_dir is the user's folder: the whole folder used to be swapped for one holding only
    model/ and predictions/, so `output_dir: .` deleted everything else in it."""
    from qa_lib.store import open_store
    from tasks.publish import publish_local

    store = open_store(str(tmp_path / "store"))
    for stage, files in (("model", {"config.json": "{}", "model.safetensors": "new"}),
                         ("predictions", {"predictions.json": "{}"})):
        with store.writing(stage, "k1") as folder:
            (folder / stage).mkdir()
            for name, text in files.items():
                (folder / stage / name).write_text(text)
    out = tmp_path / "home"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "keep.txt").write_text("mine")
    (out / "evaluation").mkdir()
    (out / "evaluation" / "metrics.json").write_text("{}")
    (out / "model").mkdir()
    (out / "model" / "model.safetensors").write_text("old")
    (out / "model" / "stale.bin").write_text("old")

    done = publish_local.fn(store.location, {"stage": "model", "key": "k1", "name": "model"},
                            {"stage": "predictions", "key": "k1", "name": "predictions"}, str(out))
    assert done == {"model_dir": str(out / "model"), "predictions_dir": str(out / "predictions")}
    assert (out / "notes" / "keep.txt").read_text() == "mine"
    assert (out / "evaluation" / "metrics.json").exists()
    assert sorted(p.name for p in (out / "model").iterdir()) == ["config.json", "model.safetensors"]
    assert (out / "model" / "model.safetensors").read_text() == "new"
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["predictions.json"]
    assert sorted(p.name for p in out.iterdir()) == ["evaluation", "model", "notes", "predictions"]  # no leftovers


def test_unwritable_output_dir_fails_in_preflight(prefect_server, tiny_model, tmp_path):
    from qa_lib.errors import ConfigError

    (tmp_path / "a-file").write_text("")
    cfg = tiny_config(tiny_model, tmp_path / "a-file" / "out")
    state = train_qa(config=cfg, store_root=str(tmp_path / "store"), return_state=True)
    with pytest.raises(ConfigError, match="output_dir: cannot write"):
        state.result()
    assert [r.name.rsplit("-", 1)[0] for r in task_runs(state.state_details.flow_run_id)] == ["preflight"]


def test_transient_failure_is_retried(prefect_server, tiny_model, tmp_path, monkeypatch):
    import tasks.data

    calls = {"n": 0}
    real = tasks.data.load_examples

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("injected: storage connection reset")
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks.data, "load_examples", flaky)
    cfg = tiny_config(tiny_model, tmp_path / "out", eval_data=None)
    state = train_qa(config=cfg, store_root=str(tmp_path / "store"), return_state=True)
    assert state.is_completed()
    runs = [r for r in task_runs(state.state_details.flow_run_id) if r.name.startswith("load-dataset")]
    assert runs[0].run_count == 2 and runs[0].state.is_completed()


def test_flows_run_as_subflows(first_run):
    cfg, store, result, _ = first_run

    @flow
    def nightly(config):
        trained = train_qa(config=config, store_root=str(store))
        evaluated = evaluate_qa(config=config, model=trained["model_dir"], store_root=str(store))
        return trained, evaluated

    trained, evaluated = nightly(cfg)
    assert trained["metrics"] == result["metrics"]
    # Evaluating the published copy gives the same numbers as the pipeline's own evaluation.
    assert evaluated["metrics"]["f1"] == pytest.approx(result["metrics"]["f1"])
    # ...and its answers land beside its metrics, as train's do beside its model.
    out = Path(cfg.output_dir).resolve() / "evaluation"
    assert evaluated["predictions_dir"] == str(out / "predictions")
    answers = json.loads((out / "predictions" / "predictions.json").read_text())
    assert answers == json.loads((Path(trained["predictions_dir"]) / "predictions.json").read_text())
    assert json.loads((out / "metrics.json").read_text())


def _subprocess_train(cfg, store, env, log):
    code = ("import sys, json; from qa_lib.config import PipelineConfig; from flows.train_qa import train_qa;"
            "cfg = PipelineConfig.model_validate_json(sys.argv[1]); print(json.dumps(train_qa(config=cfg, store_root=sys.argv[2])['metrics']))")
    return subprocess.Popen([sys.executable, "-c", code, cfg.model_dump_json(), str(store)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_interrupted_training_resumes_from_checkpoint(prefect_server, tiny_model, tmp_path):
    # The tiny model trains at about 70 steps/s here: 300 steps leave seconds between the first
    # checkpoint and the end, so the kill always lands mid-training.
    cfg = tiny_config(tiny_model, tmp_path / "out", max_steps=300, save_steps=5, eval_data=None)
    store = tmp_path / "store"
    env = {**prefect_server.env, "QA_PIPELINE_NO_PROGRESS": "1"}
    proc = _subprocess_train(cfg, store, env, open(tmp_path / "run1.log", "w"))
    deadline = time.time() + 240
    ckpts: list[Path] = []
    while time.time() < deadline and not ckpts:
        ckpts = list(store.glob("work/model/*/checkpoints/checkpoint-*/trainer_state.json"))
        time.sleep(0.2)
    assert ckpts, (tmp_path / "run1.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # no clean shutdown: like a lost machine
    proc.wait()
    done_before = int(Path(sorted(ckpts)[-1]).parent.name.split("-")[1])
    state = train_qa(config=cfg, store_root=str(store), return_state=True)
    assert state.is_completed()
    result = json.loads(next(store.glob("model/*/train_result.json")).read_text())
    assert result["resumed_from"] and int(result["resumed_from"].rsplit("-", 1)[1]) >= done_before
    steps = [h["step"] for h in result["log_history"] if "loss" in h]
    assert max(steps) == 300
    starts = next(store.glob("work/model/*/events.log")).read_text().count("train-start")
    assert starts == 2  # the killed attempt and the resumed one


def test_concurrent_runs_train_once(prefect_server, tiny_model, tmp_path):
    cfg = tiny_config(tiny_model, tmp_path / "out", max_steps=60, eval_data=None)
    store = tmp_path / "store"
    env = {**prefect_server.env, "QA_PIPELINE_NO_PROGRESS": "1"}
    procs = [_subprocess_train(cfg, store, env, open(tmp_path / f"run{i}.log", "w")) for i in range(2)]
    for p in procs:
        assert p.wait(300) == 0, [(tmp_path / f"run{i}.log").read_text()[-6000:] for i in range(2)]
    events = list(store.glob("work/model/*/events.log"))
    assert len(events) == 1
    assert events[0].read_text().count("train-start") == 1


def test_store_keeps_the_first_complete_folder(tmp_path):
    from qa_lib.store import LocalStore as Store

    store = Store(tmp_path)
    with store.writing("features", "k") as a:
        (a / "x").write_text("first")
        with store.writing("features", "k") as b:  # a concurrent writer finishing first
            (b / "x").write_text("second")
    assert (store.path("features", "k") / "x").read_text() == "second"
    assert store.has("features", "k") and len(list((tmp_path / "features").iterdir())) == 1


def test_paths_in_artifacts_are_absolute(prefect_server, tiny_model, tmp_path, monkeypatch):
    """A relative output_dir is the worker's folder: the UI reader is elsewhere, so artifacts say where in full."""
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tiny_model, Path("rel-out"))
    result, run_id = _run(cfg, tmp_path / "store")
    plot = tmp_path / "rel-out" / "artifacts" / "loss_f1.png"
    assert plot.exists() and result["artifacts_dir"] == str(plot.parent)
    assert f"Plot saved at `{plot}`" in artifacts(run_id)["qa-run-summary"].data
    assert Path(result["model_dir"]).is_absolute()


def _questions_file(path: Path, limit: int) -> None:
    """The first `limit` questions of the v2 sample as JSON lines, without answers, ids as `qid`."""
    from qa_lib.data import load_examples

    rows = load_examples(str(DEV_V2)).select(range(limit))
    path.write_text("\n".join(json.dumps({"qid": r["id"], "question": r["question"], "context": r["context"]})
                              for r in rows))


def test_answer_qa_gives_the_evaluations_answers_and_a_rerun_reuses_every_stage(first_run, tmp_path):
    import shutil

    from flows.answer_qa import answer_qa

    cfg, store, result, _ = first_run
    model = tmp_path / "model"
    shutil.copytree(result["model_dir"], model)
    _questions_file(tmp_path / "q.jsonl", 60)
    questions = {"path": str(tmp_path / "q.jsonl"), "columns": {"id": "qid"}}
    out = tmp_path / "answers" / "dev.json"
    state = answer_qa(config=cfg, questions=questions, model=str(model), output=str(out), store_root=str(store),
                      return_state=True)
    done = state.result()
    saved = json.loads(out.read_text())
    # The same 60 questions scored by evaluate_qa (with their answers): the same answers, "" included.
    evaluated = evaluate_qa(config=cfg, model=str(model), store_root=str(store))
    assert saved == json.loads((Path(evaluated["predictions_dir"]) / "predictions.json").read_text())
    assert len(saved) == done["answers"] == 60
    assert done["no_answer"] == sum(1 for a in saved.values() if a == "")
    assert "60 questions answered" in artifacts(state.state_details.flow_run_id)["qa-answers"].data
    assert (Path(cfg.output_dir) / "answers" / "summary.md").exists()

    out.unlink()
    again = answer_qa(config=cfg, questions=questions, model=str(model), output=str(out), store_root=str(store),
                      return_state=True)
    states = task_states(again.state_details.flow_run_id)
    for stage in ("load-questions", "build-features", "predict", "post-process"):
        assert states[stage] == ["Cached"], (stage, states)
    assert states["save-answers"] == ["Completed"] and json.loads(out.read_text()) == saved


def test_answer_qa_answers_with_the_champion_and_fails_bad_input_at_once(first_run, tmp_path):
    import shutil

    from flows.answer_qa import answer_qa
    from qa_lib.errors import ConfigError
    from qa_lib.publish.local import FolderTarget

    cfg, store, result, _ = first_run
    target = FolderTarget(tmp_path / "registry")
    config = cfg.model_copy(update={"publish_target": str(target.root), "output_dir": str(tmp_path / "out")})
    state = answer_qa(config=config, store_root=str(store), return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match=f"^no champion in {target.root} yet \\(retrain promotes one\\)"):
        state.result()
    runs = task_runs(state.state_details.flow_run_id)
    assert [(r.name.rsplit("-", 1)[0], r.run_count) for r in runs] == [("preflight", 1)]  # not retried

    shutil.copytree(result["model_dir"], tmp_path / "registry" / "runs" / "r1" / "model")
    target.put_pointer({"location": target.run_location("r1")}, None)
    done = answer_qa(config=config, store_root=str(store))  # the champion, on the config's eval set
    assert done["model_dir"] == str(tmp_path / "registry" / "runs" / "r1" / "model")
    assert len(json.loads((tmp_path / "out" / "answers" / "predictions.json").read_text())) == 60

    _questions_file(tmp_path / "q.jsonl", 3)
    lines = (tmp_path / "q.jsonl").read_text().splitlines()
    bad_id = json.loads(lines[1])["qid"]
    lines[1] = json.dumps({**json.loads(lines[1]), "question": " "})
    (tmp_path / "bad.jsonl").write_text("\n".join(lines))
    state = answer_qa(config=config, questions={"path": str(tmp_path / "bad.jsonl"), "columns": {"id": "qid"}},
                      output=str(tmp_path / "bad-answers.json"), store_root=str(store), return_state=True)
    assert state.is_failed()
    with pytest.raises(DataError, match=f"bad.jsonl: {bad_id}: empty question"):
        state.result()
    runs = {r.name.rsplit("-", 1)[0]: r for r in task_runs(state.state_details.flow_run_id)}
    assert runs["load-questions"].run_count == 1 and "predict" not in runs
    assert not (tmp_path / "bad-answers.json").exists()
    state = answer_qa(config=config, questions={"path": str(tmp_path / "q.jsonl"), "limit": 0},
                      store_root=str(store), return_state=True)
    with pytest.raises(ConfigError, match="^invalid configuration in the run's parameters: questions.limit: "):
        state.result()
