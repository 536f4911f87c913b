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
        _check_temporary_server_home()
        return
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise ConfigError(f"cannot reach the Prefect API at {url} (PREFECT_API_URL): {type(problem).__name__}")


def _check_temporary_server_home() -> None:
    """The temporary server keeps a SQLite database in PREFECT_HOME. Where that folder cannot be
    written (a read-only home in a pod), the server never starts and Prefect waited out its
    startup timeout (3 minutes here) before a "Timed out ... ephemeral Prefect API server"."""
    from pathlib import Path

    from prefect.settings import get_current_settings

    from qa_lib.folders import write_problem

    settings = get_current_settings()
    database = settings.server.database.connection_url
    database = database.get_secret_value() if database is not None else ""
    if database and not database.startswith("sqlite"):
        return  # a database server: nothing is written locally
    folder = Path(database.split(":///", 1)[1]).parent if ":///" in database else Path(settings.home)
    if problem := write_problem(folder):
        raise ConfigError(f"{folder}: cannot write the temporary Prefect server's database there ({problem}); "
                          "set PREFECT_HOME to a writable folder, or PREFECT_API_URL to a running server")
