"""MkDocs hook: fills the manual's generated parts at build time, so that none of them is a hand-kept copy.

A page asks for a part with a marker line:

    <!-- qdup:config -->                         RetrainConfig's JSON schema, one table per section
    <!-- qdup:openapi -->                        the HTTP server's OpenAPI schema, one section per endpoint
    <!-- qdup:cli -->                            every `qdup` command's --help, from the CLI's own parser
    <!-- qdup:results FILE.json [FILE.md] -->    a benchmark's results: the command and commit that wrote them,
                                                 then the tables the benchmark wrote beside them

Hand-written because the parts are small and project-specific: a plugin would still need this code to read the
results files. A marker that cannot be filled fails the build (raised, so `mkdocs build --strict` stops).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- qdup:(?P<kind>[a-z]+)(?P<args>[^>]*)-->$", re.MULTILINE)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return MARKER.sub(lambda m: render(m["kind"], m["args"].split()), markdown)


def render(kind: str, args: list[str]) -> str:
    if kind == "config":
        return config_reference()
    if kind == "openapi":
        return http_reference()
    if kind == "cli":
        return cli_reference()
    if kind == "results":
        return results_section(*args)
    raise ValueError(f"unknown qdup docs marker: {kind!r}")


# --- JSON schema tables (configuration and HTTP bodies) ---------------------------------------------------------

def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def schema_type(prop: dict[str, Any]) -> str:
    """A property's type in a few words: `int`, `"a" | "b"`, `list of Pair`, `TrainConfig`."""
    if "$ref" in prop:
        return f"[{_ref_name(prop['$ref'])}](#{_ref_name(prop['$ref']).lower()})"
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return " or ".join(schema_type(p) for p in prop[key])
    if "enum" in prop:
        return " or ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {schema_type(prop.get('items', {}))}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"map of {schema_type(prop['additionalProperties'])}"
    return {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}.get(kind, kind)


CONSTRAINTS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
               ("minLength", "length >="), ("maxLength", "length <="), ("minItems", "items >="), ("maxItems", "items <="),
               ("pattern", "matches"))


def schema_table(schema: dict[str, Any]) -> str:
    """One row per property of an object schema: name, type, default, constraints and description."""
    props = schema.get("properties", {})
    if not props:
        return "(no fields)\n"
    required = set(schema.get("required", []))
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, prop in props.items():
        if name in required:
            default = "required"
        elif isinstance(prop.get("default"), dict) and "$ref" in prop:
            default = "its section's defaults"
        else:
            default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
        limits = [f"{word} {prop[key]}" for key, word in CONSTRAINTS if key in prop]
        text = " ".join(x for x in (prop.get("description", ""), f"({', '.join(limits)})" if limits else "") if x)
        rows.append(f"| `{name}` | {_cell(schema_type(prop))} | {_cell(default)} | {_cell(text)} |")
    return "\n".join(rows) + "\n"


def _describe(schema: dict[str, Any]) -> str:
    return (schema.get("description") or "").strip()


def config_reference() -> str:
    """RetrainConfig's schema: its own fields, then each section's model, in the order the fields name them."""
    from qdup.config import RetrainConfig

    schema = RetrainConfig.model_json_schema()
    defs = schema.get("$defs", {})
    out = [f"## RetrainConfig\n\n{_describe(schema)}\n\n{schema_table(schema)}"]
    for name in _defs_in_order(schema, defs):
        out.append(f"## {name}\n\n{_describe(defs[name])}\n\n{schema_table(defs[name])}")
    return "\n".join(out)


