"""Register the deployments in `definitions.py` with the configured Prefect server."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from deployments.definitions import DATA_LANDED_EVENT, DEPLOYMENTS, settings
from qa_lib.config import PipelineConfig
from qa_lib.env import parse_number
from qa_lib.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


# A flow run reports a heartbeat this often (Prefect's minimum); a run silent for the grace period
# (QA_HEARTBEAT_GRACE_S) is marked Crashed (its machine died: a preempted GPU, an evicted pod),
# instead of showing Running for ever.
HEARTBEAT_S = 30
ZOMBIE_AUTOMATION = "qa-pipeline: crash flow runs without heartbeats"


def job_variables(gpus: int, image: str | None, store: str | None = None) -> dict:
    env = {"QA_PIPELINE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}
    if store:  # every run of the pool reads and writes this store (s3:// for a fleet)
        env["QA_PIPELINE_STORE"] = store
    variables: dict = {"env": env}
    if image:  # Docker / Kubernetes pools
        variables["image"] = image
    if gpus > 1:
        env["QA_PIPELINE_NPROC"] = str(gpus)
    return variables


DEFAULT_REGISTRY = ROOT / "runs" / "registry"


def deployment_config(spec: dict, config: PipelineConfig, where: str) -> PipelineConfig:
    """The config a deployment is registered with: one that can run as registered, every night.
    `answer-qa` gets retrain's publish target, so that it answers with what retrain promotes."""
    if not (spec.get("publishes") or spec.get("uses_champion")):
        return config
    if spec.get("publishes") and config.eval_data is None:
        raise ConfigError(f"deploy: {spec['name']} (nightly and on new data) needs eval_data, the fixed set its "
                          f"champion gate compares on; set it in {where}")
    if config.publish_target:
        return config
    return config.model_copy(update={"publish_target": str(DEFAULT_REGISTRY)})


def heartbeat_grace(value: str) -> int:
    return parse_number("QA_HEARTBEAT_GRACE_S", value, int, HEARTBEAT_S + 1,
                        f"a whole number of seconds above the {HEARTBEAT_S} s between heartbeats")


def gpu_count(value: str) -> int:
    return parse_number("QA_GPUS", value, int, 0, "a whole number of GPUs per flow run, 0 or more")


def nightly_schedule(cron: str, timezone: str):
    """The retrain schedule, checked before any deployment is registered (`Cron` alone would leave
    a bad time zone to the server, after the first deployments are in)."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.schedules import Cron
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as exc:
        if any(error["loc"][:1] == ("timezone",) for error in exc.errors()):
            raise ConfigError("QA_RETRAIN_TZ must be an IANA time zone such as Europe/Paris") from None
        raise ConfigError("QA_RETRAIN_CRON must be a cron expression such as '0 2 * * *'") from None
    return Cron(cron, timezone=timezone)


def ensure_zombie_automation(grace_s: int) -> None:
    """The automation Prefect documents for runs whose process died without a word: no heartbeat,
    completion or failure within `grace_s`, and the run is marked Crashed. Created once; a later
    deploy with another grace updates it."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    trigger = EventTrigger(
        after={"prefect.flow-run.heartbeat"},
        expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
        match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=timedelta(seconds=grace_s),
    )
    actions = [ChangeFlowRunState(state=StateType.CRASHED,
                                  message=f"no heartbeat for {grace_s} s: the run's process or machine died")]
    try:
        existing = Automation.read(name=ZOMBIE_AUTOMATION)
    except ValueError:  # not there yet
        Automation(name=ZOMBIE_AUTOMATION, trigger=trigger, actions=actions).create()
        return
    if existing.trigger.within != trigger.within:
        existing.trigger, existing.actions = trigger, actions
        existing.update()


