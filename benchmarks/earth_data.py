r"""The four Earth event datasets on the sphere S^2: volcano, earthquake, flood, fire.

These are the datasets of Mathieu & Nickel (2020), De Bortoli et al. (2022, RSGM), Rozen et al.
(2021, Moser Flow) and Chen & Lipman (2024, RFM), as published in the public repository
``oxcsml/riemannian-score-sde`` (folder ``data/``). Each file holds one event per row as
``latitude,longitude`` in degrees, after ``#`` comment lines and an optional header line.

Points are returned as unit vectors in R^3 with the geographic convention of
:mod:`rfm.geospatial` (north pole ``+z``; (lat, lon) = (0, 0) is ``+x``), which also reads
your own ``lat,lon`` files (:func:`rfm.geospatial.load_latlon`).

Files are read from ``gm.paths.data_dir() / "earth"``: ``$RDFM_DATA_DIR/earth`` if that
variable is set, else ``../shared/data/earth`` beside a source checkout, else the user data folder
(``~/.local/share/rdfm/earth`` on Linux; see :mod:`gm.paths`). ``python -m benchmarks
download`` (or ``python -m benchmarks data earth --download``) fetches the same public files there.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from gm.download import DownloadError, download
from gm.paths import data_dir, describe_data_dir
from rfm.geospatial import (  # noqa: F401  (the conversions live in the library; re-exported here)
    latlon_array_to_points,
    latlon_to_xyz,
    parse_latlon_text,
    xyz_to_latlon,
)

#: dataset name -> file name.
EARTH_FILES: dict[str, str] = {
    "volcano": "volerup.csv",
    "earthquake": "quakes_all.csv",
    "flood": "flood.csv",
    "fire": "fire.csv",
}

#: dataset name -> number of events in the published files.
EXPECTED_ROWS: dict[str, int] = {
    "volcano": 827,
    "earthquake": 6120,
    "flood": 4875,
    "fire": 12809,
}

#: ``<file>`` is appended to this to download one dataset.
DOWNLOAD_BASE_URL = "https://raw.githubusercontent.com/oxcsml/riemannian-score-sde/main/data/"


def _how_to_get() -> str:
    # Built on demand: where `download` writes depends on RDFM_DATA_DIR at the time of the error.
    return (
        f"Get the data with `python -m benchmarks download` (fetches the public files from "
        f"{DOWNLOAD_BASE_URL}<file> into {earth_dir()}), or point the RDFM_DATA_DIR environment "
        "variable at a folder whose earth/ subfolder holds the four files."
    )


def earth_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """Folder holding the Earth files: ``root`` if given, else ``data_dir() / "earth"``."""
    return Path(root).expanduser() if root is not None else data_dir() / "earth"


def _file_name(name: str) -> str:
    if name not in EARTH_FILES:
        raise ValueError(f"name must be one of {sorted(EARTH_FILES)}, got {name!r}")
    return EARTH_FILES[name]


def earth_path(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Path of dataset ``name``'s file (which may not exist)."""
    return earth_dir(root) / _file_name(name)


def _missing_message(name: str, path: Path, root_given: bool) -> str:
    where = "the folder given as root / --dest" if root_given else describe_data_dir()
    return (
        f"Earth dataset {name!r} is missing: file {path.name} not found.\nLooked in: {path} ({where}).\n{_how_to_get()}"
    )


