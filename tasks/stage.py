"""One mechanism for every stage: which store, which key, the cache record, the timing.

A flow opens a `pipeline_run` with the keys `qa_lib.plan` computed, and then calls the stage
functions plainly (`features = build_features(train_data, config)`). `run_stage` gives the task
its store location, stage and key; makes Prefect recompute when the store entry is gone (so a
cache hit always has its files); keeps Prefect's cache records beside the store when the store is
shared; and times the call. A new store backend changes `qa_lib.store`, not the flows.

Stage results are small dicts naming a store entry (`stage`, `key`, `name`), never a local path:
a cached result is then valid on every worker, and `fetch` downloads the files only where a task
that runs needs them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from prefect.logging import get_run_logger

from qa_lib.plan import LABELS, STAGE_OF
from qa_lib.store import Store, open_store
from tasks.results import result_storage_for

@dataclass
class PipelineRun:
    store: Store
    keys: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, label: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[label] = time.perf_counter() - t


_current: ContextVar[PipelineRun] = ContextVar("qa_pipeline_run")


@contextmanager
def pipeline_run(store_location: str | None) -> Iterator[PipelineRun]:
    run = PipelineRun(open_store(store_location))
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)


def current_run() -> PipelineRun:
    return _current.get()


def run_stage(task, slot: str, *args):
    """Call a stage task with its store location, stage and key appended to `args`."""
    run = current_run()
    stage, key = STAGE_OF[slot], run.keys[slot]
    options = {"refresh_cache": not run.store.has(stage, key)}
    options.update(result_storage=result_storage_for(run.store), persist_result=True)
    with run.timed(LABELS[slot]):
        return task.with_options(**options)(*args, run.store.location, stage, key)


def entry(stage: str, key: str, name: str, **info) -> dict:
    """A stage result: where its files are, in any store that holds them."""
    return {"stage": stage, "key": key, "name": name, **info}


def fetch(store: Store, ref: dict) -> Path:
    """The local path of a stage result's files, downloaded (and logged) if this worker lacks them."""
    before = store.downloaded
    path = store.fetch(ref["stage"], ref["key"]) / ref["name"]
    got = store.downloaded - before
    if got:
        get_run_logger().info("downloaded %s/%s from %s: %d bytes", ref["stage"], ref["key"], store.location, got)
    return path

