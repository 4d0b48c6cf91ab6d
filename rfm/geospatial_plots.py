"""Maps of densities on the sphere S^2: data, model samples and a model's log-density in
Mollweide projection (:func:`plot_earth`), in the geographic convention of :mod:`rfm.geospatial`.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` and saved with
:func:`gm.files.save_figure` (Agg canvas), so plotting needs no display and leaves pyplot's
global backend and state alone. matplotlib is imported when a figure is drawn: it is needed
only for plots (``pip install matplotlib``).

``log_density_fn`` maps an ``(n, 3)`` tensor of unit vectors to ``(n,)`` log-densities; it is
called on chunks of the grid under ``torch.no_grad()``, so a function that needs autograd
internally (e.g. an exact divergence) must wrap its own computation in ``torch.enable_grad()``
(:func:`rfm.likelihood.log_likelihood` does).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gm.files import save_figure
from rfm.geospatial import latlon_to_xyz, xyz_to_latlon

__all__ = ["LogDensityFn", "evaluate_log_density", "log_density_mesh", "plot_earth"]

LogDensityFn = Callable[[torch.Tensor], torch.Tensor]

_POINT_STYLE: dict[str, Any] = dict(s=1.5, alpha=0.5, linewidths=0, rasterized=True)
# Points far below the typical density would squash the colour scale; clip the lowest 2 %.
_LOW_PERCENTILE = 2.0


def _as_numpy(points: torch.Tensor | np.ndarray, name: str, dim: int) -> np.ndarray:
    if isinstance(points, torch.Tensor):
        points = points.detach().to("cpu", torch.float64).numpy()
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != dim:
        raise ValueError(f"{name} must have shape (n, {dim}), got {points.shape}")
    return points


def evaluate_log_density(
    log_density_fn: LogDensityFn,
    points: torch.Tensor,
    chunk_size: int = 4096,
) -> np.ndarray:
    """``log_density_fn`` on ``points`` in chunks of ``chunk_size``, without gradients.

    Returns:
        float64 array of shape ``(n,)``.

    Raises:
        ValueError: if ``chunk_size`` is not positive or the function returns the wrong number
            of values.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    outputs = []
    with torch.no_grad():
        for chunk in torch.split(points, chunk_size):
            values = torch.as_tensor(log_density_fn(chunk)).detach().reshape(-1)
            if values.numel() != chunk.shape[0]:
                raise ValueError(f"log_density_fn returned {values.numel()} values for {chunk.shape[0]} points")
            outputs.append(values.to("cpu", torch.float64))
    return torch.cat(outputs).numpy() if outputs else np.zeros(0)


def _colour_limits(values: np.ndarray) -> tuple[float, float] | None:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    high = float(finite.max())
    low = float(np.percentile(finite, _LOW_PERCENTILE))
    return (low, high) if low < high else (high - 1.0, high)


def log_density_mesh(
    figure: Any, axes: Any, x_edges: np.ndarray, y_edges: np.ndarray, values: np.ndarray, **colorbar: Any
) -> None:
    """Draw a log-density grid on ``axes`` as a colour mesh (rows of ``values`` along y; NaN cells
    blank; the lowest 2 % clipped so that a few far points do not squash the scale) with a colour
    bar on ``figure``."""
    limits = _colour_limits(values)
    mesh = axes.pcolormesh(
        x_edges,
        y_edges,
        np.ma.masked_invalid(values),
        cmap="viridis",
        vmin=limits[0] if limits else None,
        vmax=limits[1] if limits else None,
        rasterized=True,
    )
    figure.colorbar(mesh, ax=axes, label="model log-density", **colorbar)


def _grid_dtype_device(
    reference: torch.Tensor | np.ndarray, dtype: torch.dtype | None, device: torch.device | str | None
) -> tuple[torch.dtype, torch.device]:
    if isinstance(reference, torch.Tensor):
        dtype = dtype or (reference.dtype if reference.dtype.is_floating_point else None)
        device = device or reference.device
    return dtype or torch.get_default_dtype(), torch.device(device or "cpu")


