"""`qa-pipeline train | retrain` as a user runs them: a YAML config, overrides, printed results, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import yaml

from cli.main import main
from qa_lib.data import load_examples
from qa_lib.errors import DataError
from tests.conftest import DEV_V1, DEV_V2, TRAIN_V1


def test_train_then_retrain_from_the_command_line(prefect_server, tiny_model, tmp_path, capsys):
    from tests.flow_helpers import tiny_config

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_model, tmp_path / "out").model_dump(mode="json")))
    store = ["--store", str(tmp_path / "store")]

    # A dry run checks and plans: every stage to compute, and nothing run.
    assert main(["train", str(config), "n_best_size=10", "--dry-run", *store]) == 0
    out, err = capsys.readouterr()
    assert "examples/s" not in err  # no progress bars around the plan
    planned = _planned(out)
    # The data not yet stored was read and validated, as the run's first stages will.
    assert [line.endswith(" examples, valid)") for line in out.splitlines()[1:]] == [True] * 2 + [False] * 6
    assert [p[0] for p in planned] == ["data", "data", "features", "features", "model", "logits", "predictions",
                                       "metrics"]
    assert all(p[2] == "to compute" for p in planned)
    assert not (tmp_path / "store").exists() and not (tmp_path / "out").exists()

    assert main(["train", str(config), "n_best_size=10", *store]) == 0
    out = capsys.readouterr().out
    # The run computed exactly the stages the dry run named, under those keys; now they are all stored.
    assert main(["train", str(config), "n_best_size=10", "--dry-run", *store]) == 0
    again = _planned(capsys.readouterr().out)
    assert [p[:2] for p in again] == [p[:2] for p in planned] and all(p[2] == "stored, reused" for p in again)
    assert all((tmp_path / "store" / stage / key).is_dir() for stage, key, _ in planned)
    assert main(["train", str(config), "n_best_size=5", "--dry-run", *store]) == 0
    changed = [p for p in _planned(capsys.readouterr().out) if p[2] == "to compute"]
    assert [p[0] for p in changed] == ["predictions", "metrics"]  # only post-processing reads n_best_size
    assert "metrics: exact=" in out and "HasAns_f1=" in out
    assert f"model_dir: {tmp_path / 'out' / 'model'}" in out
    assert (tmp_path / "out" / "model" / "config.json").exists()

    pub = tmp_path / "pub"
    # retrain's dry run checks its own needs too: a publish target that cannot be written is one line.
    (tmp_path / "a-file").write_text("")
    assert main(["retrain", str(config), f"publish_target={tmp_path / 'a-file' / 'pub'}", "--dry-run", *store]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["retrain", str(config), f"publish_target={pub}", "n_best_size=10", "--dry-run", *store]) == 0
    out, err = capsys.readouterr()
    assert all(p[2] == "stored, reused" for p in _planned(out)) and "publishes nowhere" not in err
    # train ignores the places retrain publishes to, and its dry run says so (one config serves both).
    assert main(["train", str(config), f"publish_target={pub}", "n_best_size=10", "--dry-run", *store]) == 0
    assert capsys.readouterr().err.startswith("note: train publishes nowhere; publish_target is retrain's")
    assert not (pub / "champion.json").exists() and not (pub / "runs").exists()  # nothing published
    assert main(["retrain", str(config), f"publish_target={pub}", *store]) == 0
    pointer = json.loads((pub / "champion.json").read_text())
    assert f"promoted: {pointer['location']}" in capsys.readouterr().out
    assert main(["retrain", str(config), f"publish_target={pub}", "promote_margin=5", *store]) == 0
    assert "not promoted: f1" in capsys.readouterr().out
    assert json.loads((pub / "champion.json").read_text()) == pointer

    # predict (the answer_qa flow): a file of questions, no answers, ids under its own column name,
    # answered by the champion the config's publish_target holds.
    dev = json.loads(DEV_V2.read_text())
    rows = [{"qid": f"q{i}", "context": p["context"], "question": q["question"]}
            for i, (p, q) in enumerate((p, q) for a in dev["data"] for p in a["paragraphs"] for q in p["qas"][:2])][:30]
    (tmp_path / "new.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["predict", str(config), f"publish_target={pub}", "--questions", str(tmp_path / "new.jsonl"),
            "--column", "id=qid", "-o", str(tmp_path / "answers.json"), *store]
    assert main([*argv, "--dry-run"]) == 0
    planned = _planned(capsys.readouterr().out)
    assert [p[0] for p in planned] == ["data", "features", "logits", "predictions"]
    assert all(p[2] == "to compute" for p in planned) and not (tmp_path / "answers.json").exists()
    assert main(argv) == 0
    out = capsys.readouterr().out
    answers = json.loads((tmp_path / "answers.json").read_text())
    assert sorted(answers) == sorted(r["qid"] for r in rows) and all(isinstance(v, str) for v in answers.values())
    assert f"answers: 30 ({sum(not v for v in answers.values())} with no answer)" in out
    assert f"model_dir: {pointer['location']}/model" in out
    assert main([*argv, "--dry-run"]) == 0
    again = _planned(capsys.readouterr().out)
    assert [p[:2] for p in again] == [p[:2] for p in planned] and all(p[2] == "stored, reused" for p in again)
    assert main(["predict", str(config), "--column", "id=qid", *store]) == 2
    assert capsys.readouterr().err == "error: predict: --column goes with --questions (the config's eval_data has its own columns)\n"


def _planned(out: str) -> list[tuple[str, str, str]]:
    """(stage, key, status) of each stage a dry run lists."""
    lines = out.splitlines()
    assert lines[0].startswith("dry run: every check passed; nothing was run."), out
    return [(entry.split("/")[0], entry.split("/")[1], status.split(" (")[0]) for entry, status in
            (line[19:].split(None, 1) for line in lines[1:])]


def test_command_line_errors_are_one_message_and_exit_2(prefect_server, tiny_model, tmp_path, capsys):
    from tests.flow_helpers import tiny_config

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_model, tmp_path / "out").model_dump(mode="json")))
    assert main(["train", str(config), "doc_stride=500"]) == 2
    assert "doc_stride (500) must be smaller than max_length" in capsys.readouterr().err
    assert main(["retrain", str(config), "--store", str(tmp_path / "store")]) == 2
    assert "retrain needs publish_target" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    # A dry run makes the same checks: a missing eval file is one line, and no stage is listed.
    assert main(["evaluate", str(config), "eval_data.path=nowhere.json", "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: nowhere.json: file or folder not found (relative to {Path.cwd()})\n"
    assert "dry run" not in captured.out
    # ... and so is data the run would refuse at its first stage: the dry run reads it, too.
    bad = json.loads(DEV_V1.read_text())
    qa = bad["data"][0]["paragraphs"][0]["qas"][0]
    qa["answers"][0]["answer_start"] += 1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["evaluate", str(config), f"eval_data.path={tmp_path / 'bad.json'}", "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {tmp_path / 'bad.json'}: {qa['id']}: answer 1 ") and not captured.out
    # ... and a question that leaves its context no room in the eval window (the eval features' check).
    qa["answers"][0]["answer_start"] -= 1
    qa["question"] = "why " * 400
    (tmp_path / "long.json").write_text(json.dumps(bad))
    assert main(["evaluate", str(config), f"eval_data.path={tmp_path / 'long.json'}", "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: features: example {qa['id']}: the question is 400 tokens") and not captured.out
    # A run whose loss goes NaN stops there with one line, and publishes nothing.
    assert main(["train", str(config), "learning_rate=1e10", "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: training diverged: the loss was nan at step "), err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "model").exists()


def _interrupt_a_training_run(tiny_model, tmp_path, env, send=None):
    """Start `qa-pipeline train` in a process group of its own, send the group SIGINT (what Ctrl-C in
    a terminal does; or call `send(pid)`) once the first training step is logged; the output after
    it, the exit code and the seconds from the signal to exit."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    from tests.conftest import ROOT
    from tests.flow_helpers import tiny_config

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_model, tmp_path / "out", max_steps=10**6,
                                                 save_steps=10**6).model_dump(mode="json")))
    proc = subprocess.Popen([sys.executable, "-m", "cli", "train", str(config), "--store", str(tmp_path / "store")],
                            cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1", "PREFECT_LOGGING_LEVEL": "INFO"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # If no step is ever logged, the run is killed so that the reading below ends (and the test fails).
    stuck = threading.Timer(300, lambda: os.killpg(proc.pid, signal.SIGKILL))
    stuck.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "fine-tune" in line and " step " in line:
                break
        else:
            raise AssertionError("the run ended before training:\n" + "".join(lines[-30:]))
        (send or (lambda pid: os.killpg(pid, signal.SIGINT)))(proc.pid)
        interrupted = time.monotonic()
        rest = proc.communicate(timeout=120)[0]
    finally:
        stuck.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return rest, proc.returncode, time.monotonic() - interrupted


def test_ctrl_c_stops_a_run_on_the_temporary_server_at_once(tiny_model, tmp_path):
    """Ctrl-C reaches the whole process group, Prefect's temporary server included; Prefect then
    retried reporting the crash to the stopped server for 145 s and failed with 'Connection refused'.
    Now: the interrupted message, exit 130, within seconds."""
    import os

    from cli.interrupts import INTERRUPTED

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    rest, code, waited = _interrupt_a_training_run(tiny_model, tmp_path, {**env, "PREFECT_HOME": str(tmp_path / "home")})
    assert code == 130, rest[-3000:]
    lines = rest.rstrip().splitlines()
    assert INTERRUPTED in lines and rest.count(INTERRUPTED) == 1, rest[-3000:]
    # After it, at most Prefect's own last word (its exit hook may print it after ours).
    assert all("Stopping temporary server" in line for line in lines[lines.index(INTERRUPTED) + 1:]), rest[-3000:]
    assert "ConnectError" not in rest and "Connection refused" not in rest
    assert "Error logging to API" not in rest and "All connection attempts failed" not in rest, rest[-3000:]
    assert waited < 60, f"{waited:.0f} s from Ctrl-C to exit"  # a bound on a hang, not a speed figure


def test_sigterm_saves_a_checkpoint_and_ends_with_one_line_and_no_orphaned_server(tiny_model, tmp_path):
    """A stopping pod sends SIGTERM to its main process only. Training saves a checkpoint before it
    stops, and the command says so in one line with exit 143. It used to die on the spot: no
    checkpoint, no word, and Prefect's temporary server (its child) left running."""
    import os
    import signal
    import time

    from cli.interrupts import TERMINATED

    def terminate(pid):
        group.append(pid)  # start_new_session: the command's pid is its process group's id
        os.kill(pid, signal.SIGTERM)

    group = []
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    rest, code, _ = _interrupt_a_training_run(tiny_model, tmp_path, {**env, "PREFECT_HOME": str(tmp_path / "home")},
                                              send=terminate)
    assert code == 128 + signal.SIGTERM, rest[-3000:]
    lines = rest.rstrip().splitlines()
    assert TERMINATED in lines and rest.count(TERMINATED) == 1, rest[-3000:]
    assert all("Stopping temporary server" in line for line in lines[lines.index(TERMINATED) + 1:]), rest[-3000:]
    saved = [line for line in lines if "saved in" in line and "stopping for SIGTERM" in line]
    assert len(saved) == 1, rest[-3000:]
    step = saved[0].split("checkpoint-")[1].split()[0]
    assert list((tmp_path / "store").glob(f"work/model/*/checkpoints/checkpoint-{step}/trainer_state.json"))
    # Nothing of the process group is left: the temporary server stopped with the command.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(group[0], 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        os.killpg(group[0], signal.SIGKILL)
        raise AssertionError("the temporary server outlived the terminated command")


def _without_a_server(tiny_model, tmp_path) -> tuple[Path, dict[str, str]]:
    """A tiny run's config file, and an environment with no Prefect server and its own Prefect home."""
    import os

    from tests.flow_helpers import tiny_config

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_model, tmp_path / "out").model_dump(mode="json")))
    env = {**{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}, "PREFECT_HOME": str(tmp_path / "home")}
    return config, env


