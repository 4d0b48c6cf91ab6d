r"""Velocity models for flows on manifolds: time-conditioned MLPs, topology-aware input
encodings, and a wrapper that turns a network into a tangent vector field.

All modules accept any number of leading batch dims and avoid in-place ops on their inputs
so that :func:`torch.func.jvp` (used by the exact likelihood) works through them.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from manifolds import SE3, SO3, Euclidean, FlatTorus, Product, Sphere
from manifolds.base import RiemannianManifold
from manifolds.so3 import hat

__all__ = [
    "TimeEmbedding",
    "TimeMLP",
    "IdentityEncoding",
    "TorusEncoding",
    "FourierEncoding",
    "ComposedEncoding",
    "RotationEncoding",
    "SE3Encoding",
    "ProductEncoding",
    "encoding_for",
    "ProjectedVelocity",
    "velocity_mlp",
]


def _time_like(t: Tensor | float, batch_shape: torch.Size, ref: Tensor) -> Tensor:
    """``t`` (python float, 0-dim or batch-shaped tensor) broadcast to ``batch_shape``."""
    t = torch.as_tensor(t, dtype=ref.dtype, device=ref.device)
    try:
        return t.expand(batch_shape)
    except RuntimeError:
        raise ValueError(f"t of shape {tuple(t.shape)} does not broadcast to the batch shape {tuple(batch_shape)}") from None


class TimeEmbedding(nn.Module):
    r"""Sinusoidal features :math:`[\sin(2\pi f_k t), \cos(2\pi f_k t)]` of :math:`t \in [0, 1]`
    with geometrically spaced frequencies :math:`f_k \in [1, f_{max}]`, plus :math:`t` itself."""

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

    def __init__(self, in_features: int, out_features: int, hidden: int = 512, depth: int = 4,
                 time_frequencies: int = 8, layer_norm: bool = False) -> None:
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


class IdentityEncoding(nn.Module):
    """Points as they are (Euclidean coordinates, unit vectors on spheres)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.out_features = n

    def forward(self, x: Tensor) -> Tensor:
        return x


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


class TorusEncoding(nn.Module):
    r"""Fourier features :math:`[\cos kx, \sin kx]_{k=1..K}` per angle: continuous across the
    :math:`0 / 2\pi` seam."""

    def __init__(self, dim: int, n_harmonics: int = 1) -> None:
        super().__init__()
        self.register_buffer("k", torch.arange(1, n_harmonics + 1, dtype=torch.get_default_dtype()), persistent=False)
        self.out_features = 2 * dim * n_harmonics

    def forward(self, x: Tensor) -> Tensor:
        arg = (x[..., None] * self.k.to(x.dtype)).flatten(-2)
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


class RotationEncoding(nn.Module):
    """Rotation matrices as features: all 9 entries, or the continuous 6-D representation
    (first two columns)."""

    def __init__(self, representation: str = "matrix") -> None:
        super().__init__()
        if representation not in ("matrix", "6d"):
            raise ValueError(f"representation must be 'matrix' or '6d', got {representation!r}")
        self.representation = representation
        self.out_features = 9 if representation == "matrix" else 6

    def forward(self, r: Tensor) -> Tensor:
        if self.representation == "6d":
            r = r[..., :, :2]
        return r.flatten(-2)


class ComposedEncoding(nn.Module):
    """``outer(inner(x))``: e.g. random Fourier features of a rotation's matrix entries."""

    def __init__(self, inner: nn.Module, outer: nn.Module) -> None:
        super().__init__()
        self.inner, self.outer = inner, outer
        self.out_features = outer.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.outer(self.inner(x))


class SE3Encoding(nn.Module):
    """Rotation features of :class:`RotationEncoding` and the translation, optionally scaled."""

    def __init__(self, representation: str = "matrix", translation_scale: float = 1.0) -> None:
        super().__init__()
        self.rotation = RotationEncoding(representation)
        self.translation_scale = translation_scale
        self.out_features = self.rotation.out_features + 3

    def forward(self, x: Tensor) -> Tensor:
        r, t = SE3.to_rt(x)
        return torch.cat([self.rotation(r), t * self.translation_scale], dim=-1)


class ProductEncoding(nn.Module):
    """Concatenation of the component encodings of a :class:`manifolds.Product`."""

    def __init__(self, manifold: Product, encodings: list[nn.Module]) -> None:
        super().__init__()
        self.manifold = manifold
        self.encodings = nn.ModuleList(encodings)
        self.out_features = sum(e.out_features for e in encodings)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([e(p) for e, p in zip(self.encodings, self.manifold.split(x))], dim=-1)


def encoding_for(manifold: RiemannianManifold, *, torus_harmonics: int = 1, rotation: str = "matrix",
                 fourier_features: int = 0, fourier_scale: float = 8.0) -> nn.Module:
    """The default input encoding of a manifold's points (``.out_features`` features).

    ``fourier_features > 0`` switches spheres and Euclidean spaces to a :class:`FourierEncoding`
    of the point, and SO(3) to one of its matrix entries.
    """
    if isinstance(manifold, FlatTorus):
        return TorusEncoding(manifold.dim, torus_harmonics)
    if isinstance(manifold, SO3):
        if fourier_features:
            inner = RotationEncoding(rotation)
            return ComposedEncoding(inner, FourierEncoding(inner.out_features, fourier_features, fourier_scale))
        return RotationEncoding(rotation)
    if isinstance(manifold, SE3):
        return SE3Encoding(rotation)
    if isinstance(manifold, Product):
        return ProductEncoding(manifold, [encoding_for(m, torus_harmonics=torus_harmonics, rotation=rotation,
                                                       fourier_features=fourier_features, fourier_scale=fourier_scale)
                                          for m in manifold.manifolds])
    if isinstance(manifold, (Sphere, Euclidean)):
        if fourier_features:
            return FourierEncoding(manifold.point_shape[0], fourier_features, fourier_scale)
        return IdentityEncoding(manifold.point_shape[0])
    raise ValueError(f"no default encoding for {type(manifold).__name__}; pass encoding=...")


