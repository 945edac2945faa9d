"""hamgraph: a benchmark harness for graph learning with HAM / nHAM."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hamgraph")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
