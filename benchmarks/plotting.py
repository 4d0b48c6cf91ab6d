"""Benchmark figures saved as PNG: Earth maps (Mollweide) and Ramachandran plots.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas, so plotting
neither needs a display nor changes pyplot's global backend or state.

Each figure has three panels: the data, samples from the model, and the model's log-density
evaluated on a regular grid. ``log_density_fn`` maps an ``(n, d)`` tensor of points (in the
model's own coordinates) to ``(n,)`` log-densities; it is called on chunks of the grid under
``torch.no_grad()``, so a function that needs autograd internally (e.g. an exact divergence)
must wrap its own computation in ``torch.enable_grad()``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from gm.files import save_figure
from rfm.geospatial import latlon_to_xyz, xyz_to_latlon

LogDensityFn = Callable[[torch.Tensor], torch.Tensor]

_POINT_STYLE = dict(s=1.5, alpha=0.5, linewidths=0, rasterized=True)
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


def _density_mesh(
    figure: Figure, axes, x_edges: np.ndarray, y_edges: np.ndarray, values: np.ndarray, **colorbar
) -> None:
    """Log-density as a colour mesh (rows of ``values`` along y) with a colour bar."""
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


def _map_frame(axes, label: str) -> None:
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
    sin(lon)``, ``z = sin(lat)`` (see :mod:`benchmarks.earth_data`); maps show longitude in
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
    data = _as_numpy(data_xyz, "data_xyz", 3)
    samples = _as_numpy(samples_xyz, "samples_xyz", 3)
    if n_lat < 2:
        raise ValueError(f"n_lat must be >= 2, got {n_lat}")
    panels = 2 if log_density_fn is None else 3
    figure = Figure(figsize=(5.5 * panels, 3.6), layout="constrained")
    for index, (points, label) in enumerate(
        ((data, f"data (n={len(data)})"), (samples, f"model samples (n={len(samples)})"))
    ):
        axes = figure.add_subplot(1, panels, index + 1, projection="mollweide")
        latlon = xyz_to_latlon(torch.from_numpy(points), degrees=False).numpy()
        axes.scatter(latlon[:, 1], latlon[:, 0], c="tab:red" if index == 0 else "tab:blue", **_POINT_STYLE)
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
        _density_mesh(figure, axes, lon_edges, lat_edges, values, orientation="horizontal", shrink=0.7)
        _map_frame(axes, "model log-density")
    if title:
        figure.suptitle(title)
    return save_figure(figure, path, dpi=dpi)


def wrap_to_pi(angles: np.ndarray) -> np.ndarray:
    """Map angles (radians) into ``[-pi, pi)``."""
    wrapped = np.mod(np.asarray(angles, dtype=np.float64) + math.pi, 2 * math.pi) - math.pi
    return np.where(wrapped >= math.pi, -math.pi, wrapped)


def plot_ramachandran(
    data_angles: torch.Tensor | np.ndarray,
    samples_angles: torch.Tensor | np.ndarray,
    log_density_fn: LogDensityFn | None,
    path: str | os.PathLike[str],
    title: str = "",
    *,
    grid_size: int = 120,
    model_angle_start: float = 0.0,
    chunk_size: int = 4096,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    dpi: int = 120,
) -> Path:
    """Ramachandran plots (phi, psi) of data, model samples and model log-density.

    All panels show ``[-pi, pi)^2`` (angles are wrapped, e.g. from the torus convention
    ``[0, 2 pi)``). The density is evaluated at the centres of a ``grid_size x grid_size``
    grid; the grid points are handed to ``log_density_fn`` wrapped into the model's range
    ``[model_angle_start, model_angle_start + 2 pi)`` (default ``[0, 2 pi)``, the convention
    of :class:`manifolds.torus.FlatTorus`).

    Args:
        data_angles: ``(n, 2)`` (phi, psi) in radians.
        samples_angles: ``(m, 2)`` model samples in radians.
        log_density_fn: ``(k, 2)`` angles -> ``(k,)`` log-densities; ``None`` leaves the
            third panel out.
        path: PNG file to write (parent folders are created).
        title: figure title.
        grid_size: grid cells per axis.
        model_angle_start: start of the angle range ``log_density_fn`` expects.
        chunk_size: points per call of ``log_density_fn``.
        dtype, device: of the grid points (default: those of ``samples_angles`` if it is a
            tensor, else torch's default dtype on the CPU).
        dpi: resolution of the PNG.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    data = wrap_to_pi(_as_numpy(data_angles, "data_angles", 2))
    samples = wrap_to_pi(_as_numpy(samples_angles, "samples_angles", 2))
    if grid_size < 2:
        raise ValueError(f"grid_size must be >= 2, got {grid_size}")
    panels = 2 if log_density_fn is None else 3
    figure = Figure(figsize=(4.2 * panels + 0.8, 4.2), layout="constrained")
    ticks = [-math.pi, -math.pi / 2, 0.0, math.pi / 2, math.pi]
    tick_labels = ["-π", "-π/2", "0", "π/2", "π"]

    def frame(axes, label: str) -> None:
        axes.set_xlim(-math.pi, math.pi)
        axes.set_ylim(-math.pi, math.pi)
        axes.set_aspect("equal")
        axes.set_xticks(ticks, tick_labels)
        axes.set_yticks(ticks, tick_labels)
        axes.set_xlabel("φ")
        axes.set_ylabel("ψ")
        axes.set_title(label)

    for index, (points, label) in enumerate(
        ((data, f"data (n={len(data)})"), (samples, f"model samples (n={len(samples)})"))
    ):
        axes = figure.add_subplot(1, panels, index + 1)
        axes.scatter(points[:, 0], points[:, 1], c="tab:red" if index == 0 else "tab:blue", **_POINT_STYLE)
        frame(axes, label)
    if log_density_fn is not None:
        edges = np.linspace(-math.pi, math.pi, grid_size + 1)
        centres = 0.5 * (edges[:-1] + edges[1:])
        phi, psi = np.meshgrid(centres, centres, indexing="xy")  # rows: psi, columns: phi
        grid = np.stack((phi, psi), axis=-1).reshape(-1, 2)
        model_grid = np.mod(grid - model_angle_start, 2 * math.pi) + model_angle_start
        grid_dtype, grid_device = _grid_dtype_device(samples_angles, dtype, device)
        points = torch.from_numpy(model_grid).to(grid_device, grid_dtype)
        values = evaluate_log_density(log_density_fn, points, chunk_size).reshape(phi.shape)
        axes = figure.add_subplot(1, panels, 3)
        _density_mesh(figure, axes, edges, edges, values, shrink=0.8)
        frame(axes, "model log-density")
    if title:
        figure.suptitle(title)
    return save_figure(figure, path, dpi=dpi)


__all__ = ["evaluate_log_density", "plot_earth", "plot_ramachandran", "wrap_to_pi"]


def plot_toy2d(data, samples: dict, path, title: str = "") -> Path:
    """Data, then per configuration its samples with a few trajectories (``samples[name]``:
    states on a time grid, stacked on dim 0)."""
    panels = len(samples) + 1
    fig = Figure(figsize=(3.2 * panels, 3.4))
    axes = fig.subplots(1, panels)
    axes[0].scatter(data[:, 0], data[:, 1], **_POINT_STYLE)
    axes[0].set_title("data")
    for ax, (name, states) in zip(axes[1:], samples.items()):
        ax.scatter(states[-1][:, 0], states[-1][:, 1], **_POINT_STYLE)
        for k in range(0, min(40, states.shape[1])):
            ax.plot(states[:, k, 0], states[:, k, 1], lw=0.5, color="grey", alpha=0.6)
        ax.set_title(name)
    for ax in axes:
        ax.set_xlim(-4.5, 4.5)
        ax.set_ylim(-4.5, 4.5)
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
