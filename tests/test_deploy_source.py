"""Deployments whose code comes from a git repository: registered against a real server from a
real (local, bare) clone of this repository, and a private repository's token kept in a Secret
block, never in the deployment."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from prefect.client.orchestration import get_client

from tests.conftest import ROOT
from tests.flow_helpers import tiny_config

TOKEN = "ghp-SECRET-7d1c-never-shown"


@pytest.mark.parametrize("source", [
    f"https://ci-bot:{TOKEN}@git.example/org/qa.git@main",
    f"https://{TOKEN}@git.example/org/qa.git",  # a token given as the user name, as GitHub allows
])
def test_a_git_url_with_credentials_is_refused_without_echoing_them(source, capsys):
    """The server here is a closed port: the URL is refused before anything talks to it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from cli.main import main

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert main(["deploy", "--work-pool", "nowhere", "--source", source]) == 2
    err = capsys.readouterr().err
    assert err == ("error: QA_DEPLOY_SOURCE / --source: the git URL for git.example has credentials in it; save the "
                   "token as a Prefect Secret block and name it in QA_GIT_CREDENTIALS_BLOCK\n")
    assert TOKEN not in err


def test_a_private_repository_is_registered_with_a_reference_to_its_token(prefect_server, tiny_model, tmp_path,
                                                                          monkeypatch):
    from prefect.blocks.system import Secret
    from prefect.client.schemas.actions import WorkPoolCreate

    from deployments.definitions import DEPLOYMENTS
    from deployments.register import register
    from qa_lib.errors import ConfigError

    bare = tmp_path / "qa.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(ROOT), str(bare)], check=True)
    branch = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--abbrev-ref", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    cfg = tiny_config(tiny_model, tmp_path / "out", publish_target=str(tmp_path / "published"))
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    monkeypatch.setenv("QA_DEPLOY_CONFIG", str(tmp_path / "deploy.yaml"))
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="git-pool", type="process"))
    source = f"file://{bare}@{branch}"

    # A block that is not there: named, before any deployment is written.
    monkeypatch.setenv("QA_GIT_CREDENTIALS_BLOCK", "no-such-block")
    with pytest.raises(ConfigError, match="QA_GIT_CREDENTIALS_BLOCK: no Secret block named 'no-such-block'"):
        register(work_pool="git-pool", source=source)
    with get_client(sync_client=True) as client:
        assert not [d for d in client.read_deployments() if d.work_pool_name == "git-pool"]

    Secret(value=TOKEN).save("qa-git-token", overwrite=True)
    monkeypatch.setenv("QA_GIT_CREDENTIALS_BLOCK", "qa-git-token")
    names = register(work_pool="git-pool", source=source)
    assert len(names) == len(DEPLOYMENTS)
    with get_client(sync_client=True) as client:
        mine = [d for d in client.read_deployments() if d.work_pool_name == "git-pool"]
        try:
            assert len(mine) == len(DEPLOYMENTS)
            for deployment in mine:
                clone = deployment.pull_steps[0]["prefect.deployments.steps.git_clone"]
                assert clone["repository"] == f"file://{bare}" and clone["branch"] == branch
                assert clone["credentials"] == {"access_token": "{{ prefect.blocks.secret.qa-git-token }}"}
                assert TOKEN not in json.dumps(deployment.model_dump(mode="json"))
        finally:  # the deployments' names are the ones test_deployments registers: leave them to it
            for deployment in mine:
                client.delete_deployment(deployment.id)
