"""What every `qdup` command shares: one-line argument errors, summaries with examples, and the `--model/-m` version flag."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from qdup.errors import QdupError

DEFAULT_MODEL = "production"
STORE_HELP = "store URL (default: $QDUP_HOME/store)"


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


def open_store(args: argparse.Namespace):
    """The store `--store` names (default $QDUP_HOME/store)."""
    from qdup.registry.store import ArtifactStore

    return ArtifactStore(args.store)


def resolve_version(store, ref: str) -> str:
    """The version id `ref` names; an unknown one is one line saying how to list the known ones."""
    try:
        return store.resolve(ref)
    except QdupError as exc:
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