def load_earth_latlon(name: str, root: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Load dataset ``name`` as an ``(n, 2)`` float64 array of (lat, lon) in degrees.

    Raises:
        FileNotFoundError: naming the missing file, where it was looked for and how to get it.
        ValueError: on an unknown ``name`` or a malformed file.
    """
    path = earth_path(name, root)
    if not path.is_file():
        raise FileNotFoundError(_missing_message(name, path, root_given=root is not None))
    return parse_latlon_text(path.read_text(encoding="utf-8"), source=str(path))


def load_earth(
    name: str,
    root: str | os.PathLike[str] | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Load Earth dataset ``name`` as unit vectors on S^2.

    Args:
        name: one of ``volcano``, ``earthquake``, ``flood``, ``fire``.
        root: folder holding the files (default ``data_dir() / "earth"``).
        dtype: floating dtype of the result (default: torch's default dtype). The conversion is
            done in float64 and the vectors are renormalised after casting.

    Returns:
        ``(n, 3)`` CPU tensor of unit vectors (convention in the module docstring).

    Raises:
        FileNotFoundError: naming the missing file, where it was looked for and how to get it.
        ValueError: on an unknown ``name``, a non-floating ``dtype`` or a malformed file.
    """
    return latlon_array_to_points(load_earth_latlon(name, root), dtype)


def download_earth(
    dest: str | os.PathLike[str] | None = None,
    names: list[str] | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> dict[str, Path]:
    """Download Earth dataset files from the public repository into ``dest``.

    Each file is fetched with ``urllib``, parsed to check it is a valid ``lat,lon`` file, written
    to a temporary file in ``dest`` and moved into place with ``os.replace``, so an interrupted
    download never leaves a partial file behind.

    Args:
        dest: target folder (default ``data_dir() / "earth"``), created if needed.
        names: datasets to fetch (default: all four).
        force: re-download files that already exist.
        timeout: socket timeout in seconds per request.

    Returns:
        dataset name -> path of its file.

    Raises:
        DownloadError: on a network failure, an HTTP error or content that does not parse.
    """
    target = earth_dir(dest)
    names = list(EARTH_FILES) if names is None else names
    for name in names:
        _file_name(name)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(
            f"cannot create {target}: {error}. Pass --dest DIR or set RDFM_DATA_DIR to a writable folder."
        ) from error
    paths: dict[str, Path] = {}
    for name in names:
        path = target / EARTH_FILES[name]
        paths[name] = path
        if path.is_file() and not force:
            continue
        url = DOWNLOAD_BASE_URL + EARTH_FILES[name]

        def check(tmp: Path, url: str = url, name: str = name) -> None:
            try:
                latlon = parse_latlon_text(tmp.read_bytes().decode("utf-8"), source=url)
            except (UnicodeDecodeError, ValueError) as error:
                raise ValueError(f"did not return a valid lat,lon file: {error}") from error
            if len(latlon) != EXPECTED_ROWS[name]:
                print(
                    f"warning: {url} has {len(latlon)} rows, the published file has {EXPECTED_ROWS[name]}",
                    file=sys.stderr,
                )

        try:
            download(url, path, timeout=timeout, check=check)
        except DownloadError as error:
            if error.kind == "write":
                raise DownloadError(
                    f"{error}. Pass --dest DIR or set RDFM_DATA_DIR to a writable folder.", "write"
                ) from error
            if error.kind != "network":
                raise
            raise DownloadError(
                f"{error}.\nCheck the network connection, or fetch the file by other means and save it as "
                f"{path} (or put the four files in $RDFM_DATA_DIR/earth/)."
            ) from error
    return paths


def _report(root: Path) -> int:
    """Print where each dataset is found and its row count; 1 if any is missing or off."""
    status = 0
    print(f"Earth data folder: {root}")
    for name in EARTH_FILES:
        path = root / EARTH_FILES[name]
        try:
            rows = len(load_earth_latlon(name, root))
        except FileNotFoundError:
            print(f"  {name:<10} MISSING  {path}")
            status = 1
            continue
        except ValueError as error:
            print(f"  {name:<10} INVALID  {error}")
            status = 1
            continue
        expected = EXPECTED_ROWS[name]
        note = "" if rows == expected else f"  (expected {expected})"
        print(f"  {name:<10} {rows:>6} rows  {path}{note}")
    if status:
        print(_how_to_get())
    return status


def main(argv: list[str]) -> int:
    """``python -m benchmarks data earth [--download] [--dest DIR] [--force]``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks data earth",
        description="Show where the Earth datasets are found, or download them.",
    )
    parser.add_argument("--download", action="store_true", help="fetch the four public files")
    parser.add_argument(
        "--dest",
        type=Path,
        default=None,
        # argparse %-formats help strings; a '%' in a user's path must not break --help
        help=f"folder holding the four files (default: {earth_dir()}; {describe_data_dir()})".replace("%", "%%"),
    )
    parser.add_argument("--force", action="store_true", help="re-download existing files")
    args = parser.parse_args(argv)
    root = earth_dir(args.dest)
    if args.download:
        try:
            download_earth(root, force=args.force)
        except DownloadError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    status = _report(root)
    if status == 0 and root.resolve() != earth_dir().resolve():
        print(f"The benchmarks read {earth_dir()}; to use these files set RDFM_DATA_DIR={root.parent}")
    return status


__all__ = [
    "DOWNLOAD_BASE_URL",
    "DownloadError",
    "EARTH_FILES",
    "EXPECTED_ROWS",
    "download_earth",
    "earth_dir",
    "earth_path",
    "latlon_to_xyz",
    "load_earth",
    "load_earth_latlon",
    "main",
    "parse_latlon_text",
    "xyz_to_latlon",
]
