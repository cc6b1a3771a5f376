"""Deployments of the retrain flow, weekly on a schedule and manual, on a process or a container work pool."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect.schedules import Cron

from qdup.config import RetrainConfig, load_config_file
from qdup.errors import ConfigError, QdupError

ROOT = Path(__file__).resolve().parents[1]
# A file path inside a checkout (this one, or a git clone made by the worker).
ENTRYPOINT = "flows/retrain.py:retrain"
# A module path, importable wherever qdup is installed (the image built from the Dockerfile).
MODULE_ENTRYPOINT = "flows.retrain.retrain"
FLOW_NAME = "qdup-retrain"
WORK_POOL = "qdup-process"
SCHEDULED = "weekly"
MANUAL = "manual"
# Mondays 03:00 in an explicit zone: retrain after the weekend's data lands, before people start work.
CRON = "0 3 * * 1"
TIMEZONE = "Europe/London"


def schedule() -> Cron:
    return Cron(CRON, timezone=TIMEZONE)


def parameters(config: RetrainConfig | None = None, feedback: bool | None = None) -> dict[str, Any]:
    """Only the fields the user set; every other value stays with the code, so a changed default reaches the schedule.

    `feedback`: whether each scheduled run trains with the store's feedback too (config.feedback.enabled); None: as `config` says.
    """
    if config is None and feedback is None:
        return {}
    data = config.model_dump(mode="json", by_alias=True, exclude_unset=True) if config is not None else {}
    if feedback is not None:
        data["feedback"] = {**data.get("feedback", {}), "enabled": feedback}
    return {"config": data}


def runs_in_containers(base_job_template: dict[str, Any]) -> bool:
    """True for a pool whose jobs take an image (docker, kubernetes, ...): the worker cannot see this machine's files."""
    return "image" in base_job_template.get("variables", {}).get("properties", {})


def _work_pool(name: str):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            return client.read_work_pool(name)
    except ObjectNotFound:
        raise ConfigError(
            f"work pool {name!r} does not exist on the Prefect server: create it first "
            f"(prefect work-pool create {name} --type process|docker|kubernetes)"
        ) from None


def register(
    work_pool: str = WORK_POOL,
    config: RetrainConfig | None = None,
    *,
    image: str | None = None,
    git_source: str | None = None,
    git_branch: str | None = None,
    source: Path = ROOT,
    feedback: bool | None = None,
) -> dict[str, str]:
    """Create or update both deployments on the server at PREFECT_API_URL; returns name -> id.

    Where the worker finds the code:
    - `image`: the image's installed qdup (a container pool; built from the repository's Dockerfile);
    - `git_source`: a clone of that repository made by the worker at run time (any pool);
    - neither: the checkout at `source` on this machine (a process pool only).
    """
    from prefect.flows import EntrypointType
    from prefect.runner.storage import GitRepository

    from flows.retrain import retrain

    pool = _work_pool(work_pool)
    containers = runs_in_containers(pool.base_job_template)
    if containers and not image:
        raise ConfigError(
            f"work pool {work_pool!r} (type {pool.type}) runs flows in containers: give --image REGISTRY/qdup:TAG "
            "(built from the repository's Dockerfile), optionally with --git-source URL; "
            "a path on this machine cannot be pulled there"
        )
    if image and not containers:
        raise ConfigError(
            f"work pool {work_pool!r} (type {pool.type}) does not run containers, so --image has no effect: "
            "drop it, or use a docker or kubernetes pool"
        )
    entrypoint_type = EntrypointType.FILE_PATH
    if git_source:
        flow = retrain.from_source(source=GitRepository(url=git_source, branch=git_branch), entrypoint=ENTRYPOINT)
    elif image:
        flow, entrypoint_type = retrain, EntrypointType.MODULE_PATH
    else:
        flow = retrain.from_source(source=str(source), entrypoint=ENTRYPOINT)
    common: dict[str, Any] = {
        "work_pool_name": work_pool,
        "image": image,
        # The image is built by `docker build` from the Dockerfile and pushed by the release process.
        "build": False,
        "push": False,
        "parameters": parameters(config, feedback),
        "entrypoint_type": entrypoint_type,
        "print_next_steps": False,
        "ignore_warnings": True,
        "tags": ["qdup", "retrain"],
    }
    ids = {
        SCHEDULED: flow.deploy(
            name=SCHEDULED, schedules=[schedule()], description=f"Weekly retraining ({CRON}, {TIMEZONE}).", **common
        ),
        MANUAL: flow.deploy(name=MANUAL, description="Retraining on demand; no schedule.", **common),
    }
    return {f"{FLOW_NAME}/{name}": str(i) for name, i in ids.items()}


def serve(config: RetrainConfig | None = None, feedback: bool | None = None) -> None:
    """Serve the flow with its weekly schedule from this process (no work pool or worker)."""
    from flows.retrain import retrain

    retrain.serve(name=f"{SCHEDULED}-served", schedules=[schedule()], parameters=parameters(config, feedback), tags=["qdup"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.retrain",
        description="Register qdup's deployments with the Prefect server at PREFECT_API_URL.",
    )
    parser.add_argument("--work-pool", default=WORK_POOL)
    parser.add_argument("--image", metavar="REGISTRY/qdup:TAG", help="image for a container pool (docker, kubernetes)")
    parser.add_argument("--git-source", metavar="URL", help="git repository the worker clones the flow code from")
    parser.add_argument("--git-branch", help="branch of --git-source (default: the repository's default branch)")
    parser.add_argument("--config", help="JSON file with the RetrainConfig fields to set; the rest stay code defaults")
    parser.add_argument("--feedback", action="store_true", default=None,
                        help="every run trains with the store's feedback too (feedback.enabled)")
    args = parser.parse_args(argv)
    try:
        config = RetrainConfig.model_validate(load_config_file(args.config)) if args.config else None
        if args.git_branch and not args.git_source:
            raise ConfigError("--git-branch needs --git-source")
        registered = register(
            args.work_pool, config, image=args.image, git_source=args.git_source, git_branch=args.git_branch, feedback=args.feedback
        )
    except QdupError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    for name, deployment_id in registered.items():
        print(f"{name}: {deployment_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
