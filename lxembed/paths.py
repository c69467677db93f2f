"""Where lxembed keeps its caches (XDG)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("LXEMBED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lxembed")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path
