"""Publishing to a real local S3 (moto's server over HTTP), through a fault-injecting proxy."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import pytest

from qa_lib.errors import DataError
from qa_lib.publish.local import PointerChanged
from qa_lib.publish.run import publish_run
from qa_lib.publish.s3_target import S3Target
from qa_lib.store.s3 import S3Store
from qa_lib.s3 import StorageError
from tests.conftest import DEV_V1, ROOT
from tests.s3_services import FaultProxy, MotoServer

CREDS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
         "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def moto():
    server = MotoServer().start()
    old = {k: os.environ.get(k) for k in (*CREDS, "QA_S3_ENDPOINT_URL")}
    os.environ.update(CREDS)
    yield server
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _direct(moto):
    return boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")


@pytest.fixture
def bucket(moto, request):
    name = "qa-" + request.node.name.replace("_", "-")[:40].lower()
    _direct(moto).create_bucket(Bucket=name)
    return name


@pytest.fixture
def via_proxy(moto, monkeypatch):
    proxy = FaultProxy(moto.port, drop=0.08, slow_down=0.08, error=0.04, seed=7).start()
    monkeypatch.setenv("QA_S3_ENDPOINT_URL", proxy.url)
    yield proxy
    proxy.stop()


def _publish(target, tiny_model, run_id, metrics=None):
    return publish_run(target, str(tiny_model), metrics or {"exact_match": 50.0, "f1": 60.0},
                       {"model": "tiny", "hub_token": "hf_SECRET"}, {"train_data": "abc"}, run_id, "dev.json", False)


def test_publish_survives_faults_and_checksums_match(moto, bucket, via_proxy, tiny_model):
    target = S3Target(f"s3://{bucket}/models/qa")
    location = _publish(target, tiny_model, "run-1")
    assert location == f"s3://{bucket}/models/qa/runs/run-1"
    assert via_proxy.faults["drop"] + via_proxy.faults["slow_down"] + via_proxy.faults["error"] > 0
    s3 = _direct(moto)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="models/qa/runs/run-1/manifest.json")["Body"].read())
    assert "model/model.safetensors" in manifest["files"] and "model/README.md" in manifest["files"]
    for rel, meta in manifest["files"].items():
        body = s3.get_object(Bucket=bucket, Key=f"models/qa/runs/run-1/{rel}")["Body"].read()
        import hashlib

        assert len(body) == meta["size"] and hashlib.sha256(body).hexdigest() == meta["sha256"], rel
    text = json.dumps(manifest)
    assert "hf_SECRET" not in text and "testing-secret-value" not in text and "hub_token" not in text


def test_conditional_promotion(moto, bucket, tiny_model, monkeypatch):
    monkeypatch.setenv("QA_S3_ENDPOINT_URL", moto.url)
    a, b = S3Target(f"s3://{bucket}/m"), S3Target(f"s3://{bucket}/m")
    assert a.read_pointer() == (None, None)
    a.put_pointer({"run_id": "1", "location": "x"}, None)
    with pytest.raises(PointerChanged):  # b read "nothing" before a promoted
        b.put_pointer({"run_id": "2", "location": "y"}, None)
    pointer, etag = b.read_pointer()
    assert pointer["run_id"] == "1"
    b.put_pointer({"run_id": "2", "location": "y"}, etag)
    with pytest.raises(PointerChanged):
        a.put_pointer({"run_id": "3", "location": "z"}, etag)  # stale ETag
    assert a.read_pointer()[0]["run_id"] == "2"


def test_killed_publish_leaves_champion_untouched(moto, bucket, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("QA_S3_ENDPOINT_URL", moto.url)
    target = S3Target(f"s3://{bucket}/p")
    first = _publish(target, tiny_model, "good")
    target.put_pointer({"run_id": "good", "location": first}, None)
    before = _direct(moto).get_object(Bucket=bucket, Key="p/champion.json")["Body"].read()

    # A slow endpoint (every request delayed) so the kill lands mid-upload.
    slow = FaultProxy(moto.port, drop=0, slow_down=0, error=0)
    orig = slow._handle

    def delayed(conn):
        time.sleep(0.4)
        return orig(conn)
    slow._handle = delayed
    slow.start()
    code = ("import sys; from qa_lib.publish.run import publish_run; from qa_lib.publish.s3_target import S3Target;"
            "t = S3Target(sys.argv[1]); loc = publish_run(t, sys.argv[2], {'f1': 99.0}, {}, {}, 'killed', 'd', False);"
            "t.put_pointer({'run_id': 'killed', 'location': loc}, t.read_pointer()[1])")
    staging = tmp_path / "tmp"
    staging.mkdir()
    env = {**os.environ, "QA_S3_ENDPOINT_URL": slow.url, "TMPDIR": str(staging)}
    proc = subprocess.Popen([sys.executable, "-c", code, f"s3://{bucket}/p", str(tiny_model)], cwd=ROOT, env=env,
                            start_new_session=True)
    s3 = _direct(moto)
    deadline = time.time() + 60
    while time.time() < deadline:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="p/runs/killed/").get("KeyCount", 0)
        if listed >= 1:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    slow.stop()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="p/runs/killed/").get("Contents", [])]
    assert keys and "p/runs/killed/manifest.json" not in keys  # incomplete, and visibly so
    assert s3.get_object(Bucket=bucket, Key="p/champion.json")["Body"].read() == before
    left = list(staging.glob(f"qa-publish-{proc.pid}-*"))
    assert left  # the killed process's staging copy
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    mine = staging / f"qa-publish-{os.getpid()}-in-progress"  # a live publisher's copy is left alone
    mine.mkdir()
    again = _publish(target, tiny_model, "next")
    assert not any(p.exists() for p in left) and mine.exists()
    target.put_pointer({"run_id": "next", "location": again}, target.read_pointer()[1])
    assert target.read_pointer()[0]["run_id"] == "next"


@pytest.mark.parametrize("uri, env, message", [
    ("s3://no-such-bucket-here/x", {}, "bucket does not exist"),
    ("s3://Bad_Bucket/x", {}, "malformed S3 URI"),
    # Two attempts, not the default nine, each: the same message, 1 s instead of 8 (a test of its own
    # shows the setting is honoured).
    ("s3://somebucket/x", {"QA_S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "2"},
     "endpoint unreachable"),
    # An endpoint with credentials in it: the message shows where, not them.
    ("s3://somebucket/x", {"QA_S3_ENDPOINT_URL": "http://proxyuser:testing-secret-value@127.0.0.1:9",
                           "AWS_MAX_ATTEMPTS": "2"}, "endpoint unreachable (http://127.0.0.1:9/"),
    ("s3://somebucket/x", {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
                           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"},
     "no AWS credentials"),
])
def test_bad_targets_get_one_clear_message(moto, monkeypatch, tmp_path, uri, env, message):
    monkeypatch.setenv("QA_S3_ENDPOINT_URL", moto.url)
    monkeypatch.setenv("QA_PIPELINE_CACHE", str(tmp_path))  # a store object of its own (one per location and cache)
    for k, v in env.items():
        if v is None:
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)
    with pytest.raises(StorageError) as info:
        S3Target(uri).check()
    assert message in str(info.value)
    assert "testing-secret-value" not in str(info.value)
    # The same trouble in a model URI (`evaluate --model`, `answer --model`): it was a botocore
    # traceback, retried by preflight, exit 1.
    from qa_lib.modeling import resolve_model

    for model_uri in (f"{uri}/champion", f"{uri}/model/{'0' * 24}"):
        with pytest.raises(StorageError) as info:
            resolve_model(model_uri)
        assert message in str(info.value) and uri in str(info.value)


def test_aws_max_attempts_is_honoured_and_a_bad_one_is_one_line(moto, monkeypatch, tmp_path):
    """AWS_MAX_ATTEMPTS (total attempts, as in every AWS tool) used to be overridden by the
    client's own retry setting: an operator could not make a wrong endpoint fail fast."""
    proxy = FaultProxy(moto.port, drop=1.0, slow_down=0, error=0).start()  # every connection dropped
    monkeypatch.setenv("QA_S3_ENDPOINT_URL", proxy.url)
    try:
        for attempts in (1, 3):
            monkeypatch.setenv("AWS_MAX_ATTEMPTS", str(attempts))
            before = proxy.faults["drop"]
            with pytest.raises(StorageError):
                S3Target("s3://somebucket/x").check()
            assert proxy.faults["drop"] - before == attempts
    finally:
        proxy.stop()
    for bad in ("0", "three"):
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", bad)
        with pytest.raises(StorageError) as info:
            S3Target("s3://somebucket/x").check()
        assert str(info.value) == ("s3://somebucket/x: AWS_MAX_ATTEMPTS (or max_attempts in the AWS config) must be "
                                   "a whole number of at least 1")


