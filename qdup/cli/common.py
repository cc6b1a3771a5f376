"""What every `qdup` command shares: one-line argument errors, summaries with examples, and the `--model/-m` version flag."""

from __future__ import annotations

import argparse
import importlib.util
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

from qdup.errors import QdupError

DEFAULT_MODEL = "production"
STORE_HELP = "store URL (default: $QDUP_HOME/store)"
# What each extra of pyproject.toml installs that the commands needing it import (import names).
EXTRA_MODULES = {
    "pipeline": ("prefect", "great_expectations"),
    "serve": ("fastapi", "uvicorn", "httptools", "uvloop", "prometheus_client", "cachetools"),
}


class Parser(argparse.ArgumentParser):
    """argparse with an argument mistake answered in one line (exit 2) that names the help to read."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"qdup: error: {message} (see: {self.prog} --help)\n")


def add_command(sub: argparse._SubParsersAction, name: str, summary: str, examples: list[str], func=None,
                **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand with its one-line summary (shown by `qdup --help`) and examples (shown by its own --help)."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    p = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".", epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    # Also after the command (`qdup run --verbose`); SUPPRESS keeps the value given before it otherwise.
    p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="more output: Prefect's log lines (run), a timing breakdown (search), TensorFlow's start-up lines")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the Python traceback of an error")
    if func is not None:
        p.set_defaults(func=func)
    return p


def add_model_option(p: argparse.ArgumentParser, *, default: str | None = DEFAULT_MODEL, positional: bool = False,
                     folder: bool = False) -> None:
    """`--model/-m VERSION|ALIAS` (every command names a version this way); `positional` keeps the old
    `qdup CMD VERSION` spelling working for one release, with a deprecation note."""
    what = "version id or alias (production, latest)" + (", or an export folder" if folder else "")
    default_text = f" (default: {default})" if default else " (required)"
    p.add_argument("-m", "--model", default=None, metavar="VERSION", help=what + default_text)
    p.set_defaults(model_default=default)
    if positional:
        p.add_argument("ref", nargs="?", metavar="VERSION", help=argparse.SUPPRESS)


def settle_model(args: argparse.Namespace, *, required: bool = True) -> str | None:
    """The version the command names: --model, else the deprecated positional (with a note), else the default."""
    ref = getattr(args, "ref", None)
    if ref is not None:
        if args.model is not None and args.model != ref:
            raise QdupError(f"two versions given ({ref!r} and --model {args.model!r}); give only --model VERSION")
        print(f"qdup: note: `qdup {args.command} VERSION` is deprecated and goes in the next release; "
              f"write `qdup {args.command} --model {ref}`", file=sys.stderr)
        args.model = ref
    if args.model is None:
        args.model = getattr(args, "model_default", None)
    if args.model is None and required:
        raise QdupError(f"name a version: qdup {args.command} --model VERSION (ids and aliases: qdup versions)")
    return args.model


def require_extra(extra: str, command: str) -> None:
    """QdupError naming the pip command when a module of `extra` is not installed (found without importing it)."""
    missing = [name for name in EXTRA_MODULES[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise QdupError(f"`qdup {command}` needs {', '.join(missing)}, which is not installed; "
                        f"install it with: pip install 'qdup[{extra}]'")


def bind_port(host: str, port: int, command: str) -> socket.socket:
    """A socket listening on host:port, made before a model loads so that a busy port answers at once; the server
    accepts on it once loaded (a client connecting meanwhile waits in the backlog). Bound here rather than by uvicorn,
    which exits without a message we own; listening at once, since two sockets with SO_REUSEADDR may both bind a port
    that nothing listens on yet."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError as exc:
        sock.close()
        raise QdupError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); another server holds it? "
                        f"stop it or pick another port: qdup {command} --port {port + 1 if port < 65535 else 8000}") from None
    sock.set_inheritable(True)
    return sock


def open_store(args: argparse.Namespace):
    """The store `--store` names (default $QDUP_HOME/store)."""
    from qdup.registry.store import ArtifactStore

    return ArtifactStore(args.store)


# The file every export folder holds (qdup.model.exported.THRESHOLD_FILE; named here to keep that module's imports out).
EXPORT_MARKER = "threshold.json"
FIRST_RUN = "qdup demo-data demo.tsv --rows 20000 && qdup run --source demo.tsv --n-train 0.75 --n-test 0.25"


def export_folder(text: str) -> Path | None:
    """The export folder `text` names (a folder with threshold.json, or one holding such a `model/`), else None."""
    path = Path(text).expanduser()
    for candidate in (path, path / "model"):
        if (candidate / EXPORT_MARKER).is_file():
            return candidate
    return None


def resolve_version(store, ref: str) -> str:
    """The version id `ref` names; an unknown one is one line saying how to list the known ones (or, in an empty
    store, how to make the first; for an export folder, that this command names a version in the store)."""
    try:
        return store.resolve(ref)
    except QdupError as exc:
        if export_folder(ref) is not None:
            raise QdupError(f"--model {ref}: an export folder; this command takes a version of the store (its ids and "
                            "aliases: qdup versions)") from None
        if not store.versions():
            raise QdupError(f"no version in the store {store.url} yet: train and publish one first: {FIRST_RUN}") from None
        raise QdupError(f"{exc}; list versions with: qdup versions") from None


def port(text: str) -> int:
    """A TCP port number (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port in 1-65535")
    return value