def test_without_a_server_bad_input_is_one_line_before_prefect_starts(tiny_model, tmp_path):
    """In Prefect's ephemeral mode a bad model or window started the temporary server (8 s), ran the
    flow to its failed preflight task and printed Prefect's log of it around the error line; the
    run's own first checks now come before Prefect, so the one line is all there is."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    config, env = _without_a_server(tiny_model, tmp_path)
    env.update(PYTHONPATH=str(ROOT), PREFECT_LOGGING_LEVEL="INFO")
    # Bad data, too: it was found by the run's load and feature tasks, after the server's start-up.
    duplicated, moved, long_question = (_broken_copy(tmp_path, name) for name in ("duplicated", "moved", "long"))
    cases = [
        (["evaluate", str(config), "--model", str(tmp_path / "none")], f"model folder not found: {tmp_path / 'none'}"),
        (["train", str(config), "max_length=600"], f"max_length (600) is longer than model {tiny_model} can take"),
        (["predict", str(config), "--model", str(tiny_model), "-o", str(tmp_path)], f"{tmp_path}: a folder; give"),
        (["train", str(config), f"train_data.path={ROOT / 'README.md'}"], f"{ROOT / 'README.md'}: unsupported file type"),
        (["train", str(config), f"train_data.path={duplicated[0]}"], f"{duplicated[0]}: {duplicated[1]}: duplicate id"),
        (["evaluate", str(config), "--model", str(tiny_model), f"eval_data.path={moved[0]}"],
         f"{moved[0]}: {moved[1]}: answer 1 ("),
        (["train", str(config), f"train_data.path={long_question[0]}"], f"features: example {long_question[1]}: the "),
        (["predict", str(config), "--model", str(tiny_model), "--questions", str(duplicated[0])],
         f"{duplicated[0]}: {duplicated[1]}: duplicate id"),
        # and retrain's own: its settings and its publish target (checked by its flow's first tasks)
        (["retrain", str(config)], "retrain needs publish_target and eval_data"),
        (["retrain", str(config), f"publish_target={config}/pub"], f"publish target {config}/pub is not writable"),
    ]
    for argv, message in cases:
        proc = subprocess.run([sys.executable, "-m", "cli", *argv], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.startswith(f"error: {message}") and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
        assert proc.stdout == ""


def _broken_copy(folder: Path, how: str) -> tuple[Path, str]:
    """A copy of the dev sample with one thing wrong in its first paragraph, and the id it concerns."""
    raw = json.loads(DEV_V2.read_text())
    qas = raw["data"][0]["paragraphs"][0]["qas"]
    answered = next(q for q in qas if q["answers"])
    if how == "duplicated":
        qas[1]["id"] = qas[0]["id"]
        concerned = qas[0]["id"]
    elif how == "moved":
        answered["answers"][0]["answer_start"] += 1
        concerned = answered["id"]
    else:  # a question of 200 words, in a 128-token window
        answered["question"] = " ".join(["why"] * 200) + "?"
        concerned = answered["id"]
    path = folder / f"{how}.json"
    path.write_text(json.dumps(raw))
    return path, concerned


def test_without_a_server_the_run_reads_the_data_its_first_check_kept(tiny_model, tmp_path):
    """The data checked before Prefect starts is kept in the store under the run's keys, and the run's
    load tasks take it from there instead of reading and validating the files a second time."""
    from qa_lib.config import DataSource
    from qa_lib.preflight import check_and_keep_data, check_and_keep_questions, planned_answer_stages, planned_stages
    from tasks.data import _load_dataset, _load_questions
    from tests.flow_helpers import tiny_config

    store = str(tmp_path / "store")
    config = tiny_config(tiny_model, tmp_path / "out")
    check_and_keep_data(config, True, store=store)
    stages = {slot: (key, stored) for slot, stage, key, stored in planned_stages(config, True, store=store)}
    assert stages["train_data"][1] and stages["eval_data"][1] and not stages["train_features"][1]
    check_and_keep_questions(config, str(tiny_model), store=store)
    questions, _, key, stored = planned_answer_stages(config, str(tiny_model), store=store)[0]
    assert questions == "questions" and stored and key != stages["eval_data"][0]

    # Given a source that is no longer there, each task still answers from the store.
    gone = DataSource(path=str(tmp_path / "gone.json"))
    train = _load_dataset.fn(gone, True, "train", store, "data", stages["train_data"][0])
    assert train == {"stage": "data", "key": stages["train_data"][0], "name": "examples", "kind": "train"}
    assert _load_questions.fn(gone, store, "data", key)["kind"] == "eval"
    kept = datasets.load_from_disk(str(tmp_path / "store" / "data" / stages["eval_data"][0] / "examples"))
    assert list(kept["id"]) == list(load_examples(config.eval_data, default_split="validation")["id"])
    with pytest.raises(DataError, match="gone.json"):  # and a key it lacks is read from the source
        _load_dataset.fn(gone, True, "train", store, "data", "0" * 24)


def test_in_a_terminal_on_a_fresh_machine_a_bad_input_is_still_one_line(tiny_model, tmp_path):
    """Prefect 3.9 prints a telemetry notice on its first import in a terminal, and sends events to
    an outside host: on a fresh machine a bad input's one line came under four lines of it. The
    captured output of the other tests is no terminal, so this one runs the command in a pty."""
    import os
    import pty
    import subprocess
    import sys

    from prefect._internal.analytics.ci_detection import CI_ENV_VARS

    from tests.conftest import ROOT

    config, env = _without_a_server(tiny_model, tmp_path)
    for name in ("DO_NOT_TRACK", *CI_ENV_VARS):  # a CI's variables turn Prefect's telemetry off too
        env.pop(name, None)
    reader, terminal = pty.openpty()
    try:
        try:
            code = subprocess.run([sys.executable, "-m", "cli", "train", str(config), f"model={tmp_path / 'none'}"],
                                  cwd=ROOT, env=env, stdin=terminal, stdout=terminal, stderr=terminal,
                                  timeout=120).returncode
        finally:
            os.close(terminal)  # so that reading ends where the command's output does
        output = b""
        while True:
            try:
                chunk = os.read(reader, 4096)
            except OSError:  # the terminal's other end is closed: all was read
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(reader)
    assert code == 2
    assert output.decode().replace("\r\n", "\n") == f"error: model folder not found: {tmp_path / 'none'}\n", output
    assert not (tmp_path / "home" / ".sdk_telemetry").exists()


CHECK_IMPORTS = """
import sys
from cli.main import main
code = main(sys.argv[1:])
heavy = sorted(name for name in ("prefect", "torch", "transformers", "datasets") if name in sys.modules)
print(code, *heavy)
"""


def test_a_config_error_is_answered_before_prefect_or_torch_is_imported(tiny_model, tmp_path):
    """A mistyped key or value is the commonest bad input; Prefect's import was most of the 3 s it took
    to say so. Each flow command reads the config first, and nothing heavy is imported before."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    config, env = _without_a_server(tiny_model, tmp_path)
    env["QA_PIPELINE_STORE"] = str(tmp_path / "store")
    for command in ("train", "evaluate", "predict", "retrain"):
        proc = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, command, str(config), "lerning_rate=0.1"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.stdout == "2\n", (command, proc.stdout, proc.stderr[-2000:])
        assert proc.stderr.startswith("error: ") and "lerning_rate: unknown key" in proc.stderr, proc.stderr
    # A data file or model folder that is not there: said before datasets or the model libraries are
    # imported (seconds); Prefect is, as it decides whether a server records the failure instead.
    no_file = f"{tmp_path / 'none.json'}: file or folder not found"
    missing = {("train", f"eval_data.path={tmp_path / 'none.json'}"): no_file,
               ("evaluate", f"eval_data.path={tmp_path / 'none.json'}"): no_file,
               ("evaluate", "--model", str(tmp_path / "none")): f"model folder not found: {tmp_path / 'none'}",
               ("predict", "--questions", str(tmp_path / "none.json")): no_file}
    # A store that cannot be written (or an S3 one that cannot be reached) is a request or two to find:
    # it was checked after the model, so it waited for torch and the weights.
    (tmp_path / "a-file").write_text("")
    bad_store = tmp_path / "a-file" / "store"
    for command in ("train", "evaluate", "retrain"):
        target = [f"publish_target={tmp_path / 'published'}"] if command == "retrain" else []  # checked first
        missing[(command, "--store", str(bad_store), *target)] = (f"store {bad_store}: cannot write there: "
                                                                  "Not a directory")
    for (command, *argv), message in missing.items():
        proc = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, command, str(config), *argv],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.stdout == "2 prefect\n", (command, proc.stdout, proc.stderr[-2000:])
        assert proc.stderr == f"error: {message}\n", proc.stderr
    # The check can fail: a valid config goes on to Prefect (the dry run stops before any work).
    proc = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, "train", str(config), "--dry-run"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.stdout.splitlines()[-1].startswith("0 ") and "prefect" in proc.stdout.split(), proc.stdout


