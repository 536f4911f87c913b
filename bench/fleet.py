"""The bench's flow job on an S3 store (moto's server on loopback) against the local store, and
the same job rerun by a second, empty worker: a fresh process with its own Prefect home, its own
local cache and nothing but the store (and the Prefect server, where PREFECT_API_URL names one) in
common."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CREDS = {"AWS_ACCESS_KEY_ID": "bench-key-id", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}

# Runs the flow job once in a fresh process and prints its wall time (Prefect's start-up excluded:
# every worker pays it once, not per run).
_SECOND_WORKER = """
import json, sys, time
from prefect import flow
from flows.train_qa import train_qa
from qa_lib.config import PipelineConfig

@flow
def warm_up():
    return None

warm_up()
config = PipelineConfig.model_validate_json(sys.argv[1])
t = time.perf_counter()
train_qa(config=config, store_root=sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def bench_fleet(raw: dict, tmp: Path, out: dict, measure) -> None:
    import boto3

    from flows.train_qa import train_qa
    from qa_lib.config import PipelineConfig
    from tests.s3_services import MotoServer

    moto = MotoServer().start()
    saved = {k: os.environ.get(k) for k in (*CREDS, "QA_S3_ENDPOINT_URL", "QA_PIPELINE_CACHE")}
    os.environ.update(CREDS, QA_S3_ENDPOINT_URL=moto.url, QA_PIPELINE_CACHE=str(tmp / "worker1-cache"))
    try:
        boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(Bucket="bench")
        store = "s3://bench/store"
        config = PipelineConfig.parse({**raw, "output_dir": str(tmp / "s3-flow")})
        from qa_lib.store import open_store

        s3_store = open_store(store)
        with measure(out, "s3_flow_job_s"):
            train_qa(config=config, store_root=store)
        # The wall-clock difference between two cold runs carries their training's noise (a few %);
        # the time spent inside the store's own S3 calls is the overhead itself.
        out["s3_store_io_s"], out["s3_store_uploaded_mb"] = s3_store.io_s, s3_store.uploaded / 2**20
        second = tmp / "worker2"
        second.mkdir()
        # A fleet's workers share its Prefect server: with one configured, the second worker reports
        # to it; without one (ephemeral mode) it starts its own, as a lone machine does.
        env = {**os.environ, "PREFECT_HOME": str(second / "prefect"), "QA_PIPELINE_CACHE": str(second / "cache"),
               "HOME": str(second)}
        t = time.perf_counter()
        run = subprocess.run([sys.executable, "-c", _SECOND_WORKER, config.model_dump_json(), store], cwd=ROOT,
                             env=env, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"second worker failed: {run.stderr[-2000:]}")
        out["s3_second_worker_process_s"] = time.perf_counter() - t
        out["s3_second_worker_cached_s"] = json.loads(run.stdout.strip().splitlines()[-1])["seconds"]
    finally:
        moto.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
