r"""Mixtures of product-form von Mises distributions on the d-torus, fitted by EM.

.. math::
    p(x) = \sum_k \pi_k \prod_{j=1}^d \frac{\exp(\kappa_{kj}\cos(x_j - \mu_{kj}))}{2\pi I_0(\kappa_{kj})}

(density w.r.t. the Lebesgue measure on :math:`[0, 2\pi)^d`, the flat torus volume, so a
uniform density is :math:`-d \log 2\pi`). The classical anchor of the protein torus benchmark;
:math:`K` is chosen on validation log-likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import i0e, i1e, logsumexp

__all__ = ["VonMisesMixture", "fit_vonmises_mixture", "select_vonmises_mixture"]

_MAX_KAPPA = 1e4


def _log_i0(kappa: np.ndarray) -> np.ndarray:
    return np.log(i0e(kappa)) + kappa


def _a_inverse(rbar: np.ndarray) -> np.ndarray:
    """Solve I1(k)/I0(k) = rbar: Banerjee et al.'s approximation refined by Newton steps."""
    r = np.clip(rbar, 1e-8, 1 - 1e-8)
    kappa = r * (2 - r**2) / (1 - r**2)
    for _ in range(3):
        a = i1e(kappa) / i0e(kappa)
        da = 1 - a**2 - a / np.maximum(kappa, 1e-12)
        kappa = np.clip(kappa - (a - r) / np.maximum(da, 1e-12), 1e-8, _MAX_KAPPA)
    return kappa


@dataclass
class VonMisesMixture:
    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    kappas: np.ndarray  # (K, d)

    def component_log_prob(self, x: np.ndarray) -> np.ndarray:
        """(n, K) log pi_k + log p_k(x)."""
        x = np.asarray(x, dtype=np.float64)
        cos = np.cos(x[:, None, :] - self.means[None])
        log_norm = np.log(2 * np.pi) + _log_i0(self.kappas)
        return np.log(self.weights)[None] + (self.kappas[None] * cos - log_norm[None]).sum(-1)

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        return logsumexp(self.component_log_prob(x), axis=1)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        return np.mod(rng.vonmises(self.means[k], self.kappas[k]), 2 * np.pi)


def _init(x: np.ndarray, k: int, rng: np.random.Generator) -> VonMisesMixture:
    """k-means++ style seeding with the chordal distance on the torus."""
    n, d = x.shape
    centers = [x[rng.integers(n)]]
    for _ in range(1, k):
        dist = np.min([(2 - 2 * np.cos(x - c)).sum(-1) for c in centers], axis=0)
        probs = dist / dist.sum() if dist.sum() > 0 else None
        centers.append(x[rng.choice(n, p=probs)])
    return VonMisesMixture(np.full(k, 1 / k), np.array(centers), np.full((k, d), 5.0))


def fit_vonmises_mixture(
    x: np.ndarray, k: int, *, n_iter: int = 200, tol: float = 1e-6, restarts: int = 3, seed: int = 0
) -> VonMisesMixture:
    """EM for a K-component product von Mises mixture; the best of ``restarts`` by likelihood."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < k:
        raise ValueError(f"x must have shape (n >= k, d), got {x.shape} for k={k}")
    rng = np.random.default_rng(seed)
    best, best_ll = None, -np.inf
    for _ in range(restarts):
        model = _init(x, k, rng)
        prev = -np.inf
        for _ in range(n_iter):
            comp = model.component_log_prob(x)
            ll = logsumexp(comp, axis=1)
            resp = np.exp(comp - ll[:, None])  # (n, K)
            mean_ll = float(ll.mean())
            nk = resp.sum(0) + 1e-10
            c = resp.T @ np.cos(x)  # (K, d)
            s = resp.T @ np.sin(x)
            means = np.mod(np.arctan2(s, c), 2 * np.pi)
            rbar = np.sqrt(c**2 + s**2) / nk[:, None]
            model = VonMisesMixture(nk / nk.sum(), means, _a_inverse(rbar))
            if mean_ll - prev < tol:
                break
            prev = mean_ll
        final = float(model.log_prob(x).mean())
        if final > best_ll:
            best, best_ll = model, final
    return best


def select_vonmises_mixture(x_train: np.ndarray, x_val: np.ndarray, ks=(1, 2, 4, 8, 16, 32, 64), seed: int = 0):
    """Fit each K on train, pick the best validation log-likelihood. Returns (model, k, scores)."""
    scores = {}
    best = None
    for k in ks:
        if k > len(x_train):
            break
        m = fit_vonmises_mixture(x_train, k, seed=seed)
        scores[k] = float(m.log_prob(x_val).mean())
        if best is None or scores[k] > scores[best[1]]:
            best = (m, k)
    return best[0], best[1], scores
