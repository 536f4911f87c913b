"""A corpus of bad inputs through the CLI as a user runs it, against a real Prefect server.

Each must end with exit code 2 and one `error:` line that names the problem and the file (or
field) it is in, before any training; no traceback, no retry, and none of the input's bytes in
anything printed. The cases are run by one driver process (one interpreter start for all of
them), which marks where each begins on both streams.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from tests.conftest import DEV_V1, ROOT, TRAIN_V1

# Planted in every bad file: it must never appear in what the CLI or Prefect prints.
PAYLOAD = "PAYLOAD-7f3a-do-not-echo"


def _squad_with_payload(n_questions: int = 3) -> dict:
    doc = json.loads(TRAIN_V1.read_text())
    para = doc["data"][0]["paragraphs"][0]
    para["context"] = para["context"] + f" {PAYLOAD} café"
    para["qas"] = para["qas"][:n_questions]
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [para]}]}


def _flat_rows() -> list[dict]:
    doc = _squad_with_payload()
    para = doc["data"][0]["paragraphs"][0]
    return [{"id": qa["id"], "context": para["context"], "question": qa["question"],
             "answer_text": qa["answers"][0]["text"], "answer_start": qa["answers"][0]["answer_start"]}
            for qa in para["qas"]]


def _corpus(tmp, tiny_model) -> list[tuple[str, list[str], list[str]]]:
    """(case, CLI arguments, what the error line must say)."""
    squad_text = json.dumps(_squad_with_payload(), ensure_ascii=False)
    files = {
        "latin1.json": squad_text.encode("latin-1"),
        "utf16.json": squad_text.encode("utf-16"),
        "truncated.json": squad_text.encode()[: len(squad_text) // 2],
        "empty.json": b"",
        "broken.jsonl": ("\n".join(json.dumps(r) for r in _flat_rows()[:2]) + "\n{\"id\": \"x\", " + PAYLOAD
                         + "\n").encode(),
        "empty.jsonl": b"\n\n",
        "latin1.jsonl": "\n".join(json.dumps(r, ensure_ascii=False) for r in _flat_rows()).encode("latin-1"),
        "header-only.csv": b"id,context,question,answer_text,answer_start\n",
        "empty.csv": b"",
        "ragged.csv": ("id,context,question,answer_text,answer_start\n"
                       f"a,{PAYLOAD},q,{PAYLOAD},0\nb,{PAYLOAD},q\n").encode(),
    }
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    mismatch = _squad_with_payload()
    # The answer is the planted text, at a wrong start: the error says where it is, not what it is.
    mismatch_para = mismatch["data"][0]["paragraphs"][0]
    mismatch_para["qas"][0]["answers"][0].update(text=PAYLOAD, answer_start=mismatch_para["context"].index(PAYLOAD) - 2)
    (tmp / "mismatch.json").write_text(json.dumps(mismatch))
    bad_id = mismatch["data"][0]["paragraphs"][0]["qas"][0]["id"]

    # An interrupted copy of a trained model: evaluate retried it twice and ended in a SafetensorError traceback.
    truncated_model = tmp / "truncated-model"
    shutil.copytree(tiny_model, truncated_model)
    weights = (truncated_model / "model.safetensors").read_bytes()
    (truncated_model / "model.safetensors").write_bytes(weights[: len(weights) // 2])

    # Weights of one architecture under another's config.json: transformers fills the missing
    # encoder with random values and only logs it, so the run "fine-tuned" from scratch.
    other_architecture = tmp / "other-architecture"
    shutil.copytree(tiny_model, other_architecture)
    model_config = json.loads((other_architecture / "config.json").read_text())
    model_config.update(model_type="electra", architectures=["ElectraForQuestionAnswering"],
                        embedding_size=model_config["hidden_size"])
    (other_architecture / "config.json").write_text(json.dumps(model_config))

    def config(name, **raw):
        raw = {"model": str(tiny_model), "output_dir": str(tmp / "out" / name),
               "train_data": {"path": str(TRAIN_V1), "limit": 8}, "eval_data": {"path": str(DEV_V1), "limit": 8},
               "max_steps": 1, **raw}
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return str(path)

    def train_on(name, **columns):
        source = {"path": str(tmp / name), **({"columns": columns} if columns else {})}
        return ["train", config(name.replace(".", "-"), train_data=source)]

    cases = [
        ("Latin-1 SQuAD JSON", train_on("latin1.json"), ["latin1.json", "not UTF-8", "offset"]),
        ("UTF-16 SQuAD JSON", train_on("utf16.json"), ["utf16.json", "UTF-16 byte-order mark"]),
        ("truncated JSON", train_on("truncated.json"), ["truncated.json", "corrupt or truncated JSON at line 1"]),
        ("empty JSON", train_on("empty.json"), ["empty.json", "empty file"]),
        ("broken JSON line", train_on("broken.jsonl"), ["broken.jsonl", "line 3: not valid JSON"]),
        ("empty JSONL", train_on("empty.jsonl"), ["empty.jsonl", "empty file"]),
        ("Latin-1 JSONL", train_on("latin1.jsonl"), ["latin1.jsonl", "not UTF-8", "line 1"]),
        ("CSV header only", train_on("header-only.csv"), ["header-only.csv", "header only"]),
        ("empty CSV", train_on("empty.csv"), ["empty.csv", "empty file"]),
        ("ragged CSV", train_on("ragged.csv"), ["ragged.csv", "line 3: 3 fields, but the header has 5"]),
        ("answer not at its start", train_on("mismatch.json"), ["mismatch.json", bad_id, "not found at answer_start", "the context has it at"]),
        ("Latin-1 eval file", ["evaluate", config("eval-latin1", eval_data={"path": str(tmp / "latin1.json")}),
                               "--model", str(tiny_model)], ["latin1.json", "not UTF-8"]),
        ("stride not below the window", ["train", config("stride"), "doc_stride=500"],
         ["doc_stride (500) must be smaller than max_length"]),
        ("window longer than the model", ["train", config("long"), "max_length=600"],
         ["max_length (600) is longer than model", "512 positions"]),
        ("fp16 without a GPU", ["train", config("fp16"), "precision=fp16"], ["precision: fp16 needs a CUDA GPU"]),
        ("evaluate a base model", ["evaluate", config("base"), "--model", "all-MiniLM-L6-v2"],
         ["all-MiniLM-L6-v2", "no question-answering head (qa_outputs.weight, qa_outputs.bias)"]),
        ("answer longer than the window", ["train", config("answer-len"), "max_answer_length=100000"],
         ["max_answer_length (100000) is longer than the evaluation window"]),
        ("unknown key", ["train", config("typo"), "lerning_rate=0.1"], ["lerning_rate: unknown key; did you mean learning_rate?"]),
        ("missing model folder", ["train", config("nomodel", model=str(tmp / "no-model"))],
         ["model folder not found", "no-model"]),
        # Taken for a Hub id: with the Hub unreachable, transformers retried each file for ~25 s.
        ("Hub model not in the cache, offline", ["train", config("hub-model", model="org-absent/model-absent")],
         ["model 'org-absent/model-absent': no such folder, not in the Hugging Face cache, and HF_HUB_OFFLINE is set"]),
        # A store folder that cannot be made: it was retried three times, then a FileNotFoundError traceback.
        ("store that cannot be written", ["train", config("store"), "--store", str(tmp / "latin1.json" / "store")],
         [f"store {tmp / 'latin1.json' / 'store'}: cannot write there: Not a directory"]),
        # publish-local replaced the store's model/ and predictions/ stage folders with one run's files.
        ("output_dir is the store", ["train", config("same", output_dir=str(tmp / "same")), "--store", str(tmp / "same")],
         [f"output_dir {tmp / 'same'} and the store {tmp / 'same'} overlap"]),
        ("truncated model weights", ["evaluate", config("truncated"), "--model", str(truncated_model)],
         [f"{truncated_model / 'model.safetensors'}: cannot read these weights", "truncated or corrupt"]),
        ("weights of another architecture", ["train", config("other-arch", model=str(other_architecture))],
         [f"{other_architecture}: ", "electra encoder weights are not in its weight files",
          "do not match config.json's architecture"]),
        # The training file is unreadable too: the missing eval file is named before any data is read.
        ("missing eval file", ["train", config("no-eval", train_data={"path": str(tmp / "latin1.json")},
                                              eval_data={"path": str(tmp / "no-dev.json")})],
         [f"{tmp / 'no-dev.json'}: file or folder not found"]),
        # Paths are checked before the model, whose check loads its weights: a mistyped path is named at once.
        ("missing training file, missing model too", ["train", config("no-train", model=str(tmp / "no-model"),
                                                               train_data={"path": str(tmp / "no-train.json")})],
         [f"{tmp / 'no-train.json'}: file or folder not found"]),
        # A file where the publish target's folder goes: a NotADirectoryError, retried, exit 1.
        ("publish target that cannot be made", ["retrain", config("target", publish_target=str(tmp / "latin1.json" / "pub"))],
         [f"publish target {tmp / 'latin1.json' / 'pub'} is not writable: Not a directory"]),
        ("Latin-1 predictions to score", ["score", str(DEV_V1), str(tmp / "latin1.json")],
         ["latin1.json", "not UTF-8"]),
    ]
    return cases


DRIVER = textwrap.dedent("""
    import json, sys
    from cli.main import main
    for case, argv in json.load(open(sys.argv[1])):
        for stream in (sys.stdout, sys.stderr):
            print(f"=== CASE {case}", file=stream, flush=True)
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
        for stream in (sys.stdout, sys.stderr):
            print(f"=== RC {rc}", file=stream, flush=True)