def _defs_in_order(schema: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    """Names of the $defs a schema reaches, first seen first (fields before nested fields)."""
    seen: list[str] = []
    todo = [schema]
    while todo:
        for ref in re.findall(r'"\$ref": "#/\$defs/([^"]+)"', json.dumps(todo.pop(0).get("properties", {}))):
            if ref not in seen:
                seen.append(ref)
                todo.append(defs[ref])
    return seen + sorted(set(defs) - set(seen))


# --- HTTP API -----------------------------------------------------------------------------------------------------

def openapi_schema() -> dict[str, Any]:
    """The server's own OpenAPI schema, from the app `qdup serve-model` runs, over an empty store in a temporary
    folder: the app is built, never started, so nothing is loaded or served."""
    import tempfile

    from qdup.serving.http import create_app
    from qdup.serving.settings import ServeConfig

    with tempfile.TemporaryDirectory(prefix="qdup-docs-") as store:
        return create_app(ServeConfig(store=store)).openapi()


def _body_schema(content: dict[str, Any]) -> dict[str, Any] | None:
    return (content.get("application/json") or {}).get("schema")


def http_reference() -> str:
    spec = openapi_schema()
    schemas = spec.get("components", {}).get("schemas", {})
    info = spec.get("info", {})
    out = [f"{info.get('summary') or info.get('description') or ''}\n\nOpenAPI {spec.get('openapi')}, API version "
           f"{info.get('version')}. The server also serves this schema at `/openapi.json` and an interactive page at `/docs`.\n"]
    out.append("| method | path | what it answers |\n|---|---|---|")
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            out.append(f"| {method.upper()} | [`{path}`](#{_anchor(method, path)}) | {_cell(op.get('summary', ''))} |")
    out.append("")
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            out.append(f"## {method.upper()} {path} {{#{_anchor(method, path)}}}\n\n{op.get('summary', '')}\n")
            if op.get("description"):
                out.append(op["description"].strip() + "\n")
            body = _body_schema(op.get("requestBody", {}).get("content", {}))
            if body is not None:
                out.append(f"**Request body** (JSON): {schema_type(body)}\n")
            out.append("| status | meaning | body |\n|---|---|---|")
            for status, answer in op.get("responses", {}).items():
                schema = _body_schema(answer.get("content", {}))
                out.append(f"| {status} | {_cell(answer.get('description', ''))} | {_cell(schema_type(schema)) if schema else ''} |")
            out.append("")
    out.append("## Schemas\n")
    for name, schema in schemas.items():
        out.append(f"### {name}\n\n{_describe(schema)}\n\n{schema_table(schema)}")
    return "\n".join(out)


def _anchor(method: str, path: str) -> str:
    return f"{method}-{path}".lower().replace("/", "-").replace("{", "").replace("}", "").replace("--", "-").strip("-")


# --- command line -------------------------------------------------------------------------------------------------

def cli_reference() -> str:
    """`qdup --help` and each command's --help (nested commands too), as the parser prints them."""
    import argparse

    from qdup.cli.main import make_parser

    out = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        out.append(f"## {name}\n\n```text\n{parser.format_help().rstrip()}\n```\n")
        for action in parser._actions:  # argparse has no public accessor for its subcommands
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    walk(child, f"{name} {sub}")

    walk(make_parser(), "qdup")
    return "\n".join(out)


# --- benchmark results --------------------------------------------------------------------------------------------

def _file_commit(path: Path) -> str | None:
    """The commit that last wrote a results file, when the benchmark did not record its own."""
    try:
        got = subprocess.run(["git", "log", "-1", "--format=%h", "--", str(path)], cwd=ROOT, capture_output=True,
                             text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return got.stdout.strip() or None


def _recorded(data: dict[str, Any], key: str) -> Any:
    return data.get(key) if key in data else (data.get("meta") or {}).get(key)


def provenance(json_path: Path) -> str:
    """Command, commit and machine as the results file recorded them."""
    data = json.loads(json_path.read_text())
    command = _recorded(data, "command") or _quality_command(data)
    commit = _recorded(data, "commit")
    machine = _recorded(data, "machine")
    lines = [f"Results file `{json_path.relative_to(ROOT)}`:\n"]
    lines.append(f"- command: `{command}`" if command else "- command: not recorded in the results file (see the benchmark's own text below)")
    if commit:
        lines.append(f"- commit: `{commit}`")
    else:
        committed = _file_commit(json_path)
        lines.append(f"- commit: not recorded by the benchmark; the results file was last committed in `{committed}`" if committed
                     else "- commit: not recorded by the benchmark")
    if machine:
        shown = ", ".join(f"{k} {v}" for k, v in machine.items()) if isinstance(machine, dict) else machine
        lines.append(f"- machine: {_cell(shown)}")
    for key in ("started", "label", "config"):
        value = _recorded(data, key)
        if value:
            lines.append(f"- {key}: {_cell(value)}")
    return "\n".join(lines) + "\n"


def _quality_command(data: dict[str, Any]) -> str | None:
    """bench.quality records its arguments in `meta` rather than a command line: the command they make."""
    meta = data.get("meta") or {}
    if "label" not in meta:
        return None
    parts = ["python -m bench.quality --out bench/results/quality"]
    parts += [f"--protocol {p}" for p in ("sample", "larger") if p in data and not {"sample", "larger"} <= set(data)]
    config = meta.get("config")
    if config and (ROOT / config).is_file():
        parts.append(f"--config {config}")
    elif config:
        return None  # a configuration the file describes in words: no command line to show
    if meta["label"] != "defaults":
        parts.append(f"--label {meta['label']}")
    return " ".join(parts)


LINK = re.compile(r"\[([^\]]+)\]\((?!https?://|#)[^)]+\)")


def included_markdown(md_path: Path) -> str:
    """A benchmark's own Markdown under the page's heading: its title dropped, headings one level down, and links
    into the repository (outside the manual) shown as their text."""
    text = md_path.read_text()
    text = re.sub(r"\A# .*\n", "", text)
    text = re.sub(r"^(#{1,5}) ", r"#\1 ", text, flags=re.MULTILINE)
    return LINK.sub(lambda m: m[1], text)


def results_section(*names: str) -> str:
    """Provenance of each .json, then the text of each .md, paths relative to the repository root."""
    if not names:
        raise ValueError("qdup:results needs at least one results file")
    out = []
    for name in names:
        path = ROOT / name
        if not path.is_file():
            raise FileNotFoundError(f"qdup:results: {name} does not exist")
        out.append(provenance(path) if path.suffix == ".json" else f"From `{name}`, as the benchmark wrote it:\n\n{included_markdown(path)}")
    return "\n".join(out)
