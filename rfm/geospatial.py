r"""Geospatial data on the sphere S^2: latitude/longitude <-> unit vectors, and ``lat,lon``
files.

The convention is the geographic one,

.. math::

    x = \cos(\mathrm{lat}) \cos(\mathrm{lon}), \quad
    y = \cos(\mathrm{lat}) \sin(\mathrm{lon}), \quad
    z = \sin(\mathrm{lat}),

so the north pole is ``+z`` and (lat, lon) = (0, 0) is ``+x``; points are what
:class:`manifolds.Sphere` ``(2)`` and the rfm flows on it take. A file holds one event per row as
``latitude,longitude`` in degrees, after ``#`` comment lines and an optional header line
(``lat,lon``, ``LATITUDE,LONGITUDE`` ...)::

    from rfm.geospatial import load_latlon, xyz_to_latlon
    points = load_latlon("my_events.csv")          # (n, 3) unit vectors
    latlon = xyz_to_latlon(samples)                # back to degrees
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

__all__ = ["latlon_to_xyz", "xyz_to_latlon", "parse_latlon_text", "load_latlon", "latlon_array_to_points"]

_HEADER_FIELD = re.compile(r"[A-Za-z_][A-Za-z_ ]*")


def parse_latlon_text(text: str, source: str = "<text>") -> np.ndarray:
    """Parse ``lat,lon`` rows in degrees after ``#`` comments and an optional header line.

    Args:
        text: file contents.
        source: name used in error messages.

    Returns:
        ``(n, 2)`` float64 array of (latitude, longitude) in degrees.

    Raises:
        ValueError: if a row is malformed or a coordinate is out of range
            (latitude outside [-90, 90], longitude outside [-180, 360]).
    """
    rows: list[tuple[float, float]] = []
    header_allowed = True
    for line_number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [field.strip() for field in line.split(",")]
        try:
            if len(fields) != 2:
                raise ValueError
            lat, lon = float(fields[0]), float(fields[1])
        except ValueError:
            if header_allowed and all(_HEADER_FIELD.fullmatch(field) for field in fields):
                header_allowed = False  # e.g. "lat,long" or "LATITUDE,LONGITUDE"
                continue
            raise ValueError(f"{source}: line {line_number} is not 'latitude,longitude': {raw!r}") from None
        header_allowed = False
        rows.append((lat, lon))
    latlon = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(latlon).all():
        raise ValueError(f"{source}: non-finite coordinates")
    if (np.abs(latlon[:, 0]) > 90.0).any():
        raise ValueError(f"{source}: latitude outside [-90, 90] degrees")
    if ((latlon[:, 1] < -180.0) | (latlon[:, 1] > 360.0)).any():
        raise ValueError(f"{source}: longitude outside [-180, 360] degrees")
    return latlon


def latlon_to_xyz(latlon: torch.Tensor, degrees: bool = True) -> torch.Tensor:
    """Map (latitude, longitude) to unit vectors: ``(cos lat cos lon, cos lat sin lon, sin lat)``.

    Args:
        latlon: ``(..., 2)`` tensor of (latitude, longitude).
        degrees: whether the angles are in degrees (else radians).

    Returns:
        ``(..., 3)`` tensor of unit vectors, same dtype and device.
    """
    if not isinstance(latlon, torch.Tensor):
        raise ValueError(f"latlon must be a torch.Tensor, got {type(latlon).__name__}")
    if latlon.shape[-1:] != (2,):
        raise ValueError(f"latlon must have shape (..., 2), got {tuple(latlon.shape)}")
    if degrees:
        latlon = torch.deg2rad(latlon)
    lat, lon = latlon.unbind(-1)
    cos_lat = torch.cos(lat)
    return torch.stack((cos_lat * torch.cos(lon), cos_lat * torch.sin(lon), torch.sin(lat)), dim=-1)


def xyz_to_latlon(xyz: torch.Tensor, degrees: bool = True) -> torch.Tensor:
    """Inverse of :func:`latlon_to_xyz`: latitude in [-90, 90], longitude in (-180, 180].

    ``lat = atan2(z, sqrt(x^2 + y^2))`` (accurate near the poles, unlike ``asin(z)``) and
    ``lon = atan2(y, x)``. Inputs need not be exactly unit length: only the direction matters.

    Args:
        xyz: ``(..., 3)`` tensor of nonzero vectors.
        degrees: return degrees (else radians).

    Returns:
        ``(..., 2)`` tensor of (latitude, longitude), same dtype and device.
    """
    if not isinstance(xyz, torch.Tensor):
        raise ValueError(f"xyz must be a torch.Tensor, got {type(xyz).__name__}")
    if xyz.shape[-1:] != (3,):
        raise ValueError(f"xyz must have shape (..., 3), got {tuple(xyz.shape)}")
    x, y, z = xyz.unbind(-1)
    latlon = torch.stack((torch.atan2(z, torch.hypot(x, y)), torch.atan2(y, x)), dim=-1)
    return torch.rad2deg(latlon) if degrees else latlon


def load_latlon(path: str | os.PathLike[str], dtype: torch.dtype | None = None) -> torch.Tensor:
    """Read a ``latitude,longitude`` file (degrees) as unit vectors on S^2.

    Args:
        path: the file (format in the module docstring).
        dtype: floating dtype of the result (default: torch's default dtype). The conversion is
            done in float64 and the vectors are renormalised after casting.

    Returns:
        ``(n, 3)`` CPU tensor of unit vectors.

    Raises:
        ValueError: if ``path`` is not a file, ``dtype`` is not floating, or a row is malformed
            or out of range (naming the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path {path} is not a file")
    return latlon_array_to_points(parse_latlon_text(path.read_text(encoding="utf-8"), source=str(path)), dtype)


def latlon_array_to_points(latlon: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(n, 2)`` degrees (as :func:`parse_latlon_text` returns) -> ``(n, 3)`` unit vectors of
    ``dtype`` (default: torch's), converted in float64 and renormalised after the cast."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    xyz = latlon_to_xyz(torch.from_numpy(np.asarray(latlon, dtype=np.float64))).to(dtype)
    return xyz / xyz.norm(dim=-1, keepdim=True)
