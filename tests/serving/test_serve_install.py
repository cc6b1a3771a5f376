"""Declared dependencies: every package qdup imports is declared, and a `qdup[serve]` host serves without the pipeline's packages."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.serving.conftest import make_store

REPO = Path(__file__).resolve().parents[2]
PROJECT = ("qdup", "tasks", "flows", "deployments", "data_contracts")
# What a serving host must not need (the list, and Prefect with them).
PIPELINE_ONLY = {"great-expectations", "dask", "distributed", "matplotlib", "prefect", "prefect-dask", "tensorboard"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared() -> dict[str, set[str]]:
    """Distribution names by where they are declared: "base" and each extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out = {"base": {_name(r) for r in project["dependencies"]}}
    out |= {extra: {_name(r) for r in reqs} for extra, reqs in project["optional-dependencies"].items()}
    return out


def imported_top_levels() -> set[str]:
    names: set[str] = set()
    for package in PROJECT:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in PROJECT and n != "__future__"}


def test_every_imported_package_is_declared():
    every = set().union(*declared().values())
    distributions = packages_distributions()
    missing = {m: distributions.get(m) for m in imported_top_levels()
               if not {d.lower().replace("_", "-") for d in distributions.get(m, [m])} & every}
    assert missing == {}


def test_the_serve_install_leaves_the_pipeline_out():
    deps = declared()
    assert (deps["base"] | deps["serve"]) & PIPELINE_ONLY == set()
    assert {"fastapi", "uvicorn"} <= deps["serve"] and {"prefect", "great-expectations"} <= deps["pipeline"]


# Runs in a fresh interpreter where the pipeline's packages cannot be imported, as on a `qdup[serve]` host.
SERVE_WITHOUT_PIPELINE = """
import importlib.abc, json, sys
BLOCKED = {"great_expectations", "dask", "distributed", "matplotlib", "prefect", "prefect_dask", "tensorboard"}
tried = []

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            tried.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Absent())
from fastapi.testclient import TestClient
from qdup.cli.serve import cmd_serve_model  # the command's module
from qdup.registry.store import ArtifactStore
from qdup.serving.follower import ModelFollower
from qdup.serving.http import create_app
from qdup.serving.settings import ServeConfig

store = ArtifactStore(sys.argv[1])
follower = ModelFollower(store, "production", poll_s=60)
follower.load_initial()
with TestClient(create_app(ServeConfig(store=store.url), follower)) as client:
    answer = client.post("/v1/similarity", json={"question1": "how do i learn python", "question2": "learn python how"})
    model = client.get("/v1/model").json()
print(json.dumps({"status": answer.status_code, "version": model["version"],
                  "pipeline_imports": sorted({t.split(".")[0] for t in tried} - {"matplotlib"})}))
"""


def test_a_version_is_served_without_the_pipelines_packages(tmp_path, tiny_exports):
    store, v1, _ = make_store(tmp_path / "store", tiny_exports)
    env = {**os.environ, "PYTHONPATH": str(REPO), "QDUP_HOME": str(tmp_path / "home")}
    ran = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_PIPELINE, store.url], env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    # Keras looks for matplotlib (plotting utilities) and goes on without it; nothing else of the pipeline is wanted.
    assert json.loads(ran.stdout.strip().splitlines()[-1]) == {"status": 200, "version": v1, "pipeline_imports": []}
