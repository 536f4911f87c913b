"""Whether the Hugging Face Hub can be reached, asked once with one request.

Left to themselves, transformers and datasets retry every file of an unreachable Hub for about
25 s, a warning per try, and then fail with a message about the network, not about the model or
dataset the user named. A model or dataset name that is not a local path asks here first.
"""

from __future__ import annotations

import time

from qa_lib.errors import first_line

# A run resolves its model several times: one request a minute is enough.
_TTL_S = 60.0
_checked: dict[str, tuple[float, str | None]] = {}


def why_hub_unreachable() -> str | None:
    """Why the Hub cannot be used from here ("HF_HUB_OFFLINE is set", or the request's failure), or
    None when it answers."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = constants.ENDPOINT
    now = time.monotonic()
    if (seen := _checked.get(endpoint)) is not None and now - seen[0] < _TTL_S:
        return seen[1]
    try:
        # Any HTTP answer, an error status included, means the Hub is there; huggingface_hub's own
        # session keeps its proxy and TLS settings.
        get_session().head(endpoint, timeout=5.0)
        reason = None
    except Exception as exc:  # noqa: BLE001 - DNS, refused, timeout, proxy, TLS: all "cannot be reached"
        reason = f"the Hub at {endpoint} cannot be reached ({first_line(exc, 120)})"
    _checked[endpoint] = (now, reason)
    return reason