def check_server(pool: str) -> None:
    """A real server, reachable, that has the work pool: each said in one line before anything is
    registered (a temporary server's deployments would vanish with it; a missing pool was Prefect's
    ValueError after the automation had been written)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.server import api_url, check_api

    url = api_url()
    if url is None:
        raise ConfigError("deploy needs a Prefect server to register with: set PREFECT_API_URL (deployments "
                          "registered with a temporary server would vanish with it)")
    check_api()
    try:
        with get_client(sync_client=True) as client:
            client.read_work_pool(pool)
    except ObjectNotFound:
        raise ConfigError(f"work pool {pool!r} not found on {url}: create it first "
                          f"(prefect work-pool create {pool} --type process)") from None


def split_source(source: str) -> tuple[str, str | None]:
    """`URL[@ref]` → (URL, ref). Refuses a URL with credentials in it: the deployment stores its
    clone step, URL included, where the UI and every worker's log show it."""
    url, ref = source, None
    head, _, tail = source.rpartition("@")
    if head and "/" not in tail and ":" not in tail:  # URL@ref (not the user@ of an SSH URL)
        url, ref = head, tail
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and (parts.username or parts.password):
        # Not echoed: the URL holds the token.
        raise ConfigError(f"QA_DEPLOY_SOURCE / --source: the git URL for {parts.hostname} has credentials in it; "
                          "save the token as a Prefect Secret block and name it in QA_GIT_CREDENTIALS_BLOCK")
    return url, ref


def code_source(source: str | None, credentials_block: str | None = None):
    """Where workers get the code: this checkout's path (workers must have it at that path), or a
    git repository (`URL[@ref]`) that each flow run clones, recording the commit it ran, with the
    token of the Secret block `credentials_block` for a private one."""
    if not source:
        return str(ROOT)
    from prefect.runner.storage import GitRepository

    url, ref = split_source(source)
    credentials = None
    if credentials_block:
        from prefect.blocks.system import Secret

        try:
            credentials = {"access_token": Secret.load(credentials_block)}
        except ValueError:
            raise ConfigError(f"QA_GIT_CREDENTIALS_BLOCK: no Secret block named {credentials_block!r} on the "
                              "server") from None
    return GitRepository(url=url, branch=ref, credentials=credentials)


def register(work_pool: str | None = None, config_path: str | None = None, source: str | None = None,
             store: str | None = None) -> list[str]:
    from prefect import flow as prefect_flow
    from prefect.events import DeploymentEventTrigger

    opts = settings()
    pool = work_pool or opts["work_pool"]
    source = source or opts["source"]
    store = store or opts["store"]
    config_file = ROOT / (config_path or opts["config"])
    config = PipelineConfig.from_yaml(config_file)
    # Checked for every deployment before any is registered: all or nothing.
    configs = {spec["name"]: deployment_config(spec, config, str(config_file)) for spec in DEPLOYMENTS}
    # So are the settings from the environment, before the automation and the first deployment.
    grace = heartbeat_grace(opts["heartbeat_grace_s"])
    schedule = nightly_schedule(opts["cron"], opts["timezone"])
    variables = job_variables(gpu_count(opts["gpus"]), opts["image"], store)
    if source:
        split_source(source)
    check_server(pool)
    # Built once, so the Secret block is read once and found missing before anything is written.
    code = code_source(source, opts["git_credentials_block"])
    ensure_zombie_automation(grace)
    names = []
    for spec in DEPLOYMENTS:
        flow = prefect_flow.from_source(source=code, entrypoint=spec["entrypoint"])
        params = {"config": configs[spec["name"]].model_dump(mode="json")}
        kwargs: dict = {}
        if spec.get("nightly"):
            kwargs["schedules"] = [schedule]
        if spec.get("on_data_landed"):
            kwargs["triggers"] = [DeploymentEventTrigger(
                name="retrain-on-new-data",
                expect={DATA_LANDED_EVENT},
                match={"prefect.resource.id": "qa-pipeline.dataset.*"},
                parameters=params,
            )]
        if spec.get("concurrency_limit"):
            kwargs["concurrency_limit"] = spec["concurrency_limit"]
        deployment_id = flow.deploy(
            name=spec["name"], work_pool_name=pool, parameters=params, description=spec["description"],
            job_variables=variables, build=False, push=False,
            print_next_steps=False, ignore_warnings=True,
            # The form marks valued fields required (config._valued_fields_required); a caller of
            # run_deployment may still send a partial config, which the flow completes and checks.
            enforce_parameter_schema=False, **kwargs,
        )
        target = configs[spec["name"]].publish_target if spec.get("publishes") else None
        names.append(f"{flow.name}/{spec['name']} ({deployment_id})" + (f", publishing to {target}" if target else ""))
    return names
