"""Whether the Hugging Face Hub can be reached, asked once with one request.

Left to themselves, transformers and datasets retry every file of an unreachable Hub for about
25 s, a warning per try, and then fail with a message about the network, not about the model or
dataset the user named. A model or dataset name that is not a local path asks here first.
`recalled`/`remember` keep this and the other answers the Hub gives a run (a model's snapshot, a
dataset's commit) for a minute.
"""

from __future__ import annotations

import time

from qa_lib.errors import first_line

# A run asks the Hub the same things several times (each resolution of its model and data, in
# preflight, the plan and the stages): an answer is kept a minute, per endpoint.
_TTL_S = 60.0
_UNASKED = object()
_checked: dict[tuple[str, str], tuple[float, str | None]] = {}


def recalled(memory: dict, question: str, default=None):
    """The answer `memory` holds for `question` to the current endpoint if it was given within the
    minute, else `default`."""
    from huggingface_hub import constants

    seen = memory.get((constants.ENDPOINT, question))
    return seen[1] if seen is not None and time.monotonic() - seen[0] < _TTL_S else default


def remember(memory: dict, question: str, answer) -> None:
    from huggingface_hub import constants

    memory[(constants.ENDPOINT, question)] = (time.monotonic(), answer)


def why_hub_unreachable() -> str | None:
    """Why the Hub cannot be used from here ("HF_HUB_OFFLINE is set", or the request's failure), or
    None when it answers."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if (reason := recalled(_checked, "reachable?", _UNASKED)) is not _UNASKED:
        return reason
    endpoint = constants.ENDPOINT
    try:
        # Any HTTP answer, an error status included, means the Hub is there; huggingface_hub's own
        # session keeps its proxy and TLS settings.
        get_session().head(endpoint, timeout=5.0)
        reason = None
    except Exception as exc:  # noqa: BLE001 - DNS, refused, timeout, proxy, TLS: all "cannot be reached"
        reason = f"the Hub at {endpoint} cannot be reached ({first_line(exc, 120)})"
    remember(_checked, "reachable?", reason)
    return reason
