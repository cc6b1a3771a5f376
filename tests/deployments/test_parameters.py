"""Deployment parameters carry only what the user set; the schedule is the documented one."""

from __future__ import annotations

from deployments import retrain as dep
from qdup.config import RetrainConfig


def test_no_config_means_no_parameters_so_defaults_stay_with_the_code():
    assert dep.parameters() == {}


def test_parameters_hold_only_the_fields_the_user_set():
    config = RetrainConfig.model_validate({"fetch": {"source": "/data/q.tsv"}, "train": {"epochs": 3}, "validate": {"failed_rows_shown": 9}})
    assert dep.parameters(config) == {
        "config": {"fetch": {"source": "/data/q.tsv"}, "train": {"epochs": 3}, "validate": {"failed_rows_shown": 9}}
    }
    # A value set to its default is still the user's choice, and is kept.
    assert dep.parameters(RetrainConfig.model_validate({"seed": 42})) == {"config": {"seed": 42}}
    # What the flow receives is the full config: the unset fields come from the code's defaults.
    assert RetrainConfig.model_validate(dep.parameters(config)["config"]).train.batch_size == RetrainConfig().train.batch_size


def test_container_pools_are_those_whose_jobs_take_an_image():
    assert dep.runs_in_containers({"variables": {"properties": {"image": {"type": "string"}, "env": {}}}})
    assert not dep.runs_in_containers({"variables": {"properties": {"working_dir": {"type": "string"}}}})
    assert dep.schedule().cron == dep.CRON


def test_the_feedback_parameter_turns_training_with_feedback_on_or_off():
    assert dep.parameters(feedback=True) == {"config": {"feedback": {"enabled": True}}}
    assert RetrainConfig.model_validate(dep.parameters(feedback=True)["config"]).feedback.enabled
    config = RetrainConfig.model_validate({"train": {"epochs": 3}, "feedback": {"enabled": True, "since": "2026-12-01"}})
    assert dep.parameters(config, feedback=False) == {
        "config": {"train": {"epochs": 3}, "feedback": {"enabled": False, "since": "2026-12-01"}}
    }
    assert dep.parameters(config) == {"config": {"train": {"epochs": 3}, "feedback": {"enabled": True, "since": "2026-12-01"}}}
