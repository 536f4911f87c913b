"""The Prefect API a command talks to: reachable, or one line saying which one is not."""

from __future__ import annotations

from qa_lib.errors import ConfigError


def api_url() -> str | None:
    """PREFECT_API_URL, or None: Prefect then starts a temporary server for the command."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def check_api() -> None:
    """A configured API that does not answer fails here, in one line, before any work (it was
    Prefect's "RuntimeError: Failed to reach API", exit 1, or an httpx ConnectError)."""
    url = api_url()
    if url is None:
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise ConfigError(f"cannot reach the Prefect API at {url} (PREFECT_API_URL): {type(problem).__name__}")
