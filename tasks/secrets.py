"""Secrets a run needs, from the environment or Prefect blocks: passed on to the library calls that
use them, never logged or returned in a task's result."""

from __future__ import annotations

from qa_lib.publish.hub import env_token

HUB_TOKEN_BLOCK = "hf-token"


def hub_token(secret_block: str = HUB_TOKEN_BLOCK) -> str | None:
    """`HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`), else the Prefect Secret block `hf-token`, else None."""
    token = env_token()
    if token:
        return token
    try:
        from prefect.blocks.system import Secret

        return Secret.load(secret_block).get()
    except Exception:  # noqa: BLE001 - no server, no block: no token, which the Hub call then names
        return None