def test_s3_data_source_and_champion_answer(moto, bucket, tiny_model, monkeypatch, tmp_path, caplog):
    import logging

    from qa_lib.answer import answer
    from qa_lib.data import load_examples

    monkeypatch.setenv("QA_S3_ENDPOINT_URL", moto.url)
    monkeypatch.setenv("QA_PIPELINE_CACHE", str(tmp_path / "cache"))
    _direct(moto).upload_file(str(DEV_V1), bucket, "data/dev.json")
    ds = load_examples(f"s3://{bucket}/data/dev.json")
    assert len(ds) == 810
    # A missing object is named as one (a HEAD's bare 404 was reported as "bucket does not exist"),
    # and preflight's existence check asks S3 too.
    from qa_lib.config import DataSource
    from qa_lib.sources import check_source_exists

    check_source_exists(DataSource(path=f"s3://{bucket}/data/dev.json"))
    for check in (check_source_exists, load_examples):  # an object is a file: one split, read whole
        with pytest.raises(DataError, match=r"split 'validation' given for a single file"):
            check(DataSource(path=f"s3://{bucket}/data/dev.json", split="validation"))
    for check in (load_examples, lambda uri: check_source_exists(DataSource(path=uri))):
        with pytest.raises(StorageError, match=f"s3://{bucket}/data/nope.json: no such object in bucket {bucket}$"):
            check(f"s3://{bucket}/data/nope.json")
        with pytest.raises(StorageError, match="s3://no-such-data-bucket/x.json: bucket does not exist"):
            check("s3://no-such-data-bucket/x.json")
    target = S3Target(f"s3://{bucket}/serve")
    with caplog.at_level(logging.INFO, logger="qa_lib.publish"):
        loc = _publish(target, tiny_model, "r1")
        target.put_pointer({"run_id": "r1", "location": loc}, None)
        ctx = "The Broncos beat the Panthers in Santa Clara."
        got = answer(f"s3://{bucket}/serve/champion", "Where?", ctx)
        answer(f"s3://{bucket}/serve/champion", "Where?", ctx)  # downloaded once: said once
    assert ctx[got.start:got.end] == got.answer
    assert (tmp_path / "cache" / "models").exists()
    # Each transfer is said before it starts, with its size (a large model's takes minutes).
    said = [r.getMessage() for r in caplog.records if r.name.startswith("qa_lib.publish")]
    assert len(said) == 2, said
    assert re.fullmatch(rf"uploading run r1 to s3://{bucket}/serve: [\d.]+ [KM]B in \d+ files?", said[0]), said
    assert re.fullmatch(rf"downloading {loc} into {tmp_path / 'cache'}/\S+: [\d.]+ [KM]B in \d+ files?", said[1]), said


