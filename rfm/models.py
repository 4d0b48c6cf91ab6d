r"""Velocity models for flows on manifolds: time-conditioned MLPs, topology-aware input
encodings, and a wrapper that turns a network into a tangent vector field.

All modules accept any number of leading batch dims and avoid in-place ops on their inputs
so that :func:`torch.func.jvp` (used by the exact likelihood) works through them.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn

from gm.checks import broadcast_time
from gm.guidance import GuidedModel, guided_velocity, label_rows
from manifolds.base import RiemannianManifold

__all__ = [
    "GuidedVelocity",
    "TimeEmbedding",
    "TimeMLP",
    "ManifoldEncoding",
    "FourierEncoding",
    "ComposedEncoding",
    "encoding_for",
    "ProjectedVelocity",
    "velocity_mlp",
]


def _time_like(t: Tensor | float, batch_shape: torch.Size, ref: Tensor) -> Tensor:
    """``t`` (a float, a 0-dim tensor, or per-sample times whose shape is a prefix of
    ``batch_shape``) expanded to ``batch_shape``, in ``ref``'s dtype and device."""
    return broadcast_time(t, batch_shape, dtype=ref.dtype, device=ref.device)


class TimeEmbedding(nn.Module):
    r"""Sinusoidal features :math:`[\sin(2\pi f_k t), \cos(2\pi f_k t)]` of :math:`t \in [0, 1]`
    with geometrically spaced frequencies :math:`f_k \in [1, f_{max}]`, plus :math:`t` itself."""

    freqs: Tensor

    def __init__(self, n_frequencies: int = 8, max_frequency: float = 64.0) -> None:
        super().__init__()
        freqs = torch.logspace(0, math.log10(max_frequency), n_frequencies)
        self.register_buffer("freqs", 2 * math.pi * freqs, persistent=False)
        self.out_features = 2 * n_frequencies + 1

    def forward(self, t: Tensor) -> Tensor:
        arg = t[..., None] * self.freqs.to(t.dtype)
        return torch.cat([t[..., None], torch.sin(arg), torch.cos(arg)], dim=-1)


class TimeMLP(nn.Module):
    """MLP on ``[features, time embedding]`` with SiLU activations and residual hidden blocks.

    Args:
        in_features: input feature size.
        out_features: output size.
        hidden: hidden width.
        depth: number of hidden layers (>= 1).
        time_frequencies: frequencies of the :class:`TimeEmbedding`.
        layer_norm: LayerNorm before each hidden activation.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 512,
        depth: int = 4,
        time_frequencies: int = 8,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.time = TimeEmbedding(time_frequencies)
        self.inp = nn.Linear(in_features + self.time.out_features, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden) if layer_norm else nn.Identity(), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth - 1)
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, out_features))
        self.in_features = in_features

    def forward(self, features: Tensor, t: Tensor | float) -> Tensor:
        if features.shape[-1] != self.in_features:
            raise ValueError(f"features must have trailing size {self.in_features}, got {tuple(features.shape)}")
        t = _time_like(t, features.shape[:-1], features)
        h = self.inp(torch.cat([features, self.time(t)], dim=-1))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class ManifoldEncoding(nn.Module):
    """The manifold's own embedding of its points (``manifold.embed(x, **options)``): ambient
    coordinates on spheres, Euclidean spaces and matrix groups, ``[cos kx, sin kx]`` on tori,
    the components side by side on products. A new manifold brings its embedding with it."""

    def __init__(self, manifold: RiemannianManifold, **options) -> None:
        super().__init__()
        manifold._check_embedding_options(options)
        self.manifold = manifold
        self.options = dict(options)
        self.out_features = manifold.embedding_size(**options)

    def forward(self, x: Tensor) -> Tensor:
        return self.manifold.embed(x, **self.options)


class FourierEncoding(nn.Module):
    r"""Random Fourier features of embedded points (Tancik et al. 2020):
    :math:`[x, \sin(Bx), \cos(Bx)]` with :math:`B_{ij} \sim \mathcal N(0, \sigma^2)` fixed at
    construction (seeded, saved with the model).

    On a sphere these are smooth functions of the point (restrictions of ambient ones); a scale
    :math:`\sigma` of ~10 lets an MLP resolve densities concentrated on a few hundred km of the
    Earth's surface in minutes of training rather than hours.

    Args:
        n: ambient size of the points.
        n_features: rows of :math:`B` (output size ``n + 2 * n_features``).
        scale: :math:`\sigma`, the standard deviation of :math:`B`'s entries.
        seed: seed of :math:`B`.
    """

    B: Tensor

    def __init__(self, n: int, n_features: int = 64, scale: float = 8.0, seed: int = 0) -> None:
        super().__init__()
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("B", scale * torch.randn(n, n_features, generator=gen, dtype=torch.float64))
        self.out_features = n + 2 * n_features

    def forward(self, x: Tensor) -> Tensor:
        # Full precision even under autocast: in bfloat16 a coordinate carries ~3 significant
        # digits, and sigma * x would lose the fine position information the features exist for.
        with torch.autocast(device_type=x.device.type, enabled=False):
            arg = x @ self.B.to(x.dtype)
            return torch.cat([x, torch.sin(arg), torch.cos(arg)], dim=-1)


class ComposedEncoding(nn.Module):
    """``outer(inner(x))``: e.g. random Fourier features of a rotation's matrix entries."""

    def __init__(self, inner: nn.Module, outer: nn.Module) -> None:
        super().__init__()
        self.inner, self.outer = inner, outer
        self.out_features = cast(int, outer.out_features)  # an encoding's feature count

    def forward(self, x: Tensor) -> Tensor:
        return self.outer(self.inner(x))


