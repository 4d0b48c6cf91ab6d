"""The toy 2-D benchmark's figure (PNG). The library draws the other benchmark figures: Mollweide
maps of densities on the sphere in :mod:`rfm.geospatial_plots`, Ramachandran histograms in
:mod:`proteins.plots`.

The figure is drawn on a bare :class:`matplotlib.figure.Figure` and saved with
:func:`gm.files.save_figure` (Agg canvas), so plotting neither needs a display nor changes
pyplot's global backend or state.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from gm.files import save_figure

__all__ = ["plot_toy2d"]

_POINT_STYLE = dict(s=1.5, alpha=0.5, linewidths=0, rasterized=True)


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
