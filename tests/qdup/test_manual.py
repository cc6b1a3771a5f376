"""The manual's generated parts (docs/hooks/qdup_docs.py): what they render comes from the code and the results files."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hook():
    spec = importlib.util.spec_from_file_location("qdup_docs", ROOT / "docs" / "hooks" / "qdup_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_reference_has_every_field_of_every_section(hook):
    from qdup.config import RetrainConfig

    page = hook.on_page_markdown("# Configuration\n\n<!-- qdup:config -->\n", None, None, None)
    assert "<!-- qdup:" not in page
    for name, field in RetrainConfig.model_fields.items():
        assert f"| `{field.alias or name}` |" in page, name
        section = field.annotation
        for sub, sub_field in getattr(section, "model_fields", {}).items():
            assert re.search(rf"## {section.__name__}\n(.|\n)*?\| `{sub_field.alias or sub}` \|", page), f"{name}.{sub}"
    assert "| `epochs` | int | `50` | at most; early stopping usually ends training sooner (> 0) |" in page


def test_the_http_reference_has_every_route_of_the_app(hook):
    spec = hook.openapi_schema()
    page = hook.http_reference()
    for path, operations in spec["paths"].items():
        for method in operations:
            assert f"## {method.upper()} {path} " in page
    assert "/v1/similarity" in spec["paths"] and "### PairRequest" in page


def test_a_results_section_names_the_command_and_commit_its_file_records(hook):
    text = hook.results_section("bench/results/serve/results.json", "bench/results/serve/results.md")
    assert "- command: `python -m bench.load --store" in text
    assert re.search(r"- commit: `[0-9a-f]{7,}", text)
    # The benchmark's own title is dropped and its links into the repository become text (the manual has no such page).
    assert "\n# " not in text and "](" not in text


def test_a_marker_that_cannot_be_filled_fails_the_build(hook):
    with pytest.raises(FileNotFoundError, match="bench/results/nothing.json"):
        hook.on_page_markdown("<!-- qdup:results bench/results/nothing.json -->", None, None, None)
    with pytest.raises(ValueError, match="unknown qdup docs marker"):
        hook.on_page_markdown("<!-- qdup:nonsense -->", None, None, None)