def encoding_for(
    manifold: RiemannianManifold, *, fourier_features: int = 0, fourier_scale: float = 8.0, **embed_options
) -> ManifoldEncoding | ComposedEncoding:
    """The default input encoding of a manifold's points (``.out_features`` features): the
    manifold's :meth:`~manifolds.base.RiemannianManifold.embed` with ``embed_options`` (e.g.
    ``harmonics=3`` on a torus, ``rotation="6d"`` on SO(3)), followed by a
    :class:`FourierEncoding` of the embedding when ``fourier_features > 0``.
    """
    encoding = ManifoldEncoding(manifold, **embed_options)
    if fourier_features:
        return ComposedEncoding(encoding, FourierEncoding(encoding.out_features, fourier_features, fourier_scale))
    return encoding


class ProjectedVelocity(nn.Module):
    """A network turned into a velocity field ``v(x, t)`` on ``manifold``.

    Inputs are projected onto the manifold (``projx``) and encoded; the network's raw output
    is mapped to a tangent vector at the projected point (Lie-algebra outputs on SO(3)/SE(3),
    tangent projection elsewhere). With ``num_classes > 0`` the field is class-conditional,
    ``v(x, t, label)``: a learned embedding of the integer label is appended to the encoded
    point (bind the labels for the solvers, e.g. ``lambda x, t: model(x, t, labels)``).

    Args:
        manifold: the state space.
        net: a module ``net(features, t) -> raw`` with ``raw.shape[-1] == manifold.raw_tangent_size``
            and ``features`` = encoding (+ ``label_dim`` embedding features).
        encoding: input encoding (default :func:`encoding_for`).
        num_classes: number of labels (0: unconditional).
        label_dim: size of the label embedding.
        null_label: also accept :data:`gm.guidance.NULL_LABEL` (-1), "no condition", with its
            own embedding, for classifier-free guidance (train with ``label_dropout``).
    """

    def __init__(
        self,
        manifold: RiemannianManifold,
        net: nn.Module,
        encoding: nn.Module | None = None,
        num_classes: int = 0,
        label_dim: int = 16,
        null_label: bool = False,
    ) -> None:
        super().__init__()
        self.manifold = manifold
        self.net = net
        self.encoding = encoding if encoding is not None else encoding_for(manifold)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative integer, got {num_classes!r}")
        if null_label and not num_classes:
            raise ValueError("null_label needs a class-conditional model (num_classes > 0)")
        self.num_classes = num_classes
        self.null_label = bool(null_label)
        self.label_embedding = nn.Embedding(num_classes + self.null_label, label_dim) if num_classes else None

    def forward(self, x: Tensor, t: Tensor | float, label: Tensor | None = None) -> Tensor:
        ok, reason = self.manifold._check_shape(x.shape, "x")
        if not ok:
            raise ValueError(reason)
        x = self.manifold.projx(x)
        features = self.encoding(x)
        if self.label_embedding is not None:
            features = torch.cat([features, self._label_features(label, features.shape[:-1])], dim=-1)
        elif label is not None:
            raise ValueError("label given, but the model is unconditional (num_classes=0)")
        raw = self.net(features, t)
        return self.manifold.raw_to_tangent(x, raw)

    def _label_features(self, label: Tensor | None, batch_shape: torch.Size) -> Tensor:
        assert self.label_embedding is not None  # called only for a class-conditional model
        label = label_rows(label, self.num_classes, self.null_label, self.label_embedding.weight.device)
        emb = self.label_embedding(label)
        try:
            return emb.expand(*batch_shape, emb.shape[-1])
        except RuntimeError:
            raise ValueError(
                f"label of shape {tuple(label.shape)} does not broadcast to the batch shape {tuple(batch_shape)}"
            ) from None


