"""qdup: a retraining pipeline for duplicate-question detection."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qdup")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
