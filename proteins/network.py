r"""The SE(3)-equivariant backbone network: Invariant Point Attention over residue frames.

:class:`BackboneNetwork` maps noisy frames :math:`x_t` (``(B, N, 4, 4)``, translations in
nanometres), the time ``t`` (``(B,)``), a residue mask and optionally a self-conditioning
prediction to predicted clean frames :math:`\hat x_1`. Every input feature is invariant (time,
sequence position, distances between CA atoms) and every frame update is expressed in the
residue's own frame, so a global rigid motion :math:`g` of the input gives :math:`g \hat x_1`
(equivariance), and padded residues never reach real ones (attention masks their keys).

Layers (AlphaFold2 supplement, Jumper et al. 2021; FrameFlow, Yim et al. 2023):

- node features: sinusoidal embeddings of the time and of the residue index;
- pair features: the clipped relative sequence position (one-hot, :math:`|i - j| \le 32`), radial
  basis functions of CA distances of :math:`x_t`, and of the self-conditioning prediction (zeros
  without one);
- blocks of Invariant Point Attention (Algorithm 22), optionally a node-wise transformer over
  the residues (FrameFlow: after each IPA, its input the node features plus a projection of the
  initial node embedding; its output added back), a node transition, a backbone update
  (Algorithm 23: a quaternion ``(1, b, c, d)`` and a translation in the residue's frame,
  composed on the right) and a pair (edge) transition from the new node features.

The node transformer sees only invariant node features (attention without points or pair
bias), so equivariance and padding invariance hold with it as without it.

Both networks read nothing back to the host in their forward pass (no data-dependent Python
branches; :class:`CodesignNetwork`'s residue-type check is its one host read-back, skipped
inside the flows' loops and while ``torch.compile`` traces), so they compile with
``fullgraph=True``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gm.checks import Checks, index_out_of_range, value_checks_on
from manifolds.se3 import SE3
from proteins.attention import InvariantPointAttention, NodeTransformerLayer

__all__ = [
    "BackboneNetwork",
    "CodesignNetwork",
    "CodesignPrediction",
    "InvariantPointAttention",
    "NodeTransformerLayer",
    "quaternion_to_rotation",
]


def sinusoidal(x: Tensor, dim: int, min_period: float, max_period: float) -> Tensor:
    """``2 * (dim // 2)`` sinusoidal features ``(..., dim)`` of ``x`` (any shape) with periods
    spaced geometrically from ``min_period`` to ``max_period`` (in units of ``x``)."""
    half = dim // 2
    periods = torch.logspace(math.log10(min_period), math.log10(max_period), half, dtype=x.dtype, device=x.device)
    angles = x[..., None] * (2 * math.pi / periods)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def rbf(d: Tensor, count: int, max_value: float) -> Tensor:
    """Gaussian radial basis features ``(..., count)`` of distances ``d`` on [0, max_value]."""
    centres = torch.linspace(0.0, max_value, count, dtype=d.dtype, device=d.device)
    width = max_value / count
    return torch.exp(-(((d[..., None] - centres) / width) ** 2))


def quaternion_to_rotation(q: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` of (not necessarily unit) quaternions ``(..., 4)``
    ``(w, x, y, z)``; the quaternion is normalised first."""
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


class _Block(nn.Module):
    """IPA, the node transformer (``transformer_layers`` > 0), transition, frame update, then
    (unless ``update_pair`` is false: the last block, whose pair features nothing reads) the pair
    update from the new node features."""

    def __init__(
        self,
        node_dim: int,
        pair_dim: int,
        heads: int,
        head_dim: int,
        query_points: int,
        value_points: int,
        update_pair: bool = True,
        transformer_layers: int = 0,
        transformer_heads: int = 4,
    ) -> None:
        super().__init__()
        self.update_pair = update_pair
        self.ipa = InvariantPointAttention(node_dim, pair_dim, heads, head_dim, query_points, value_points)
        self.ipa_norm = nn.LayerNorm(node_dim)
        if transformer_layers:
            # the transformer's input: the node features plus a projection of the initial node
            # embedding (a skip past the IPA stack); its output is projected and added back
            self.transformer_skip = nn.Linear(node_dim, node_dim, bias=False)
            self.transformer = nn.ModuleList(
                NodeTransformerLayer(node_dim, transformer_heads) for _ in range(transformer_layers)
            )
            self.transformer_out = nn.Linear(node_dim, node_dim)
        self.transition = nn.Sequential(nn.Linear(node_dim, 2 * node_dim), nn.ReLU(), nn.Linear(2 * node_dim, node_dim))
        self.transition_norm = nn.LayerNorm(node_dim)
        self.frame_update = nn.Linear(node_dim, 6)
        nn.init.zeros_(self.frame_update.weight)  # start at the identity update: x1_hat = x_t
        nn.init.zeros_(self.frame_update.bias)
        if update_pair:
            self.pair_update = nn.Sequential(
                nn.Linear(2 * node_dim + pair_dim, pair_dim), nn.ReLU(), nn.Linear(pair_dim, pair_dim)
            )
            self.pair_norm = nn.LayerNorm(pair_dim)
            self.node_to_pair = nn.Linear(node_dim, node_dim)

    def forward(
        self, s: Tensor, z: Tensor, rot: Tensor, trans: Tensor, mask: Tensor, s_initial: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        real = mask[..., None].to(s.dtype)
        s = self.ipa_norm(s + self.ipa(s, z, rot, trans, mask)) * real
        if hasattr(self, "transformer"):
            hidden = s + self.transformer_skip(s_initial)
            for layer in self.transformer:
                hidden = layer(hidden, mask)
            s = (s + self.transformer_out(hidden)) * real
        s = self.transition_norm(s + self.transition(s)) * real
        update = self.frame_update(s) * real
        delta_rot = quaternion_to_rotation(torch.cat([torch.ones_like(update[..., :1]), update[..., :3]], dim=-1))
        trans = trans + torch.einsum("bnij,bnj->bni", rot, update[..., 3:])
        rot = rot @ delta_rot
        if not self.update_pair:
            return s, z, rot, trans
        p = self.node_to_pair(s)
        # pair_update's first layer on [z_ij, p_i, p_j] written as W_z z_ij + (W_i p)_i + (W_j p)_j:
        # the same function and parameters without the (B, N, N, 2 node + pair) concatenation
        # (N^2 rows times pair_dim columns instead of 2 node_dim + pair_dim)
        first = cast(nn.Linear, self.pair_update[0])  # Sequential's indexing is typed as any Module
        w_z, w_i, w_j = first.weight.split([z.shape[-1], p.shape[-1], p.shape[-1]], dim=1)
        hidden = F.linear(z, w_z, first.bias) + F.linear(p, w_i)[:, :, None, :] + F.linear(p, w_j)[:, None, :, :]
        z = self.pair_norm(z + self.pair_update[1:](hidden))
        return s, z, rot, trans


class BackboneNetwork(nn.Module):
    """Predicts clean residue frames from noisy ones, SE(3)-equivariantly (see the module doc).

    Args:
        node_dim, pair_dim: widths of the node and pair features.
        blocks: number of IPA blocks (each with its own weights).
        heads, head_dim, query_points, value_points: IPA sizes.
        transformer_layers, transformer_heads: the node transformer after each IPA (0 layers:
            none, the ``small`` preset; FrameFlow: 2 layers of 4 heads).
        max_relative_position: relative sequence offsets beyond it share one bin.
        distance_bins, max_distance: radial basis of CA distances (nanometres).
        self_condition: accept a previous prediction as input (FrameFlow's self-conditioning).
        extra_node_features: width of further per-residue input features that :meth:`trunk`
            takes (0 here; :class:`CodesignNetwork` feeds residue types through them).

    Call ``network(x_t, t, mask, self_condition=None)`` with frames ``(B, N, 4, 4)``
    (translations in nm), times ``(B,)``, a bool mask ``(B, N)`` and an optional earlier
    prediction ``(B, N, 4, 4)``; returns predicted frames ``(B, N, 4, 4)`` (padding: identity).
    """

    def __init__(
        self,
        node_dim: int = 128,
        pair_dim: int = 64,
        blocks: int = 4,
        heads: int = 8,
        head_dim: int = 16,
        query_points: int = 4,
        value_points: int = 8,
        max_relative_position: int = 32,
        distance_bins: int = 22,
        max_distance: float = 2.0,
        self_condition: bool = True,
        extra_node_features: int = 0,
        transformer_layers: int = 0,
        transformer_heads: int = 4,
    ) -> None:
        super().__init__()
        for name, value in (
            ("transformer_heads", transformer_heads),
            ("node_dim", node_dim),
            ("pair_dim", pair_dim),
            ("blocks", blocks),
            ("heads", heads),
            ("head_dim", head_dim),
            ("query_points", query_points),
            ("value_points", value_points),
            ("max_relative_position", max_relative_position),
            ("distance_bins", distance_bins),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if node_dim % 2:
            raise ValueError(f"node_dim must be even (sinusoidal embeddings come in sin/cos pairs), got {node_dim}")
        for name, value in (("extra_node_features", extra_node_features), ("transformer_layers", transformer_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if transformer_layers and node_dim % transformer_heads:
            raise ValueError(f"node_dim ({node_dim}) must be a multiple of transformer_heads ({transformer_heads})")
        if not max_distance > 0:
            raise ValueError(f"max_distance must be positive (nanometres), got {max_distance!r}")
        self.node_dim, self.max_relative_position = node_dim, max_relative_position
        self.distance_bins, self.max_distance, self.self_condition = distance_bins, max_distance, self_condition
        self.extra_node_features = extra_node_features
        self.node_embed = nn.Sequential(
            nn.Linear(2 * node_dim + extra_node_features, node_dim),
            nn.ReLU(),
            nn.Linear(node_dim, node_dim),
            nn.LayerNorm(node_dim),
        )
        pair_in = 2 * max_relative_position + 1 + distance_bins * (2 if self_condition else 1)
        self.pair_embed = nn.Sequential(
            nn.Linear(pair_in, pair_dim), nn.ReLU(), nn.Linear(pair_dim, pair_dim), nn.LayerNorm(pair_dim)
        )
        self.blocks = nn.ModuleList(
            _Block(
                node_dim,
                pair_dim,
                heads,
                head_dim,
                query_points,
                value_points,
                update_pair=i < blocks - 1,
                transformer_layers=transformer_layers,
                transformer_heads=transformer_heads,
            )
            for i in range(blocks)
        )

    def _check(self, x_t: Tensor, t: Tensor, mask: Tensor, self_condition: Tensor | None) -> None:
        if not isinstance(x_t, Tensor) or x_t.dim() != 4 or x_t.shape[-2:] != (4, 4):
            raise ValueError(
                f"x_t must be frames of shape (B, N, 4, 4), got "
                f"{tuple(x_t.shape) if isinstance(x_t, Tensor) else type(x_t).__name__}"
            )
        batch = tuple(x_t.shape[:2])
        if not isinstance(t, Tensor) or tuple(t.shape) != batch[:1]:
            raise ValueError(
                f"t must have shape (B,) = ({batch[0]},), one time per protein, got "
                f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}"
            )
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != batch:
            raise ValueError(
                f"mask must be a bool tensor of shape (B, N) = {batch}, got "
                f"{(mask.dtype, tuple(mask.shape)) if isinstance(mask, Tensor) else type(mask).__name__}"
            )
        if self_condition is not None:
            if not self.self_condition:
                raise ValueError("self_condition was given but the network was built with self_condition=False")
            if not isinstance(self_condition, Tensor) or self_condition.shape != x_t.shape:
                raise ValueError(
                    f"self_condition must have the shape of x_t {tuple(x_t.shape)}, got "
                    f"{tuple(self_condition.shape) if isinstance(self_condition, Tensor) else None}"
                )

    def _distance_features(self, frames: Tensor) -> Tensor:
        ca = frames[..., :3, 3]
        d = torch.sqrt((ca[:, :, None, :] - ca[:, None, :, :]).pow(2).sum(-1) + 1e-10)
        return rbf(d, self.distance_bins, self.max_distance)

    def forward(self, x_t: Tensor, t: Tensor, mask: Tensor, self_condition: Tensor | None = None) -> Tensor:
        return self.trunk(x_t, t, mask, self_condition)[0]

    def trunk(
        self,
        x_t: Tensor,
        t: Tensor,
        mask: Tensor,
        self_condition: Tensor | None = None,
        node_features: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The predicted frames ``(B, N, 4, 4)`` and the final node features ``(B, N, node_dim)``
        (invariant; zero at padding), given optional extra invariant node inputs
        ``node_features`` ``(B, N, extra_node_features)``."""
        self._check(x_t, t, mask, self_condition)
        b, n = x_t.shape[:2]
        dtype = x_t.dtype
        if (node_features is None) != (self.extra_node_features == 0) or (
            node_features is not None and tuple(node_features.shape) != (b, n, self.extra_node_features)
        ):
            raise ValueError(
                f"node_features must be {'None' if self.extra_node_features == 0 else 'a tensor'} of "
                f"shape {(b, n, self.extra_node_features)} (extra_node_features="
                f"{self.extra_node_features}), got "
                f"{None if node_features is None else tuple(node_features.shape)}"
            )
        index = torch.arange(n, device=x_t.device)
        time = sinusoidal(t.to(dtype), self.node_dim, 1e-3, 10.0)[:, None, :].expand(b, n, -1)
        position = sinusoidal(index.to(dtype), self.node_dim, 2.5, 1e4)[None].expand(b, n, -1)
        inputs = [time, position] + ([] if node_features is None else [node_features.to(dtype)])
        s = self.node_embed(torch.cat(inputs, dim=-1)) * mask[..., None].to(dtype)
        offset = (index[None, :] - index[:, None]).clamp(-self.max_relative_position, self.max_relative_position)
        pair = [self._distance_features(x_t)]
        if self.self_condition:
            pair.append(
                torch.zeros_like(pair[-1])
                if self_condition is None
                else self._distance_features(self_condition.to(dtype))
            )
        # pair_embed's first layer on [one_hot(offset_ij), distances_ij]: a one-hot row times W is
        # a column of W, looked up once per (i, j) and shared by the batch, instead of a
        # (B, N, N, 2 max_relative_position + 1) one-hot product (same function and parameters)
        first = cast(nn.Linear, self.pair_embed[0])  # Sequential's indexing is typed as any Module
        classes = 2 * self.max_relative_position + 1
        w_relative, w_rest = first.weight.split([classes, first.in_features - classes], dim=1)
        hidden = (
            F.linear(torch.cat(pair, dim=-1), w_rest, first.bias) + w_relative.t()[offset + self.max_relative_position]
        )
        z = self.pair_embed[1:](hidden)
        rot, trans = x_t[..., :3, :3], x_t[..., :3, 3]
        s_initial = s
        for block in self.blocks:
            s, z, rot, trans = block(s, z, rot, trans, mask, s_initial)
        eye = torch.eye(3, dtype=dtype, device=x_t.device)
        rot = torch.where(mask[..., None, None], rot, eye)
        trans = trans * mask[..., None].to(dtype)
        return SE3.from_rt(rot, trans), s


class CodesignPrediction(NamedTuple):
    """A co-design network's output: predicted clean frames ``(B, N, 4, 4)`` (nm) and posterior
    logits ``(B, N, 20)`` over the residue types of :data:`proteins.data.AMINO_ACIDS`."""

    frames: Tensor
    logits: Tensor


class CodesignNetwork(nn.Module):
    r"""One network for structure and sequence (Multiflow-class co-design, Campbell et al. 2024).

    The trunk is :class:`BackboneNetwork`'s IPA stack; each residue's node input gains an
    embedding of its current residue type (20 amino acids plus the mask token, id 20), a
    sinusoidal embedding of the sequence's own time :math:`t_{seq}` beside the structure's
    :math:`t_{str}`, and (self-conditioning) the previous step's residue-type probabilities. A
    head on the final node features gives the amino-acid logits beside the frame prediction. All
    sequence inputs are per-residue invariants, so the frames stay SE(3)-equivariant and the
    logits invariant.

    Args:
        node_dim, pair_dim, blocks, heads, head_dim, query_points, value_points,
            max_relative_position, distance_bins, max_distance, self_condition,
            transformer_layers, transformer_heads: as :class:`BackboneNetwork` (the trunk).
        residue_types: number of residue types (20).

    Call ``network(x_t, t_structure, residues_t, t_sequence, mask, self_condition=None)`` with
    frames ``(B, N, 4, 4)`` (nm), times ``(B,)`` each, residue types ``(B, N)`` (ids in
    ``[0, residue_types]``, the last being the mask; anything at padding) and a bool mask; the
    optional self-conditioning input is an earlier :class:`CodesignPrediction`. Returns a
    :class:`CodesignPrediction`.
    """

    def __init__(
        self,
        node_dim: int = 128,
        pair_dim: int = 64,
        blocks: int = 4,
        heads: int = 8,
        head_dim: int = 16,
        query_points: int = 4,
        value_points: int = 8,
        max_relative_position: int = 32,
        distance_bins: int = 22,
        max_distance: float = 2.0,
        self_condition: bool = True,
        residue_types: int = 20,
        transformer_layers: int = 0,
        transformer_heads: int = 4,
    ) -> None:
        super().__init__()
        if isinstance(residue_types, bool) or not isinstance(residue_types, int) or residue_types < 2:
            raise ValueError(f"residue_types must be an integer >= 2, got {residue_types!r}")
        if isinstance(node_dim, bool) or not isinstance(node_dim, int) or node_dim < 2:
            raise ValueError(f"node_dim must be a positive even integer, got {node_dim!r}")
        self.residue_types, self.node_dim, self.self_condition = residue_types, node_dim, self_condition
        extra = 2 * node_dim + (residue_types if self_condition else 0)
        self.backbone = BackboneNetwork(
            node_dim,
            pair_dim,
            blocks,
            heads,
            head_dim,
            query_points,
            value_points,
            max_relative_position,
            distance_bins,
            max_distance,
            self_condition,
            extra_node_features=extra,
            transformer_layers=transformer_layers,
            transformer_heads=transformer_heads,
        )
        self.residue_embed = nn.Embedding(residue_types + 1, node_dim)
        self.sequence_head = nn.Sequential(
            nn.Linear(node_dim, node_dim), nn.ReLU(), nn.LayerNorm(node_dim), nn.Linear(node_dim, residue_types)
        )

    def forward(
        self,
        x_t: Tensor,
        t_structure: Tensor,
        residues_t: Tensor,
        t_sequence: Tensor,
        mask: Tensor,
        self_condition: CodesignPrediction | None = None,
    ) -> CodesignPrediction:
        batch = tuple(x_t.shape[:2]) if isinstance(x_t, Tensor) else ()
        if not isinstance(residues_t, Tensor) or residues_t.is_floating_point() or tuple(residues_t.shape) != batch:
            raise ValueError(
                f"residues_t must be integer residue types of shape (B, N) = {batch}, got "
                f"{tuple(residues_t.shape) if isinstance(residues_t, Tensor) else type(residues_t).__name__}"
            )
        if not isinstance(t_sequence, Tensor) or tuple(t_sequence.shape) != batch[:1]:
            raise ValueError(
                f"t_sequence must have shape (B,) = {batch[:1]}, one time per protein, got "
                f"{tuple(t_sequence.shape) if isinstance(t_sequence, Tensor) else type(t_sequence).__name__}"
            )
        previous_frames = None
        if self_condition is not None:
            if not self.self_condition:
                raise ValueError("self_condition was given but the network was built with self_condition=False")
            if not isinstance(self_condition, CodesignPrediction):
                raise ValueError(f"self_condition must be a CodesignPrediction, got {type(self_condition).__name__}")
            previous_frames = self_condition.frames
        dtype = x_t.dtype
        # padding may hold any id (e.g. UNKNOWN_RESIDUE = -1): embed the mask token there
        ids = torch.where(mask, residues_t, self.residue_types)
        # one host read-back; skipped in the flows' loss and sampling loops, whose residue types
        # were checked once or built by the sampler (gm.checks.inputs_checked), and while
        # torch.compile traces (gm.checks.value_checks_on)
        if value_checks_on():
            checks = Checks()
            checks.add(
                index_out_of_range(ids, self.residue_types + 1),
                lambda: (
                    f"residues_t must hold residue types in [0, {self.residue_types}] (the last is the mask) "
                    f"at real residues, got values in [{int(ids.min())}, {int(ids.max())}]"
                ),
            )
            checks.run()
        n = x_t.shape[1]
        features = [
            self.residue_embed(ids).to(dtype),
            sinusoidal(t_sequence.to(dtype), self.node_dim, 1e-3, 10.0)[:, None, :].expand(-1, n, -1),
        ]
        if self.self_condition:
            features.append(
                torch.zeros(*batch, self.residue_types, dtype=dtype, device=x_t.device)
                if self_condition is None
                else torch.softmax(self_condition.logits.to(dtype), dim=-1)
            )
        frames, s = self.backbone.trunk(x_t, t_structure, mask, previous_frames, torch.cat(features, dim=-1))
        return CodesignPrediction(frames, self.sequence_head(s))