def _map_frame(axes: Any, label: str) -> None:
    axes.set_title(label)
    axes.grid(True, alpha=0.3)
    axes.set_xticklabels([])  # longitude labels crowd the equator of a small map


def plot_earth(
    data_xyz: torch.Tensor | np.ndarray,
    samples_xyz: torch.Tensor | np.ndarray,
    log_density_fn: LogDensityFn | None,
    path: str | os.PathLike[str],
    title: str = "",
    *,
    n_lat: int = 90,
    chunk_size: int = 4096,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    dpi: int = 120,
) -> Path:
    """Data, model samples and model log-density on the sphere in Mollweide projection.

    Points are unit vectors ``(x, y, z)`` with ``x = cos(lat) cos(lon)``, ``y = cos(lat)
    sin(lon)``, ``z = sin(lat)`` (:mod:`rfm.geospatial`); maps show longitude in
    ``[-pi, pi]`` on the horizontal axis. The log-density panel evaluates ``log_density_fn`` at
    the centres of an ``n_lat x 2 n_lat`` latitude/longitude grid.

    Args:
        data_xyz: ``(n, 3)`` data points.
        samples_xyz: ``(m, 3)`` model samples.
        log_density_fn: ``(k, 3)`` points -> ``(k,)`` log-densities; ``None`` leaves the
            third panel out.
        path: PNG file to write (parent folders are created).
        title: figure title.
        n_lat: number of latitude cells of the density grid.
        chunk_size: points per call of ``log_density_fn``.
        dtype, device: of the grid points (default: those of ``samples_xyz`` if it is a
            tensor, else torch's default dtype on the CPU).
        dpi: resolution of the PNG.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    from matplotlib.figure import Figure

    data = _as_numpy(data_xyz, "data_xyz", 3)
    samples = _as_numpy(samples_xyz, "samples_xyz", 3)
    if n_lat < 2:
        raise ValueError(f"n_lat must be >= 2, got {n_lat}")
    panels = 2 if log_density_fn is None else 3
    figure = Figure(figsize=(5.5 * panels, 3.6), layout="constrained")
    for index, (shown, label) in enumerate(
        ((data, f"data (n={len(data)})"), (samples, f"model samples (n={len(samples)})"))
    ):
        axes = figure.add_subplot(1, panels, index + 1, projection="mollweide")
        shown_latlon = xyz_to_latlon(torch.from_numpy(shown), degrees=False).numpy()
        axes.scatter(shown_latlon[:, 1], shown_latlon[:, 0], c="tab:red" if index == 0 else "tab:blue", **_POINT_STYLE)
        _map_frame(axes, label)
    if log_density_fn is not None:
        lat_edges = np.linspace(-math.pi / 2, math.pi / 2, n_lat + 1)
        lon_edges = np.linspace(-math.pi, math.pi, 2 * n_lat + 1)
        lat_centres = 0.5 * (lat_edges[:-1] + lat_edges[1:])
        lon_centres = 0.5 * (lon_edges[:-1] + lon_edges[1:])
        lat_grid, lon_grid = np.meshgrid(lat_centres, lon_centres, indexing="ij")
        grid_dtype, grid_device = _grid_dtype_device(samples_xyz, dtype, device)
        latlon = torch.from_numpy(np.stack((lat_grid, lon_grid), axis=-1).reshape(-1, 2))
        points = latlon_to_xyz(latlon, degrees=False).to(grid_device, grid_dtype)
        values = evaluate_log_density(log_density_fn, points, chunk_size).reshape(lat_grid.shape)
        axes = figure.add_subplot(1, panels, 3, projection="mollweide")
        log_density_mesh(figure, axes, lon_edges, lat_edges, values, orientation="horizontal", shrink=0.7)
        _map_frame(axes, "model log-density")
    if title:
        figure.suptitle(title)
    return save_figure(figure, path, dpi=dpi)