def output_size(manifold: RiemannianManifold) -> int:
    """Raw network outputs needed for a tangent vector: Lie-algebra coordinates on SO(3)
    (3) and SE(3) (6), ambient coordinates otherwise."""
    if isinstance(manifold, SO3):
        return 3
    if isinstance(manifold, SE3):
        return 6
    if isinstance(manifold, Product):
        return sum(output_size(m) for m in manifold.manifolds)
    return math.prod(manifold.point_shape)


def raw_to_tangent(manifold: RiemannianManifold, x: Tensor, raw: Tensor) -> Tensor:
    """Map raw outputs ``(..., output_size)`` to tangent vectors at ``x``: ``x @ hat(w)`` on SO(3)
    (exactly tangent), ``proju`` of the ambient vector elsewhere."""
    if isinstance(manifold, SO3):
        return x @ hat(raw)
    if isinstance(manifold, SE3):
        r, _ = SE3.to_rt(x)
        return SE3._tangent(r @ hat(raw[..., :3]), raw[..., 3:])
    if isinstance(manifold, Product):
        sizes = [output_size(m) for m in manifold.manifolds]
        parts = torch.split(raw, sizes, dim=-1)
        return manifold.join([raw_to_tangent(m, xi, p) for m, xi, p in zip(manifold.manifolds, manifold.split(x), parts)])
    return manifold.proju(x, raw.reshape(raw.shape[:-1] + manifold.point_shape))


class ProjectedVelocity(nn.Module):
    """A network turned into a velocity field ``v(x, t)`` on ``manifold``.

    Inputs are projected onto the manifold (``projx``) and encoded; the network's raw output
    is mapped to a tangent vector at the projected point (Lie-algebra outputs on SO(3)/SE(3),
    tangent projection elsewhere). With ``num_classes > 0`` the field is class-conditional,
    ``v(x, t, label)``: a learned embedding of the integer label is appended to the encoded
    point (bind the labels for the solvers, e.g. ``lambda x, t: model(x, t, labels)``).

    Args:
        manifold: the state space.
        net: a module ``net(features, t) -> raw`` with ``raw.shape[-1] == output_size(manifold)``
            and ``features`` = encoding (+ ``label_dim`` embedding features).
        encoding: input encoding (default :func:`encoding_for`).
        num_classes: number of labels (0: unconditional).
        label_dim: size of the label embedding.
    """

    def __init__(self, manifold: RiemannianManifold, net: nn.Module, encoding: nn.Module | None = None,
                 num_classes: int = 0, label_dim: int = 16) -> None:
        super().__init__()
        self.manifold = manifold
        self.net = net
        self.encoding = encoding if encoding is not None else encoding_for(manifold)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.label_embedding = nn.Embedding(num_classes, label_dim) if num_classes else None

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
        return raw_to_tangent(self.manifold, x, raw)

    def _label_features(self, label: Tensor | None, batch_shape: torch.Size) -> Tensor:
        if label is None:
            raise ValueError(f"label is required: the model is conditional on {self.num_classes} classes")
        label = torch.as_tensor(label, device=self.label_embedding.weight.device)
        if label.is_floating_point() or label.is_complex():
            raise ValueError(f"label must hold integer class ids, got dtype {label.dtype}")
        if label.numel() and (int(label.min()) < 0 or int(label.max()) >= self.num_classes):
            raise ValueError(f"label values must be in [0, {self.num_classes}), got "
                             f"[{int(label.min())}, {int(label.max())}]")
        emb = self.label_embedding(label)
        try:
            return emb.expand(*batch_shape, emb.shape[-1])
        except RuntimeError:
            raise ValueError(f"label of shape {tuple(label.shape)} does not broadcast to the batch shape "
                             f"{tuple(batch_shape)}") from None


def velocity_mlp(manifold: RiemannianManifold, hidden: int = 512, depth: int = 4, *, time_frequencies: int = 8,
                 layer_norm: bool = False, torus_harmonics: int = 1, rotation: str = "matrix",
                 fourier_features: int = 0, fourier_scale: float = 8.0, num_classes: int = 0,
                 label_dim: int = 16) -> ProjectedVelocity:
    """A :class:`TimeMLP` velocity field on ``manifold`` with the :func:`encoding_for` encoding
    (class-conditional when ``num_classes > 0``, see :class:`ProjectedVelocity`)."""
    encoding = encoding_for(manifold, torus_harmonics=torus_harmonics, rotation=rotation,
                            fourier_features=fourier_features, fourier_scale=fourier_scale)
    in_features = encoding.out_features + (label_dim if num_classes else 0)
    net = TimeMLP(in_features, output_size(manifold), hidden, depth, time_frequencies, layer_norm)
    return ProjectedVelocity(manifold, net, encoding, num_classes=num_classes, label_dim=label_dim)
