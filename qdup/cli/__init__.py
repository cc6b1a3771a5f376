"""The `qdup` command line: the top layer, over the flows, the registry and serving."""

from qdup.cli.main import main

__all__ = ["main"]