def test_a_failed_data_download_leaves_nothing_in_the_cache(moto, bucket, monkeypatch, tmp_path):
    """S3 answers the HEAD but fails every GET of the object: one line naming it, and nothing half
    downloaded left in this worker's cache; once S3 recovers, the next load downloads it whole."""
    from qa_lib.data import load_examples

    proxy = FaultProxy(moto.port, drop=0, slow_down=0, error=0).start()
    monkeypatch.setenv("QA_S3_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("QA_PIPELINE_CACHE", str(tmp_path / "cache"))
    _direct(moto).upload_file(str(DEV_V1), bucket, "data/dev.json")
    uri = f"s3://{bucket}/data/dev.json"
    try:
        proxy.fail_requests = f"GET /{bucket}/data/dev.json".encode()
        with pytest.raises(StorageError, match=f"^{uri}: "):
            load_examples(uri)
        assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
        proxy.fail_requests = None
        assert len(load_examples(uri)) == 810
        assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == ["dev.json"]
    finally:
        proxy.stop()


def test_promotion_whose_response_is_lost_is_still_a_success(moto, bucket, monkeypatch):
    """The conditional PUT of champion.json reaches S3 but its response is lost: botocore resends
    it and gets 412 for its own write. Reading the pointer back shows it is ours: a success."""
    proxy = FaultProxy(moto.port, drop=0, slow_down=0, error=0).start()
    monkeypatch.setenv("QA_S3_ENDPOINT_URL", proxy.url)
    try:
        target = S3Target(f"s3://{bucket}/lost")
        target.put_pointer({"run_id": "1", "location": "x"}, None)
        first = target.read_pointer()[1]
        proxy.lose_response_of = f"PUT /{bucket}/lost/champion.json".encode()
        target.put_pointer({"run_id": "2", "location": "y"}, first)  # no PointerChanged
        assert proxy.lost and target.read_pointer()[0] == {"run_id": "2", "location": "y"}
        # A real conflict still is one: someone else's pointer is there.
        with pytest.raises(PointerChanged):
            target.put_pointer({"run_id": "3", "location": "z"}, first)
    finally:
        proxy.stop()


def test_a_publish_target_or_store_that_cannot_be_written_is_refused_before_training(monkeypatch, tmp_path):
    """Credentials that may read the bucket but not write to it pass a HEAD request, and publishing
    would have failed only after the training. The target's check writes a test object and removes
    it: refused for a reader (moto enforcing IAM), nothing left behind for a writer."""
    server = MotoServer(authorize_after=7).start()  # the 7 set-up requests below, then IAM applies
    try:
        admin = dict(endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="admin",
                     aws_secret_access_key="admin")
        boto3.client("s3", **admin).create_bucket(Bucket="models")
        iam = boto3.client("iam", **admin)
        keys = {}
        for user, statements in (("writer", [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]),
                                 ("reader", [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                                             {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "*"}])):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": statements}))
            keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
        monkeypatch.setenv("QA_S3_ENDPOINT_URL", server.url)
        for user, key in keys.items():
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
            store = S3Store("s3://models/store", cache_dir=tmp_path / user)
            if user == "reader":
                with pytest.raises(StorageError) as refused:
                    S3Target("s3://models/qa").check()
                assert str(refused.value) == ("s3://models/qa: access denied (AccessDenied), writing a test object: "
                                              "this run could not publish")
                assert key["SecretAccessKey"] not in str(refused.value)
                # A store the same: a run is refused up front, a listing (read only) goes on.
                with pytest.raises(StorageError, match=r"^s3://models/store: access denied \(AccessDenied\), "
                                                       "writing a test object: this run could not store its stages$"):
                    store.check()
                store.check(cache=False)
                # Refused in the middle of a run (a policy changed): one StorageError, not boto3's upload error.
                with pytest.raises(StorageError, match=r"^s3://models/store: access denied \(AccessDenied\)$"):
                    with store.writing("data", "k") as folder:
                        (folder / "examples.arrow").write_bytes(b"x")
            else:
                S3Target("s3://models/qa").check()
                store.check()
                listed = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                                      aws_access_key_id=key["AccessKeyId"],
                                      aws_secret_access_key=key["SecretAccessKey"]).list_objects_v2(Bucket="models")
                assert listed["KeyCount"] == 0
    finally:
        server.stop()


