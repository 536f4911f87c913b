"""The deployments, as data. `register()` turns each entry into a Prefect deployment.

Environment knobs (read at registration time):
  QA_WORK_POOL       work pool name (default "gpu")
  QA_DEPLOY_CONFIG   YAML config whose values become the parameter defaults (default configs/default.yaml;
                     `qa-pipeline deploy --config` wins)
  QA_RETRAIN_CRON    nightly schedule (default "0 2 * * *")
  QA_RETRAIN_TZ      its timezone (default "UTC")
  QA_GPUS            GPUs per flow run, passed to the worker as a job variable (default 1; 0 or more)
  QA_IMAGE           container image for Docker/Kubernetes pools (unset for process pools)
  QA_DEPLOY_SOURCE   git URL[@ref] that flow runs clone the code from (default: this checkout's path);
                     no credentials in it: the deployment would store them where the UI shows them
  QA_GIT_CREDENTIALS_BLOCK  a Prefect Secret block holding the access token for a private repository;
                     the deployment keeps a reference to the block, never the token
  QA_PIPELINE_STORE  the store every run uses (a folder, or s3://bucket/prefix for a fleet)
  QA_HEARTBEAT_GRACE_S  seconds without a heartbeat before a run is marked Crashed (default 90: three
                     of the 30 s heartbeats; more than 30)

A deployment runs with the parameters it was registered with, so `retrain` (which publishes)
is registered only with an eval set, and with `runs/registry` under the project as its
`publish_target` when the config names none; `answer-qa` with the same target, whose champion it
answers with (and the eval set's questions, when a run names no questions file).
"""

from __future__ import annotations

import os

DATA_LANDED_EVENT = "qa-pipeline.training-data.landed"

DEPLOYMENTS = [
    {"name": "train-qa", "entrypoint": "flows/train_qa.py:train_qa",
     "description": "Fine-tune and evaluate a QA model from a config."},
    {"name": "evaluate-qa", "entrypoint": "flows/evaluate_qa.py:evaluate_qa",
     "description": "Evaluate a trained model (folder or s3:// champion) on an eval set."},
    {"name": "retrain", "entrypoint": "flows/retrain.py:retrain",
     "description": "Nightly retrain with a champion/challenger gate.",
     "nightly": True, "on_data_landed": True, "concurrency_limit": 1, "publishes": True},
    {"name": "answer-qa", "entrypoint": "flows/answer_qa.py:answer_qa",
     "description": "Answer a file of questions with the champion (or a named model); save the answers whole.",
     "uses_champion": True},
]


def settings() -> dict:
    return {
        "work_pool": os.environ.get("QA_WORK_POOL", "gpu"),
        "config": os.environ.get("QA_DEPLOY_CONFIG", "configs/default.yaml"),
        "cron": os.environ.get("QA_RETRAIN_CRON", "0 2 * * *"),
        "timezone": os.environ.get("QA_RETRAIN_TZ", "UTC"),
        "gpus": os.environ.get("QA_GPUS", "1"),
        "image": os.environ.get("QA_IMAGE"),
        "source": os.environ.get("QA_DEPLOY_SOURCE"),
        "git_credentials_block": os.environ.get("QA_GIT_CREDENTIALS_BLOCK"),
        "store": os.environ.get("QA_PIPELINE_STORE"),
        "heartbeat_grace_s": os.environ.get("QA_HEARTBEAT_GRACE_S", "90"),
    }