def velocity_mlp(
    manifold: RiemannianManifold,
    hidden: int = 512,
    depth: int = 4,
    *,
    time_frequencies: int = 8,
    layer_norm: bool = False,
    torus_harmonics: int = 1,
    rotation: str = "matrix",
    fourier_features: int = 0,
    fourier_scale: float = 8.0,
    num_classes: int = 0,
    label_dim: int = 16,
    null_label: bool = False,
    embed_options: dict | None = None,
) -> ProjectedVelocity:
    """A :class:`TimeMLP` velocity field on ``manifold`` with the :func:`encoding_for` encoding
    (class-conditional when ``num_classes > 0``, see :class:`ProjectedVelocity`).

    ``torus_harmonics`` and ``rotation`` are the ``harmonics`` / ``rotation`` embedding options
    of tori and SO(3)/SE(3) factors (given only when they differ from the defaults, so they
    raise for a manifold without such a factor); ``embed_options`` passes any other
    option a manifold's ``embed`` declares."""
    options = dict(embed_options or {})
    if torus_harmonics != 1:
        options["harmonics"] = torus_harmonics
    if rotation != "matrix":
        options["rotation"] = rotation
    encoding = encoding_for(manifold, fourier_features=fourier_features, fourier_scale=fourier_scale, **options)
    in_features = encoding.out_features + (label_dim if num_classes else 0)
    net = TimeMLP(in_features, manifold.raw_tangent_size, hidden, depth, time_frequencies, layer_norm)
    return ProjectedVelocity(
        manifold, net, encoding, num_classes=num_classes, label_dim=label_dim, null_label=null_label
    )


class GuidedVelocity(GuidedModel):
    r"""Classifier-free guidance of a class-conditional velocity model with a null label:
    :math:`v_w(x, t) = (1 - w)\, v(x, t, \varnothing) + w\, v(x, t, y)`, one batched model call
    (points and labels doubled). A plain ``velocity(x, t)`` for every solver.

    Args:
        model: ``model(x, t, label)`` accepting :data:`gm.guidance.NULL_LABEL`.
        label: the requested class: an int, or per-sample labels of the first batch dim.
        w: the guidance weight, >= 0 (0: unconditional, 1: conditional).
    """

    def combine(self, conditional: Tensor, unconditional: Tensor) -> Tensor:
        return guided_velocity(conditional, unconditional, self.w)