def test_answer_says_the_download_of_an_s3_champion_before_it_answers(moto, bucket, tiny_model, monkeypatch,
                                                                     tmp_path, capsys):
    """A champion on S3 can be gigabytes: `answer` said nothing until it had downloaded them. The
    notice is on stderr, stdout keeps only the JSON; once cached, nothing is said."""
    from cli.main import main

    monkeypatch.setenv("QA_S3_ENDPOINT_URL", moto.url)
    monkeypatch.setenv("QA_PIPELINE_CACHE", str(tmp_path / "cache"))
    target = S3Target(f"s3://{bucket}/serve")
    location = _publish(target, tiny_model, "r1")
    target.put_pointer({"run_id": "r1", "location": location}, None)
    argv = ["answer", "--model", f"s3://{bucket}/serve/champion", "--question", "Who won?",
            "--context", "The Broncos won."]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["answer"]
    assert re.fullmatch(rf"downloading {location} into {tmp_path / 'cache'}/\S+: [\d.]+ [KM]B in \d+ files?\n", err), err
    assert main(argv) == 0
    assert capsys.readouterr().err == ""


def test_answer_writes_its_answers_to_an_s3_object(moto, bucket, tiny_model, monkeypatch, tmp_path, capsys):
    """`answer --questions ... -o s3://bucket/key`: the object holds what stdout would; a bucket that
    is not there, or a URI without a key, is one line before the questions are read or the model
    loaded (it made a local folder named `s3:`); so is a missing local model folder."""
    from cli.main import main

    monkeypatch.setenv("QA_S3_ENDPOINT_URL", moto.url)
    monkeypatch.chdir(tmp_path)
    doc = json.loads(DEV_V1.read_text())
    rows = [{"id": q["id"], "question": q["question"], "context": p["context"]}
            for a in doc["data"][:1] for p in a["paragraphs"][:2] for q in p["qas"][:2]]
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    argv = ["answer", "--model", str(tiny_model), "--questions", "q.jsonl", "--max-length", "96", "--doc-stride", "32"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {r["id"] for r in rows}
    assert main([*argv, "-o", f"s3://{bucket}/answers/dev.json"]) == 0
    assert f"{len(rows)} answers written to s3://{bucket}/answers/dev.json" in capsys.readouterr().err
    body = _direct(moto).get_object(Bucket=bucket, Key="answers/dev.json")["Body"].read()
    assert json.loads(body) == printed
    assert [o["Key"] for o in _direct(moto).list_objects_v2(Bucket=bucket)["Contents"]] == ["answers/dev.json"]

    missing = ["answer", "--model", str(tmp_path / "no-model"), "--questions", "none.jsonl"]
    for extra, message in [
            (["-o", "s3://no-such-answers-bucket/a.json"], "s3://no-such-answers-bucket: bucket does not exist"),
            (["-o", f"s3://{bucket}"], f"s3://{bucket}: names no object"),
            (["-o", f"s3://{bucket}/answers/"], f"s3://{bucket}/answers/: names no object"),
            ([], f"model folder not found: {tmp_path / 'no-model'}")]:
        assert main([*missing, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
        assert "testing-secret-value" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.jsonl"]


def test_score_reads_its_files_from_s3(moto, bucket, monkeypatch, tmp_path, capsys):
    """`answer -o s3://...` writes answers where a fleet keeps them, and eval data may live in a
    bucket: `score` reads either from S3 (it said "file not found"), with the numbers it prints for
    the same local files; a missing object, or a split given for one, is one line naming it."""
    from cli.main import main

    monkeypatch.setenv("QA_S3_ENDPOINT_URL", moto.url)
    monkeypatch.setenv("QA_PIPELINE_CACHE", str(tmp_path / "cache"))
    doc = json.loads(DEV_V1.read_text())
    qas = [(p["context"], q) for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]]
    preds = {q["id"]: q["answers"][0]["text"] if i % 3 else q["question"].split()[-1] for i, (_, q) in enumerate(qas)}
    (tmp_path / "p.json").write_text(json.dumps(preds))
    (tmp_path / "dev.jsonl").write_text("\n".join(json.dumps({
        "id": q["id"], "context": c, "question": q["question"],
        "answers": {"text": [a["text"] for a in q["answers"]], "answer_start": [a["answer_start"] for a in q["answers"]]}})
        for c, q in qas))
    s3 = _direct(moto)
    for name in ("p.json", "dev.jsonl"):
        s3.upload_file(str(tmp_path / name), bucket, f"eval/{name}")
    s3.upload_file(str(DEV_V1), bucket, "eval/dev.json")
    assert main(["score", str(DEV_V1), str(tmp_path / "p.json")]) == 0
    expected = capsys.readouterr().out
    assert 0 < json.loads(expected)["exact_match"] < 100
    for data in ("dev.json", "dev.jsonl"):
        assert main(["score", f"s3://{bucket}/eval/{data}", f"s3://{bucket}/eval/p.json"]) == 0
        assert capsys.readouterr().out == expected
    # --out-file to a bucket (it made a local folder named `s3:`), as one object, nothing printed.
    assert main(["score", str(DEV_V1), str(tmp_path / "p.json"), "-o", f"s3://{bucket}/eval/scores.json"]) == 0
    assert capsys.readouterr().out == ""
    body = s3.get_object(Bucket=bucket, Key="eval/scores.json")["Body"].read().decode()
    assert body == expected.strip()
    for argv, message in [
            ([f"s3://{bucket}/eval/dev.json", f"s3://{bucket}/eval/nope.json"],
             f"s3://{bucket}/eval/nope.json: no such object in bucket {bucket}"),
            ([f"s3://{bucket}/eval/dev.jsonl", str(tmp_path / "p.json"), "--split", "test"],
             f"s3://{bucket}/eval/dev.jsonl: split 'test' given for a single file"),
            # A bucket that is not there: said before the files are read (the predictions are not there either).
            ([str(DEV_V1), str(tmp_path / "none.json"), "-o", "s3://no-such-scores-bucket/s.json"],
             "s3://no-such-scores-bucket: bucket does not exist")]:
        assert main(["score", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
        assert "testing-secret-value" not in err
    assert not (tmp_path / "s3:").exists() and not Path("s3:").exists()


def test_answer_qa_on_a_fleet_reads_and_writes_only_s3(prefect_server, moto, bucket, tiny_model, monkeypatch,
                                                       tmp_path):
    """answer_qa as a fleet's pod runs it: the questions, the champion (the default model), the store
    and the answers all on S3. An output bucket that is not there fails in preflight, before the
    questions are read."""
    from flows.answer_qa import answer_qa
    from qa_lib.config import PipelineConfig
    from tests.flow_helpers import task_runs

    monkeypatch.setenv("QA_S3_ENDPOINT_URL", moto.url)
    monkeypatch.setenv("QA_PIPELINE_CACHE", str(tmp_path / "cache"))
    doc = json.loads(DEV_V1.read_text())
    rows = [{"id": q["id"], "question": q["question"], "context": p["context"]}
            for a in doc["data"][:1] for p in a["paragraphs"][:3] for q in p["qas"][:2]]
    _direct(moto).put_object(Bucket=bucket, Key="in/q.jsonl", Body="\n".join(json.dumps(r) for r in rows).encode())
    target = S3Target(f"s3://{bucket}/serve")
    target.put_pointer({"run_id": "r1", "location": _publish(target, tiny_model, "r1")}, None)
    cfg = PipelineConfig(publish_target=target.uri, eval_data={"path": f"s3://{bucket}/in/q.jsonl"},
                         output_dir=str(tmp_path / "out"), eval_max_length=96, eval_doc_stride=32)
    store = f"s3://{bucket}/store"
    done = answer_qa(config=cfg, output=f"s3://{bucket}/out/answers.json", store_root=store)
    saved = json.loads(_direct(moto).get_object(Bucket=bucket, Key="out/answers.json")["Body"].read())
    assert set(saved) == {r["id"] for r in rows} and done["answers"] == len(rows)
    assert all(saved[r["id"]] and saved[r["id"]] in r["context"] for r in rows)  # v1: a span of its context
    assert done["model"] == f"{target.uri}/champion" and done["predictions_dir"].startswith(f"{store}/predictions/")

    state = answer_qa(config=cfg, output="s3://no-such-answers-bucket/a.json", store_root=store, return_state=True)
    assert state.is_failed()
    with pytest.raises(StorageError, match="^s3://no-such-answers-bucket: bucket does not exist"):
        state.result()
    assert [r.name.rsplit("-", 1)[0] for r in task_runs(state.state_details.flow_run_id)] == ["preflight"]


def test_data_checked_before_prefect_is_kept_in_an_s3_store_for_every_worker(moto, bucket, tiny_model, tmp_path,
                                                                             monkeypatch):
    """The command line's check of the data (without a Prefect server) keeps it in the shared store:
    another worker, with its own cache and without the source file, loads it from there."""
    import datasets

    from qa_lib.config import DataSource
    from qa_lib.preflight import check_and_keep_data
    from qa_lib.plan import data_key
    from qa_lib.store import _open
    from tasks.data import _load_dataset
    from tests.flow_helpers import tiny_config

    store = f"s3://{bucket}/store"
    config = tiny_config(tiny_model, tmp_path / "out")
    monkeypatch.setenv("QA_S3_ENDPOINT_URL", moto.url)
    monkeypatch.setenv("QA_PIPELINE_CACHE", str(tmp_path / "cache-a"))
    check_and_keep_data(config, True, store=store)
    key = data_key(config.eval_data, config.version_2_with_negative)

    monkeypatch.setenv("QA_PIPELINE_CACHE", str(tmp_path / "cache-b"))  # the other worker
    _open.cache_clear()
    gone = DataSource(path=str(tmp_path / "gone.json"))
    ref = _load_dataset.fn(gone, True, "validation", store, "data", key)
    assert ref == {"stage": "data", "key": key, "name": "examples", "kind": "eval"}
    fetched = S3Store(store, tmp_path / "cache-b").fetch("data", key) / "examples"
    assert datasets.load_from_disk(str(fetched)).num_rows == 60
