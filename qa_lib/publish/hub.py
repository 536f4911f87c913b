"""Push a published run's model to the Hugging Face Hub.

The token comes from `HF_TOKEN` or, inside Prefect, from a Secret block (`hf-token`); it is
passed to `huggingface_hub` only and never logged or written to cards or manifests.
"""

from __future__ import annotations

import os

from qa_lib.errors import QAPipelineError


def hub_token(secret_block: str = "hf-token") -> str | None:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token
    try:
        from prefect.blocks.system import Secret

        return Secret.load(secret_block).get()
    except Exception:  # noqa: BLE001 - no Prefect, no block: no token
        return None


def check_card(model_dir: str) -> dict:
    """Parse the card with huggingface_hub's card tools; return its EM/F1 from the model-index."""
    from pathlib import Path

    from huggingface_hub import ModelCard

    card = ModelCard(Path(model_dir, "README.md").read_text())
    results = card.data.eval_results or []
    if not results:
        raise QAPipelineError(f"{model_dir}/README.md: model card has no model-index results")
    return {r.metric_type: r.metric_value for r in results} | {"dataset": results[0].dataset_type}


def push_model(model_dir: str, repo_id: str, private: bool = True, token: str | None = None) -> str:
    from huggingface_hub import HfApi

    check_card(model_dir)
    token = token or hub_token()
    if not token:
        raise QAPipelineError("no Hugging Face token: set HF_TOKEN or create a Prefect Secret block 'hf-token'")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=model_dir, repo_id=repo_id, commit_message="qa-pipeline: publish model")
    except Exception as exc:  # noqa: BLE001
        reason = type(exc).__name__
        raise QAPipelineError(f"push to the Hub ({repo_id}) failed: {reason}") from None
    return str(getattr(info, "commit_url", info))
