r"""Stochastic sampling of affine Gaussian paths (the link to score-based diffusion).

For a velocity model :math:`u_t` of an :class:`~rfm.affine.AffinePath` with Gaussian source,
every SDE

.. math:: dX_t = \Big[u_t(X_t) + \frac{g_t^2}{2} \nabla\log p_t(X_t)\Big] dt + g_t\, dW_t

has the same marginals :math:`p_t` as the ODE :math:`\dot X = u_t(X)` (the added drift and the
noise cancel in the Fokker-Planck equation); the score comes from the velocity in closed form
(:meth:`AffinePath.convert`). :math:`g \equiv 0` is the ODE. Simulated by Euler-Maruyama on
:func:`gm.simulate`'s loop, on any time grid that stops short of where :math:`\sigma_t = 0`
(the score is undefined there): the last step lands on ``t = 1`` without evaluating it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gm.process import Process
from gm.simulate import simulate
from rfm.affine import AffinePath

__all__ = ["AffineSDEProcess", "SDESolver"]

Diffusion = Callable[[Tensor], Tensor | float]


class AffineSDEProcess(Process):
    """Euler-Maruyama steps of the SDE above, for :func:`gm.simulate` (model output: the velocity).

    Args:
        path: the :class:`AffinePath` the model was trained on (its scheduler gives the score).
        diffusion: :math:`g_t` as a function of the 0-dim time (a float or a tensor
            broadcastable to the points); ``lambda t: 0.0`` gives the Euler ODE.
        generator: the noise's random generator (on the points' device), for reproducibility.
    """

    def __init__(self, path: AffinePath, diffusion: Diffusion, generator: torch.Generator | None = None) -> None:
        if not isinstance(path, AffinePath):
            raise ValueError(f"path must be an rfm.AffinePath, got {type(path).__name__}")
        if not callable(diffusion):
            raise ValueError(f"diffusion must be a callable g(t), got {type(diffusion).__name__}")
        self.path, self.diffusion, self.generator = path, diffusion, generator

    def step(self, x: Tensor, t: Tensor, h: Tensor, model_output: Tensor) -> Tensor:
        if not isinstance(model_output, Tensor) or model_output.shape != x.shape:
            raise ValueError(
                f"the velocity must be a tensor of the points' shape {tuple(x.shape)}, got "
                f"{getattr(model_output, 'shape', type(model_output).__name__)}"
            )
        g = torch.as_tensor(self.diffusion(t), dtype=x.dtype, device=x.device)
        if not bool(torch.isfinite(g).all()) or bool((g < 0).any()):
            raise ValueError(f"diffusion(t) must be finite and >= 0, got {g} at t = {float(t):.6g}")
        if not bool((g != 0).any()):
            return x + h * model_output
        score = self.path.convert(model_output, x, t, from_type="velocity", to_type="score")
        drift = model_output + 0.5 * g * g * score
        noise = torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)
        return x + h * drift + g * torch.sqrt(h.abs()) * noise


class SDESolver:
    """Sample an affine Gaussian path's velocity model with the SDE above.

    Args:
        path: the :class:`AffinePath` the model was trained on.
        velocity: ``velocity(x, t)`` with ``t`` a 0-dim tensor (a plain ``(B, D)`` model works).
    """

    def __init__(self, path: AffinePath, velocity: Callable[[Tensor, Tensor], Tensor]) -> None:
        if not isinstance(path, AffinePath):
            raise ValueError(f"path must be an rfm.AffinePath, got {type(path).__name__}")
        if not callable(velocity):
            raise ValueError(f"velocity must be callable, got {type(velocity).__name__}")
        self.path, self.velocity = path, velocity

    def sample(
        self,
        x0: Tensor,
        diffusion: Diffusion,
        *,
        time_grid: Tensor | tuple = (0.0, 1.0),
        steps: int | None = 100,
        generator: torch.Generator | None = None,
        return_intermediates: bool = False,
    ) -> Tensor:
        """Euler-Maruyama from ``x0`` (source draws, e.g. ``path.sample_source``) along the grid.

        Raises:
            ValueError: for a grid that is not increasing in [0, 1], a negative or non-finite
                :math:`g`, and for evaluating the score where :math:`\\sigma_t = 0`.
        """
        if not isinstance(x0, Tensor) or not x0.is_floating_point():
            raise ValueError(f"x0 must be a floating-point tensor, got {type(x0).__name__}")
        grid = torch.as_tensor(time_grid, dtype=x0.dtype)
        if grid.dim() != 1 or len(grid) < 2 or not bool((grid.diff() > 0).all()):
            raise ValueError(f"time_grid must be increasing (the SDE runs forward), got {grid.tolist()}")
        return simulate(
            AffineSDEProcess(self.path, diffusion, generator),
            self.velocity,
            x0,
            grid,
            steps,
            return_intermediates=return_intermediates,
        )
