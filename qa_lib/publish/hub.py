"""Push a published run's model to the Hugging Face Hub.

The token is the caller's (the Prefect tasks read `HF_TOKEN` or the Secret block `hf-token`:
`tasks.secrets`), else `HF_TOKEN` from the environment; it is passed to `huggingface_hub` only
and never logged or written to cards or manifests. The endpoint is `HF_ENDPOINT` as the
environment holds it when the call is made (a private Hub mirror works).

Errors: a missing, rejected or read-only token, a bad repo id, and offline mode are
`QAPipelineError`s (retrying will not help); a Hub that cannot be reached or answers 5xx is a
`ConnectionError`, which the Prefect tasks retry.
"""

from __future__ import annotations

import os

from qa_lib.errors import ConfigError, QAPipelineError


def env_token() -> str | None:
    """`HF_TOKEN`, or huggingface_hub's older name for it."""
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")


def repo_id_problem(repo_id: str) -> str | None:
    """Why the Hub would refuse `repo_id` (huggingface_hub's own rule), or None."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        return str(exc)
    return None


def check_repo_id(repo_id: str) -> str:
    """`org/name` as the Hub accepts it, or a `ConfigError` saying why not."""
    problem = repo_id_problem(repo_id)
    if problem:
        raise ConfigError(f"hub_repo_id {repo_id!r} is not a valid Hub repo id: {problem}")
    return repo_id


def check_card(model_dir: str) -> dict:
    """Parse the card with huggingface_hub's card tools; return its EM/F1 from the model-index."""
    from pathlib import Path

    from huggingface_hub import ModelCard

    card = ModelCard(Path(model_dir, "README.md").read_text())
    results = card.data.eval_results or []
    if not results:
        raise QAPipelineError(f"{model_dir}/README.md: model card has no model-index results")
    return {r.metric_type: r.metric_value for r in results} | {"dataset": results[0].dataset_type}


def _api(token: str | None):
    from huggingface_hub import HfApi

    token = token or env_token()
    if not token:
        raise QAPipelineError("no Hugging Face token: set HF_TOKEN or create a Prefect Secret block 'hf-token'")
    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)


def _explain(exc: Exception, action: str) -> Exception:
    """A secret-free, one-line reason; transient trouble stays retryable (ConnectionError)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return QAPipelineError(f"{action}: HF_HUB_OFFLINE is set, so the Hub may not be called; unset it "
                               "or leave hub_repo_id empty")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, HfHubHTTPError) and status is not None and status < 500 and status != 429:  # 429: wait, retry
        reason = {401: "the token was rejected", 403: "the token may not write there"}.get(status, f"HTTP {status}")
        return QAPipelineError(f"{action} failed: {reason}")
    # The HTTP client differs between huggingface_hub releases (requests, httpx, httpx2); its connection
    # and timeout errors are all a `TransportError` or an OSError.
    if isinstance(exc, (HfHubHTTPError, OSError)) or any(c.__name__ == "TransportError" for c in type(exc).__mro__):
        return ConnectionError(f"{action} failed: Hub unreachable or unavailable ({type(exc).__name__}"
                               f"{f', HTTP {status}' if status else ''})")
    # Checks the client makes before sending (card metadata, file names): a problem with what we push.
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return QAPipelineError(f"{action} failed: {type(exc).__name__}: {first}")


def check_access(repo_id: str, token: str | None = None) -> str:
    """Before training: a token the Hub accepts and that may write. Returns the account name."""
    check_repo_id(repo_id)
    api = _api(token)
    try:
        who = api.whoami()
    except Exception as exc:  # noqa: BLE001
        raise _explain(exc, f"checking the Hugging Face token for {repo_id}") from None
    role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise QAPipelineError(f"the Hugging Face token of {who.get('name', '?')} is read-only; "
                              f"pushing to {repo_id} needs a write token")
    return who.get("name", "")


def push_model(model_dir: str, repo_id: str, private: bool = True, token: str | None = None,
               commit_message: str = "qa-pipeline: publish model") -> str:
    """Upload the model folder (card checked first) as one Hub commit; returns the commit URL.

    One commit holds every file, so a failed push leaves the repo as it was. The same commit
    deletes the repo's files that the folder lacks (the Hub keeps `.gitattributes`), so the repo
    is the folder: an older champion's files (another tokenizer's vocabulary, sharded weights
    beside single-file ones) would otherwise stay and be loaded with the new model.
    """
    check_repo_id(repo_id)
    check_card(model_dir)
    api = _api(token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=model_dir, repo_id=repo_id, commit_message=commit_message,
                                 delete_patterns="*")
    except Exception as exc:  # noqa: BLE001
        raise _explain(exc, f"push to the Hub ({repo_id})") from None
    return str(getattr(info, "commit_url", info))
