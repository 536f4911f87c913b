from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId, LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.sorting import TaskRunSort

from qa_lib.config import PipelineConfig
from tests.conftest import DEV_V2, TRAIN_V1


def tiny_config(model: Path, out: Path, **overrides) -> PipelineConfig:
    raw = dict(
        model=str(model),
        train_data={"path": str(TRAIN_V1), "limit": 120},
        eval_data={"path": str(DEV_V2), "limit": 60},
        version_2_with_negative=True,
        max_length=128, doc_stride=48, max_steps=4, per_device_train_batch_size=8, per_device_eval_batch_size=32,
        save_steps=2, logging_steps=1, learning_rate=1e-3, output_dir=str(out),
    )
    raw.update(overrides)
    return PipelineConfig.parse(raw)


def task_states(flow_run_id) -> dict[str, list[str]]:
    """Task name (without Prefect's suffix) → state names, in start order."""
    out: dict[str, list[str]] = defaultdict(list)
    for r in task_runs(flow_run_id):
        out[r.name.rsplit("-", 1)[0]].append(r.state.name)
    return dict(out)


def task_runs(flow_run_id, settle_s: float = 20.0):
    """The task runs of a finished flow run, in start order, once the server has recorded them all.
    Task states reach the server as events, after the flow's own end: under load a read right
    after the run saw a cached task still Running, one with no state at all, and the tasks after
    it not there at all."""
    def read():
        with get_client(sync_client=True) as client:
            return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                         sort=TaskRunSort.EXPECTED_START_TIME_ASC)

    deadline, last = time.monotonic() + settle_s, None
    while True:
        runs = read()
        # A task run can be recorded before its first state is (state None): not settled yet.
        seen = [(r.id, r.state and r.state.name, r.run_count) for r in runs]
        if (seen == last and all(r.state and r.state.is_final() for r in runs)) or time.monotonic() > deadline:
            return runs
        last = seen
        time.sleep(0.5)


def artifacts(flow_run_id) -> dict:
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key or a.type: a for a in arts}


def read_logs(run_id, until: str | None = None, timeout_s: float = 30) -> str:
    """The messages the server holds of a flow run's log, one per line. Logs reach the server in
    batches, after the run's state: with `until`, read again until that text is there or
    `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        logs = _logs_now(run_id)
        if until is None or until in logs or time.monotonic() > deadline:
            return logs
        time.sleep(1)


def _logs_now(run_id) -> str:
    lines, offset = [], 0
    with get_client(sync_client=True) as c:
        while True:
            page = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), offset=offset,
                               limit=200)
            lines += [log.message for log in page]
            offset += len(page)
            if len(page) < 200:
                return "\n".join(lines)


def subflow_runs(flow_run_id):
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
