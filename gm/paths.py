r"""Where rdfm (its commands, data loaders and benchmarks) reads data and writes caches, for a source
checkout and an installed package.

Data (read-only inputs such as ``earth/*.csv`` and ``text/kjv.txt``), :func:`data_dir`:

1. ``$RDFM_DATA_DIR`` if set;
2. else, in a source checkout, ``<checkout>/../shared/data``;
3. else the user data folder: ``$XDG_DATA_HOME/rdfm`` or ``~/.local/share/rdfm`` (Linux and other
   Unix), ``~/Library/Application Support/rdfm`` (macOS), ``%LOCALAPPDATA%\rdfm`` (Windows).
   ``python -m benchmarks download`` writes the Earth files there by default.

Caches (derived data: the protein dihedral set, BPE tokenizers), :func:`cache_dir`:
``$RDFM_CACHE_DIR`` if set, else the user cache folder: ``$XDG_CACHE_HOME/rdfm`` or
``~/.cache/rdfm`` (Linux and other Unix), ``~/Library/Caches/rdfm`` (macOS),
``%LOCALAPPDATA%\rdfm\Cache`` (Windows). Nothing is ever written inside the package, which
may be a read-only ``site-packages``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: The folder holding the rdfm packages: the repository root in a source checkout (used by
#: :func:`benchmarks.results.git_commit`), ``site-packages`` in an installed package.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

APP_NAME = "rdfm"

_INSTALL_FOLDERS = frozenset({"site-packages", "dist-packages"})


def is_source_checkout(package_dir: Path | None = None) -> bool:
    """Whether rdfm runs from a source checkout rather than an installed package.

    A checkout has ``pyproject.toml`` beside the package; an installed package lives under a
    ``site-packages`` / ``dist-packages`` folder (checked as well, in case a ``pyproject.toml``
    of something else happens to lie there).

    Args:
        package_dir: a top-level rdfm package folder (default: this module's, ``gm``).
    """
    package_dir = Path(__file__).resolve().parent if package_dir is None else Path(package_dir)
    if _INSTALL_FOLDERS.intersection(part.lower() for part in package_dir.parts):
        return False
    return (package_dir.parent / "pyproject.toml").is_file()


def _xdg_dir(variable: str, default: Path) -> Path:
    # The XDG base-directory spec says relative values are invalid and must be ignored.
    value = os.environ.get(variable, "")
    return Path(value) if value and os.path.isabs(value) else default


def _windows_local_app_data() -> Path:
    value = os.environ.get("LOCALAPPDATA", "")
    return Path(value) if value else Path.home() / "AppData" / "Local"


def user_data_dir(platform: str | None = None) -> Path:
    """The platform's per-user data folder for rdfm (not created).

    Args:
        platform: a ``sys.platform`` value (default: the running one).

    Returns:
        ``%LOCALAPPDATA%/rdfm`` on Windows, ``~/Library/Application Support/rdfm`` on macOS,
        else ``$XDG_DATA_HOME/rdfm`` or ``~/.local/share/rdfm``.
    """
    platform = sys.platform if platform is None else platform
    if platform == "win32":
        return _windows_local_app_data() / APP_NAME
    if platform == "darwin":
        return Path.home() / "Library" / "Application Support" / APP_NAME
    return _xdg_dir("XDG_DATA_HOME", Path.home() / ".local" / "share") / APP_NAME


def user_cache_dir(platform: str | None = None) -> Path:
    """The platform's per-user cache folder for rdfm (not created).

    Args:
        platform: a ``sys.platform`` value (default: the running one).

    Returns:
        ``%LOCALAPPDATA%/rdfm/Cache`` on Windows, ``~/Library/Caches/rdfm`` on macOS, else
        ``$XDG_CACHE_HOME/rdfm`` or ``~/.cache/rdfm``.
    """
    platform = sys.platform if platform is None else platform
    if platform == "win32":
        return _windows_local_app_data() / APP_NAME / "Cache"
    if platform == "darwin":
        return Path.home() / "Library" / "Caches" / APP_NAME
    return _xdg_dir("XDG_CACHE_HOME", Path.home() / ".cache") / APP_NAME


def data_dir() -> Path:
    """Root of the data folder (not created; see the module docstring for the rule).

    Returns:
        ``$RDFM_DATA_DIR`` if set; else ``<checkout>/../shared/data`` in a source checkout;
        else :func:`user_data_dir`.
    """
    env = os.environ.get("RDFM_DATA_DIR")
    if env:
        return Path(env).expanduser()
    if is_source_checkout():
        return PROJECT_ROOT.parent / "shared" / "data"
    return user_data_dir()


def describe_data_dir() -> str:
    """Why :func:`data_dir` is what it is, for error messages about missing data."""
    env = os.environ.get("RDFM_DATA_DIR")
    if env:
        return f"RDFM_DATA_DIR is set to {env}"
    if is_source_checkout():
        return f"RDFM_DATA_DIR is not set, so the source checkout's ../shared/data is used: {data_dir()}"
    return f"RDFM_DATA_DIR is not set, so the user data folder is used: {data_dir()}"


def cache_dir() -> Path:
    """Writable cache for derived datasets, created if needed.

    Returns:
        ``$RDFM_CACHE_DIR`` if set, else :func:`user_cache_dir`.

    Raises:
        OSError: if the folder cannot be created, naming it and how to choose another.
    """
    env = os.environ.get("RDFM_CACHE_DIR")
    path = Path(env).expanduser() if env else user_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        source = "RDFM_CACHE_DIR" if env else "the user cache folder"
        raise OSError(
            f"cannot create the rdfm cache folder {path} ({source}): {error}. Set RDFM_CACHE_DIR to a writable folder."
        ) from error
    return path


__all__ = [
    "APP_NAME",
    "PROJECT_ROOT",
    "cache_dir",
    "data_dir",
    "describe_data_dir",
    "is_source_checkout",
    "user_cache_dir",
    "user_data_dir",
]
