"""Retry and cache policy shared by every task."""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from qa_lib.errors import QAPipelineError, is_disk_full

# Transient trouble (storage, network) gets three retries: 2 s, 4 s, 8 s, each +-50 % jitter.
RETRY = {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=2), "retry_jitter_factor": 0.5}


def retry_unless_deterministic(task, task_run, state) -> bool:
    """Retry transient failures only: a bad config or bad data fails at once."""
    try:
        state.result()
    except QAPipelineError:
        return False
    except Exception as exc:  # noqa: BLE001 - a full disk anywhere stays full for a retry
        return not is_disk_full(exc)
    return True


def key_from_param(context, parameters: dict[str, Any]) -> str:
    """Cache key: the stage key the flow computed from content fingerprints (qa_lib.plan)."""
    return f"qa-pipeline:{parameters['stage']}:{parameters['key']}"


# Every stage task: keyed by its plan key, retried only when the failure may be transient.
STAGE = {"cache_key_fn": key_from_param, "retry_condition_fn": retry_unless_deterministic}
