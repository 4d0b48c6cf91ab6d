r"""Exact marginal fields of Gaussian and Gaussian-mixture targets under affine Gaussian
paths: test oracles and a teaching tool.

For data :math:`x_1 \sim \sum_k w_k N(\mu_k, \Sigma_k)` and source :math:`x_0 \sim N(0, I)`,
the marginal of :math:`x_t = \alpha_t x_1 + \sigma_t x_0` is the mixture
:math:`\sum_k w_k N(\alpha_t \mu_k, C_k)`, :math:`C_k = \alpha_t^2 \Sigma_k + \sigma_t^2 I`, and
the posterior expectations are, with responsibilities :math:`r_k(x) \propto w_k N(x;
\alpha_t\mu_k, C_k)`,

.. math::
    E[x_1 \mid x] = \sum_k r_k \big(\mu_k + \alpha_t \Sigma_k C_k^{-1}(x - \alpha_t\mu_k)\big),
    \qquad
    E[x_0 \mid x] = \sum_k r_k\, \sigma_t C_k^{-1}(x - \alpha_t\mu_k).

From them, the marginal velocity :math:`u_t(x) = \dot\alpha_t E[x_1|x] + \dot\sigma_t E[x_0|x]`
(which generates the path's marginals) and the score :math:`-E[x_0|x]/\sigma_t`. Everything is
finite at :math:`t = 0` and, for non-singular covariances, at :math:`t = 1`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gm.schedulers import Scheduler

__all__ = ["GaussianMixture", "MarginalFields", "marginal_fields"]


@dataclass
class GaussianMixture:
    r"""A Gaussian mixture :math:`\sum_k w_k N(\mu_k, \Sigma_k)` on :math:`\mathbb{R}^d`.

    Attributes:
        means: ``(K, d)``.
        covariances: ``(K, d, d)``, symmetric positive definite.
        weights: ``(K,)``, positive, summing to 1 (default: equal).
    """

    means: Tensor
    covariances: Tensor
    weights: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.means, Tensor) or self.means.dim() != 2 or not self.means.is_floating_point():
            raise ValueError(
                f"means must be a floating-point tensor (K, d), got "
                f"{getattr(self.means, 'shape', type(self.means).__name__)}"
            )
        k, d = self.means.shape
        if not isinstance(self.covariances, Tensor) or tuple(self.covariances.shape) != (k, d, d):
            raise ValueError(
                f"covariances must have shape (K, d, d) = ({k}, {d}, {d}), got "
                f"{getattr(self.covariances, 'shape', type(self.covariances).__name__)}"
            )
        if self.weights is None:
            self.weights = torch.full((k,), 1.0 / k, dtype=self.means.dtype, device=self.means.device)
        if (
            tuple(self.weights.shape) != (k,)
            or not bool((self.weights > 0).all())
            or abs(float(self.weights.sum()) - 1.0) > 1e-6
        ):
            raise ValueError(f"weights must be K = {k} positive numbers summing to 1, got {self.weights}")
        if not bool(torch.isfinite(self.means).all() & torch.isfinite(self.covariances).all()):
            raise ValueError("means and covariances must be finite")
        if torch.linalg.cholesky_ex(self.covariances)[1].any():
            raise ValueError("covariances must be symmetric positive definite")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``(n, d)``."""
        assert self.weights is not None  # filled in by __post_init__
        component = torch.multinomial(self.weights.double().cpu(), n, replacement=True, generator=generator)
        noise = torch.randn(n, self.means.shape[1], generator=generator, dtype=self.means.dtype)
        chol = torch.linalg.cholesky(self.covariances).cpu()
        return (self.means.cpu()[component] + (chol[component] @ noise[..., None])[..., 0]).to(self.means.device)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density at ``x`` ``(*batch, d)``."""
        assert self.weights is not None  # filled in by __post_init__
        return _mixture_log_prob(x, self.means, self.covariances, self.weights)


def _mixture_log_prob(x: Tensor, means: Tensor, covs: Tensor, weights: Tensor) -> Tensor:
    d = means.shape[-1]
    diff = x[..., None, :] - means  # (*batch, K, d)
    chol = torch.linalg.cholesky(covs)
    white = torch.linalg.solve_triangular(chol, diff[..., None], upper=False)[..., 0]
    log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    log_comp = -0.5 * (white**2).sum(-1) - 0.5 * log_det - 0.5 * d * math.log(2 * math.pi)
    return torch.logsumexp(log_comp + torch.log(weights), dim=-1)


@dataclass
class MarginalFields:
    r"""The exact fields at ``(x, t)``: ``x1`` = E[x1 | x_t = x], ``x0`` = E[x0 | x_t = x],
    ``velocity``, ``score`` (:math:`\nabla_x \log p_t(x)`, computed without dividing by
    :math:`\sigma_t`) and ``log_prob`` of the marginal."""

    x1: Tensor
    x0: Tensor
    velocity: Tensor
    score: Tensor
    log_prob: Tensor


def marginal_fields(target: GaussianMixture, scheduler: Scheduler, x: Tensor, t: Tensor | float) -> MarginalFields:
    """The exact posterior expectations, velocity, score and log-density of the marginal
    :math:`p_t` at points ``x`` ``(*batch, d)`` and times ``t`` (a float, a 0-dim tensor or
    per-sample times whose shape is a prefix of ``batch``)."""
    if not isinstance(target, GaussianMixture):
        raise ValueError(f"target must be a GaussianMixture, got {type(target).__name__}")
    assert target.weights is not None  # filled in by GaussianMixture.__post_init__
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    s = scheduler(t.reshape(t.shape + (1,) * (x.dim() - 1 - t.dim())), validate=True)
    alpha, sigma = s.alpha[..., None, None], s.sigma[..., None, None]  # against (K, d) and (K, d, d)
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    means, covs = target.means.to(x.dtype), target.covariances.to(x.dtype)
    cov_t = alpha[..., None] ** 2 * covs + sigma[..., None] ** 2 * eye  # (*batch, K, d, d)
    diff = x[..., None, :] - alpha * means  # (*batch, K, d)
    solved = torch.linalg.solve(cov_t, diff[..., None])[..., 0]  # C_k^-1 (x - alpha mu_k)
    chol = torch.linalg.cholesky(cov_t)
    log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    d = x.shape[-1]
    log_comp = -0.5 * (diff * solved).sum(-1) - 0.5 * log_det - 0.5 * d * math.log(2 * math.pi)
    log_comp = log_comp + torch.log(target.weights.to(x.dtype))
    log_prob = torch.logsumexp(log_comp, dim=-1)
    resp = torch.softmax(log_comp, dim=-1)[..., None]  # (*batch, K, 1)
    x1_k = means + alpha * (covs @ solved[..., None])[..., 0]
    x0_k = sigma * solved
    x1_hat, x0_hat = (resp * x1_k).sum(-2), (resp * x0_k).sum(-2)
    velocity = s.d_alpha[..., None] * x1_hat + s.d_sigma[..., None] * x0_hat
    score = -(resp * solved).sum(-2)  # -E[x0|x]/sigma without dividing by sigma
    return MarginalFields(x1=x1_hat, x0=x0_hat, velocity=velocity, score=score, log_prob=log_prob)
