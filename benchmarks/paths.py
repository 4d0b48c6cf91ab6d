"""Where benchmark data lives: ``$RDFM_DATA_DIR`` or ``../shared/data`` beside the project."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Root of the data folder: ``$RDFM_DATA_DIR`` if set, else ``<project>/../shared/data``."""
    env = os.environ.get("RDFM_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return PROJECT_ROOT.parent / "shared" / "data"


def cache_dir() -> Path:
    """Writable cache for derived datasets: ``$RDFM_CACHE_DIR`` or ``<project>/.cache``."""
    env = os.environ.get("RDFM_CACHE_DIR")
    path = Path(env).expanduser() if env else PROJECT_ROOT / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