""")


def _split(text: str) -> dict[str, str]:
    out, case = {}, None
    for line in text.splitlines():
        if line.startswith("=== CASE "):
            case = line.removeprefix("=== CASE ")
            out[case] = ""
        elif case is not None:
            out[case] += line + "\n"
    return out


def test_every_bad_input_is_one_named_line_exit_2_no_traceback_no_retry(prefect_server, tiny_model, tmp_path):
    cases = _corpus(tmp_path, tiny_model)
    plan = tmp_path / "cases.json"
    plan.write_text(json.dumps([(name, argv) for name, argv, _ in cases]))
    env = {**os.environ, "PREFECT_API_URL": prefect_server.url, "PYTHONPATH": str(ROOT),
           "QA_PIPELINE_STORE": str(tmp_path / "store")}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(plan)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    stdout, stderr = _split(proc.stdout), _split(proc.stderr)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, _, expected in cases:
        out, err = stdout.get(name, ""), stderr.get(name, "")
        both = out + err
        assert "=== RC 2" in out, (name, both[-3000:])
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, (name, err[-3000:])
        for text in expected:
            assert text in errors[0], (name, errors[0])
        assert "Traceback" not in both, (name, both[-3000:])
        assert "AwaitingRetry" not in both and "Retrying" not in both, (name, both[-3000:])
        assert PAYLOAD not in both and "café" not in both, (name, both[-3000:])
        assert "Task run 'fine-tune" not in both and "Task run 'build-features" not in both, (name, "work started")


@pytest.mark.parametrize("argv", [
    ["evaluate", "c.yaml", "--model", "m", "--store", "S", "n_best_size=7"],
    ["evaluate", "c.yaml", "--model", "m", "n_best_size=7", "--store", "S"],
    ["evaluate", "c.yaml", "n_best_size=7", "--model", "m", "--store", "S"],
    ["--verbose", "evaluate", "--model", "m", "c.yaml", "--store", "S", "n_best_size=7"],
])
def test_options_and_overrides_in_any_order(argv):
    from cli.main import parse_args

    args = parse_args(argv)
    assert (args.config, args.overrides, args.store, args.model) == ("c.yaml", ["n_best_size=7"], "S", "m")
    assert getattr(args, "verbose", False) == (argv[0] == "--verbose")
    with pytest.raises(SystemExit):
        parse_args(["evaluate", "c.yaml", "--model", "m", "--no-such-option"])
    with pytest.raises(SystemExit):
        parse_args(["score", "d.json", "p.json", "n_best_size=7"])  # score takes no overrides


@pytest.mark.parametrize("command", ["train", "evaluate", "retrain"])
def test_a_missing_config_names_only_the_config(command, capsys):
    """argparse listed the optional overrides as required too: "required: config, overrides"."""
    from cli.main import parse_args

    with pytest.raises(SystemExit) as info:
        parse_args([command])
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith("error: the following arguments are required: config\n")
    assert parse_args([command, "c.yaml"]).overrides == []
