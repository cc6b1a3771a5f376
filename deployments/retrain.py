"""Deployments of the retrain flow: weekly on a schedule, and manual; both on a process work pool."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prefect.schedules import Cron

from qdup.config import RetrainConfig

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/retrain.py:retrain"
FLOW_NAME = "qdup-retrain"
WORK_POOL = "qdup-process"
SCHEDULED = "weekly"
MANUAL = "manual"
# Mondays 03:00 in an explicit zone: retrain after the weekend's data lands, before people start work.
CRON = "0 3 * * 1"
TIMEZONE = "Europe/London"


def schedule() -> Cron:
    return Cron(CRON, timezone=TIMEZONE)


def parameters(config: RetrainConfig | None = None) -> dict[str, Any]:
    """The flow's one parameter, spelled out so the UI shows every value the schedule uses."""
    return {"config": (config or RetrainConfig()).model_dump(mode="json", by_alias=True)}


def register(work_pool: str = WORK_POOL, config: RetrainConfig | None = None, source: Path = ROOT) -> dict[str, str]:
    """Create or update both deployments on the server at PREFECT_API_URL; returns name -> id."""
    from flows.retrain import retrain

    flow = retrain.from_source(source=str(source), entrypoint=ENTRYPOINT)
    common = dict(
        work_pool_name=work_pool,
        parameters=parameters(config),
        build=False,
        push=False,
        print_next_steps=False,
        tags=["qdup", "retrain"],
    )
    ids = {
        SCHEDULED: flow.deploy(
            name=SCHEDULED, schedules=[schedule()], description=f"Weekly retraining ({CRON}, {TIMEZONE}).", **common
        ),
        MANUAL: flow.deploy(name=MANUAL, description="Retraining on demand; no schedule.", **common),
    }
    return {f"{FLOW_NAME}/{name}": str(i) for name, i in ids.items()}


def serve(config: RetrainConfig | None = None) -> None:
    """Serve the flow with its weekly schedule from this process (no work pool or worker)."""
    from flows.retrain import retrain

    retrain.serve(name=f"{SCHEDULED}-served", schedules=[schedule()], parameters=parameters(config), tags=["qdup"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Register qdup's deployments with the Prefect server at PREFECT_API_URL.")
    parser.add_argument("--work-pool", default=WORK_POOL)
    parser.add_argument("--config", help="JSON file with RetrainConfig fields for the deployments' parameters")
    args = parser.parse_args(argv)
    config = RetrainConfig.model_validate(json.loads(Path(args.config).read_text())) if args.config else None
    for name, deployment_id in register(args.work_pool, config).items():
        print(f"{name}: {deployment_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