def test_answer_s_bad_options_and_inputs_are_answered_before_torch_is_imported(tiny_model, tmp_path):
    """`answer --top-k 0` took 12 s to print its one line: the model libraries were imported first.
    Each option, an empty question, a missing context file or model folder, and an output that
    cannot be written is now said before any of them is imported."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "1", "question": "Who won?", "context": "The Broncos won."}\n')
    one = ["--question", "Who won?", "--context", "The Broncos won."]
    cases = {
        "--top-k (0) must be at least 1": [*one, "--top-k", "0"],
        "--max-answer-len (0) must be at least 1": [*one, "--max-answer-len", "0"],
        "--batch-size (0) must be at least 1": ["--questions", str(questions), "--batch-size", "0"],
        "--doc-stride (384) must be at least 0 and smaller than --max-length (384)":
            ["--questions", str(questions), "--max-length", "384", "--doc-stride", "384"],
        "answer: the question is empty": ["--question", " ", "--context", "The Broncos won."],
        "file not found": ["--question", "Who won?", "--context-file", str(tmp_path / "none.txt")],
        "cannot write here": ["--questions", str(questions), "--output", str(questions / "a.json")],
    }
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home")}
    for message, argv in cases.items():
        proc = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, "answer", "--model", str(tiny_model), *argv],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.stdout == "2\n", (argv, proc.stdout, proc.stderr[-2000:])
        assert proc.stderr.startswith("error: ") and message in proc.stderr, (argv, proc.stderr)
    proc = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, "answer", "--model", str(tmp_path / "none"), *one],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout == "2\n" and "model folder not found" in proc.stderr, (proc.stdout, proc.stderr)
    # The check can fail: with every option and input good, answering goes on to the model libraries.
    proc = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, "answer", "--model", str(tiny_model), *one],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert {"torch", "transformers"} <= set(proc.stdout.split()), (proc.stdout, proc.stderr[-2000:])


def test_ctrl_c_on_a_server_records_the_run_as_crashed(prefect_server, tiny_model, tmp_path):
    """With a server of its own the run's end is recorded (not left Running), then the same exit."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    from cli.interrupts import INTERRUPTED

    rest, code, _ = _interrupt_a_training_run(tiny_model, tmp_path, prefect_server.env)
    assert code == 130, rest[-3000:]
    assert rest.rstrip().splitlines()[-1] == INTERRUPTED and rest.count(INTERRUPTED) == 1
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    with get_client(sync_client=True) as client:
        # Runs that started: the deployments' tests leave scheduled runs (no start time) on this server.
        started = FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False))
        run = client.read_flow_runs(flow_run_filter=started, sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
    assert run.state.name == "Crashed"


def test_the_summary_says_when_there_are_no_metrics(capsys):
    from cli.runs import print_summary

    print_summary({"metrics": {}, "model_dir": "/m"})
    print_summary({"metrics": {"exact_match": 47.904191616766, "f1": 56.2}, "model_dir": "/m"})
    assert capsys.readouterr().out.splitlines() == [
        "metrics: none (no eval_data)", "model_dir: /m", "metrics: exact_match=47.90  f1=56.20", "model_dir: /m"]


def test_a_home_that_cannot_be_written(prefect_server, tiny_model, tmp_path):
    """A read-only home, as in a pod with a read-only root filesystem (here: a home under a file, which
    not even root can write). With a server: the run works, and its cache records live in the store
    (they went to ~/.prefect/storage: a traceback per task, and nothing cached for the rerun).
    Without one: one line, at once (the temporary server never started, and Prefect waited out its
    startup timeout, 3 minutes, before "Timed out ... ephemeral Prefect API server")."""
    import os
    import subprocess
    import sys

    (tmp_path / "file").write_text("")
    home = tmp_path / "file" / "home"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(tiny_model), "train_data": {"path": str(TRAIN_V1), "limit": 16},
        "eval_data": {"path": str(DEV_V1), "limit": 8}, "max_steps": 2, "max_length": 128, "doc_stride": 48,
        "output_dir": str(tmp_path / "out")}))
    env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(tmp_path / "mpl"),
           "PREFECT_API_URL": prefect_server.url}
    env.pop("PREFECT_HOME", None)
    argv = [sys.executable, "-m", "cli", "train", str(config), "--store", str(tmp_path / "store")]
    runs = [subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert any((tmp_path / "store" / "prefect-results").iterdir())
    stages = [line for line in runs[1].stderr.splitlines() if "Finished in state" in line
              and any(f"Task run '{name}-" in line for name in ("load-dataset", "build-features", "fine-tune"))]
    assert len(stages) == 5 and all("Cached" in line for line in stages), runs[1].stderr[-3000:]

    del env["PREFECT_API_URL"]
    bare = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert bare.returncode == 2
    assert bare.stderr == (f"error: {home / '.prefect'}: cannot write the temporary Prefect server's database there "
                           "(Not a directory); set PREFECT_HOME to a writable folder, or PREFECT_API_URL to a running "
                           "server\n")


def test_version_names_the_package_and_the_libraries_that_decide_results(capsys):
    from importlib.metadata import version

    import pytest

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    line = capsys.readouterr().out
    assert line == (f"qa-pipeline {version('qa-pipeline')} (torch {version('torch')}, transformers "
                    f"{version('transformers')}, tokenizers {version('tokenizers')}, datasets {version('datasets')}, "
                    f"prefect {version('prefect')})\n")


def test_a_dry_run_plan_counts_one_example_in_the_singular(capsys):
    """`predict --questions one.json --dry-run` printed "(1 examples, valid)"."""
    from cli.runs import _print_plan

    _print_plan("/store", [("questions", "data", "a" * 24, False), ("eval_data", "data", "b" * 24, True)],
                {"questions": 1, "eval_data": 1200})
    out = capsys.readouterr().out
    assert f"data/{'a' * 24}" in out and "to compute (1 example, valid)" in out
    assert "stored, reused (1,200 examples, valid)" in out


def test_output_cut_short_by_its_reader_is_no_error(tmp_path):
    """`qa-pipeline score ... | head -1`: the reader closing the pipe ends the command as such a
    command ends (exit 128 + SIGPIPE), quietly; it was 'error: BrokenPipeError ...' on stderr."""
    import os
    import signal
    import subprocess
    import sys

    ids = [q["id"] for a in json.loads(DEV_V1.read_text())["data"] for p in a["paragraphs"] for q in p["qas"]]
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({k: "Denver Broncos" for k in ids}))
    argv = [sys.executable, "-m", "cli", "score", str(DEV_V1), str(preds)]
    read, write = os.pipe()
    os.close(read)  # gone before the first line: every write to the pipe fails
    try:
        proc = subprocess.run(argv, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (128 + signal.SIGPIPE, "")
    # With a reader, the same command prints its scores.
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["exact_match"] > 0, proc.stderr


def test_console_lines_from_another_thread_are_written_above_the_progress_bar():
    """A checkpoint upload logs from its own thread while the Trainer's bar is drawn: the bar is
    cleared for the line and drawn again under it, not continued by it."""
    import io
    import logging
    import threading

    from prefect.logging.handlers import PrefectConsoleHandler
    from tqdm import tqdm

    from flows.console import lines_above_bars

    lines_above_bars()
    terminal = io.StringIO()
    logger = logging.getLogger("qa-test-bars")
    logger.propagate, handler = False, PrefectConsoleHandler(stream=terminal)
    logger.addHandler(handler)
    try:
        with tqdm(total=10, desc="training", file=terminal, mininterval=0) as bar:
            bar.update(3)
            thread = threading.Thread(target=logger.warning, args=("checkpoint at step 3 saved",))
            thread.start()
            thread.join()
            before, line, after = terminal.getvalue().partition("checkpoint at step 3 saved")
    finally:
        logger.removeHandler(handler)
    assert line and "training" in before
    assert before.endswith("\r"), repr(before[-40:])  # the bar cleared: the line starts a line of its own
    assert "3/10" in after  # and the bar drawn again under it
