"""Where data lives: a writable cache and an optional read-only mirror of raw files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

CACHE_ENV = "HAMGRAPH_DATA"
MIRROR_ENV = "HAMGRAPH_MIRROR"


@dataclass(frozen=True)
class DataPaths:
    cache: Path  # PyG-style data root; loaders write processed/ files here
    mirror: Path | None  # a PyG-style root of raw files, copied into the cache, never written


def data_paths_from_env(cache: str | os.PathLike | None = None) -> DataPaths:
    """Cache: argument, else $HAMGRAPH_DATA, else the user's cache dir. Mirror: $HAMGRAPH_MIRROR."""
    cache_dir = cache or os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("hamgraph")
    mirror = os.environ.get(MIRROR_ENV) or None
    return DataPaths(
        cache=Path(cache_dir).expanduser(),
        mirror=Path(mirror).expanduser() if mirror else None,
    )
