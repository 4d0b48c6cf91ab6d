r"""The attention layers of the structure networks: Invariant Point Attention over residue frames
(:class:`InvariantPointAttention`) and a node-wise transformer layer over invariant residue
features (:class:`NodeTransformerLayer`). :mod:`proteins.network` builds its blocks from them.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["InvariantPointAttention", "NodeTransformerLayer"]


class InvariantPointAttention(nn.Module):
    r"""Invariant Point Attention (AlphaFold2 supplement, Algorithm 22).

    For each head, the attention logit of residue ``i`` to ``j`` combines the scalar query-key
    product, a bias from the pair features and the squared distance between query points of
    ``i`` and key points of ``j`` placed by their frames in the global frame:

    .. math::
        a_{ij} = \mathrm{softmax}_j\Big(w_L\big(\tfrac{1}{\sqrt{c}} q_i^\top k_j + b_{ij}
                 - \tfrac{\gamma w_C}{2}\textstyle\sum_p \|T_i \vec q_{ip} - T_j \vec k_{jp}\|^2\big)\Big),

    with :math:`w_L = \sqrt{1/3}`, :math:`w_C = \sqrt{2 / (9 P_q)}` and a learned softplus
    weight :math:`\gamma` per head. Outputs: attended values, attended value points brought back
    into ``i``'s frame (and their norms), and attended pair features — all invariant.
    """

    def __init__(
        self,
        node_dim: int,
        pair_dim: int,
        heads: int = 8,
        head_dim: int = 16,
        query_points: int = 4,
        value_points: int = 8,
    ) -> None:
        super().__init__()
        self.heads, self.head_dim, self.query_points, self.value_points = heads, head_dim, query_points, value_points
        self.to_qkv = nn.Linear(node_dim, 3 * heads * head_dim, bias=False)
        self.to_qk_points = nn.Linear(node_dim, 2 * heads * query_points * 3)
        self.to_v_points = nn.Linear(node_dim, heads * value_points * 3)
        self.to_bias = nn.Linear(pair_dim, heads, bias=False)
        # softplus(0.541) = 1: every head starts with unit point weight
        self.point_weight = nn.Parameter(torch.full((heads,), 0.541324854612918))
        out_features = heads * (head_dim + value_points * 4 + pair_dim)
        self.to_out = nn.Linear(out_features, node_dim)

    def forward(self, s: Tensor, z: Tensor, rot: Tensor, trans: Tensor, mask: Tensor) -> Tensor:
        h = self.heads
        q, k, v = rearrange(self.to_qkv(s), "b n (three h c) -> three b h n c", three=3, h=h)
        qk_points = rearrange(self.to_qk_points(s), "b n (two h p x) -> two b n h p x", two=2, h=h, x=3)
        v_points = rearrange(self.to_v_points(s), "b n (h p x) -> b n h p x", h=h, x=3)

        def to_global(p: Tensor) -> Tensor:  # (b, n, h, p, 3) local -> global
            return torch.einsum("bnij,bnhpj->bnhpi", rot, p) + trans[:, :, None, None, :]

        q_pts, k_pts, v_pts = to_global(qk_points[0]), to_global(qk_points[1]), to_global(v_points)
        w_l, w_c = math.sqrt(1 / 3), math.sqrt(2 / (9 * self.query_points))
        scalar = torch.einsum("bhic,bhjc->bhij", q, k) / math.sqrt(self.head_dim)
        bias = rearrange(self.to_bias(z), "b i j h -> b h i j")
        q_flat = rearrange(q_pts, "b n h p x -> b h n (p x)")
        k_flat = rearrange(k_pts, "b n h p x -> b h n (p x)")
        sq_dist = (
            q_flat.pow(2).sum(-1)[..., :, None]
            + k_flat.pow(2).sum(-1)[..., None, :]
            - 2 * torch.einsum("bhic,bhjc->bhij", q_flat, k_flat)
        )
        gamma = nn.functional.softplus(self.point_weight)[None, :, None, None]
        logits = w_l * (scalar + bias - 0.5 * w_c * gamma * sq_dist)
        logits = logits.masked_fill(~mask[:, None, None, :], torch.finfo(logits.dtype).min)
        attn = torch.softmax(logits, dim=-1)

        out_scalar = rearrange(torch.einsum("bhij,bhjc->bhic", attn, v), "b h n c -> b n (h c)")
        out_points = torch.einsum("bhij,bjhpx->bihpx", attn, v_pts) - trans[:, :, None, None, :]
        out_points = torch.einsum("bnji,bnhpj->bnhpi", rot, out_points)  # R^T: back into i's frame
        norms = torch.sqrt(out_points.pow(2).sum(-1) + 1e-8)
        out_pair = rearrange(torch.einsum("bhij,bijc->bihc", attn, z), "b n h c -> b n (h c)")
        features = torch.cat(
            [
                out_scalar,
                rearrange(out_points, "b n h p x -> b n (h p x)"),
                rearrange(norms, "b n h p -> b n (h p)"),
                out_pair,
            ],
            dim=-1,
        )
        return self.to_out(features)


class NodeTransformerLayer(nn.Module):
    r"""One post-norm transformer encoder layer over the residues of each protein: multi-head
    self-attention whose keys are the real residues only, then a two-layer feed-forward network,
    each added back and layer-normed,

    .. math::
        s \leftarrow \mathrm{LN}\big(s + W_o\,\mathrm{attn}(s)\big), \qquad
        s \leftarrow \mathrm{LN}\big(s + W_2\,\mathrm{ReLU}(W_1 s)\big).

    Written on :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels, static
    shapes, compiles with ``fullgraph=True``); dropout is not used (generative models here
    train on few passes over small data with an EMA).
    """

    def __init__(self, dim: int, heads: int, hidden: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"the node width {dim} must be a multiple of the transformer heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.attention_norm = nn.LayerNorm(dim)
        width = dim if hidden is None else hidden
        self.feed_forward = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, dim))
        self.feed_forward_norm = nn.LayerNorm(dim)

    def forward(self, s: Tensor, mask: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(s), "b n (three h c) -> three b h n c", three=3, h=self.heads)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        s = self.attention_norm(s + self.out(rearrange(attended, "b h n c -> b n (h c)")))
        return self.feed_forward_norm(s + self.feed_forward(s))
