"""onehead's cache folder, at the bottom of the layers (the head model, data and metrics use it).

    from onehead.cache import default_cache_dir
    default_cache_dir()      # $ONEHEAD_CACHE (with ~ expanded), else ~/.cache/onehead
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """onehead's cache folder: $ONEHEAD_CACHE, else ~/.cache/onehead."""
    env = os.environ.get("ONEHEAD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "onehead"
