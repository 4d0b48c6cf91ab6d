r"""Flow matching of protein backbones on SE(3)^N (FrameFlow, Yim et al. 2023; FoldFlow, Bose et al. 2023).

State: the frames of N residues, points ``(B, N, 4, 4)`` of :class:`manifolds.SE3` with a
residue mask ``(B, N)`` (False: padding, kept at the identity frame). Inside the flow,
translations are in **nanometres** (:data:`NM_PER_ANGSTROM`); :meth:`BackboneFlow.frames_from_atoms`
and :meth:`BackboneFlow.sample` convert from and to Angstrom.

- Base distribution: Haar rotations times Gaussian translations ``N(0, translation_std^2 I)``
  (nm) projected to zero CA centroid over the real residues. Data frames are centred the same
  way, the interpolant is a convex combination of centred translations, and sampling velocities
  have their mean translation removed, so the flow stays centred.
- Path: the geodesic interpolant per residue with one time per protein, ``t`` of shape ``(B,)``
  (:class:`rfm.GeodesicPath` with the linear schedule):
  :math:`R_t = R_0 \exp(t \log(R_0^\top R_1))`, :math:`x_t = (1 - t) x_0 + t x_1`.
- Prediction: the network predicts the clean frames :math:`\hat x_1`. The velocity follows from
  the path: rotations :math:`\dot R = \lambda_r(t)\, R_t \widehat{\log(R_t^\top \hat R_1)}`,
  translations :math:`\dot x = \lambda_x(t)(\hat x_1 - x_t)`, where :math:`\lambda(t) =
  \dot\kappa_t / (1 - \kappa_t)` is the scheduler's rate: :math:`1 / (1 - t)` for the linear
  schedule of training, and a constant 10 for rotations at sampling
  (:class:`gm.ExponentialRateScheduler`, FrameFlow's exponential rotation schedule).
- Loss (FrameFlow's weighting): with :math:`\nu_t = 1 - \min(t, 1 - c)` (``normaliser_clip``
  c = 0.1),

  .. math::
     \mathcal L = w_x \frac{\|x_1 - \hat x_1\|^2}{\nu_t^2}
                + w_r \frac{\|\log(R_t^\top R_1) - \log(R_t^\top \hat R_1)\|^2}{\nu_t^2}
                + w_a\, \mathbb 1[t > t_a]\,(\text{atom} + \text{local distance errors}),

  averaged over real residues (translations in nm; rotations as rotation vectors, whose
  difference divided by :math:`\nu_t` is the error of the conditional rotation velocity).
  The auxiliary term compares the ideal backbone atoms N, CA, C of :math:`\hat x_1` and
  :math:`x_1`, and their pairwise distances below 0.6 nm (FrameDiff's term; ``auxiliary_cutoff``
  0: every pair, as FrameFlow). FrameFlow divides it by :math:`\nu_t^2` as the frame terms
  (``auxiliary_time_scaled``); unscaled, it weighs little against them near the data.
- Self-conditioning: with probability ``self_condition_prob`` a training step first predicts
  without it (no gradient) and feeds that prediction back; at sampling, each step gets the
  previous step's prediction. The training decision is drawn on the host (a CPU generator), never
  read back from the device.

Host reads and ``torch.compile``: input checks read values back once per call (one deferred
read, :class:`gm.checks.Checks`); ``validate=False`` (the training objective, whose crops were
checked on the host) and the sampler's steps read nothing back. The loss with a given
``self_condition`` and ``generator=None``, and one sampling step, compile with
``fullgraph=True``; while ``torch.compile`` traces, value checks are skipped (type and shape
checks stay).
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from gm.checks import (
    Checks,
    check_generator,
    check_positive_int,
    describe_time_range,
    inputs_checked,
    time_out_of_range,
    value_checks_on,
)
from gm.process import Process
from gm.schedulers import ConvexScheduler, ExponentialRateScheduler, LinearScheduler
from gm.simulate import compiled_advance
from manifolds.se3 import SE3
from manifolds.so3 import SO3, so3_log
from proteins.frames import backbone_atoms, frames_from_backbone, ideal_ncac
from proteins.inputs import check_mask
from proteins.manifold import CentredFrames
from rfm.path import GeodesicPath
from rfm.solver import ManifoldFlowProcess, ODESolver

__all__ = ["NM_PER_ANGSTROM", "BackboneFlow", "BackboneLoss", "centre_translations", "check_mask"]

#: translations inside the model are in nanometres
NM_PER_ANGSTROM = 0.1

#: ``model(x_t, t, mask, self_condition) -> predicted clean frames``
FrameModel = Callable[[Tensor, Tensor, Tensor, "Tensor | None"], Tensor]


def _check_times(t: object, batch: int, name: str, checks: Checks | None) -> Tensor:
    """Per-protein times ``(batch,)``: type and shape now, the range [0, 1] into ``checks``."""
    if not isinstance(t, Tensor) or not torch.is_floating_point(t) or tuple(t.shape) != (batch,):
        raise ValueError(
            f"{name} must be a floating-point tensor of shape (B,) = ({batch},), one time per protein, "
            f"got {tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}"
            + (f" of dtype {t.dtype}" if isinstance(t, Tensor) else "")
        )
    if checks is not None:
        checks.add(time_out_of_range(t), lambda: describe_time_range(t, name))
    return t


def _host_coin(probability: float, generator: torch.Generator | None = None) -> bool:
    """A Bernoulli(``probability``) decision drawn on the host: by ``generator`` if it is a CPU
    generator, else by torch's default CPU generator (seeded by ``torch.manual_seed``, saved in the
    trainer's checkpoints). A Python branch needs the value on the host; a draw on an accelerator
    would have to wait for all queued work, at every training step. One draw each time (also for
    probabilities 0 and 1), so the generator's stream does not depend on ``probability``."""
    host = generator if generator is not None and generator.device.type == "cpu" else None
    return bool(torch.rand((), generator=host, device="cpu") < probability)


def _checked_model_calls() -> contextlib.AbstractContextManager:
    """The context of the model calls of a loss or sampler: their inputs were checked once (or
    built from checked data), so the model skips its own value checks
    (:func:`gm.checks.inputs_checked`). A no-op while ``torch.compile`` traces, which skips them
    anyway and should not trace the context variable."""
    return contextlib.nullcontext() if torch.compiler.is_compiling() else inputs_checked()


def _to_device(x: Tensor, device: torch.device | str) -> Tensor:
    """``x`` (on the host) on ``device``: through pinned memory with a non-blocking copy to a
    CUDA device, so the host goes on preparing the next batch while the copy runs."""
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def centre_translations(x: Tensor, mask: Tensor) -> Tensor:
    """Frames (or SE(3) tangent vectors) ``(B, N, 4, 4)`` with the mean translation over real
    residues removed; padding residues keep a zero translation."""
    weights = mask.to(x.dtype)[..., None]
    trans = x[..., :3, 3]
    mean = (trans * weights).sum(-2, keepdim=True) / weights.sum(-2, keepdim=True).clamp_min(1)
    out = x.clone()
    out[..., :3, 3] = (trans - mean) * weights
    return out


def _scale_translations(frames: Tensor, factor: float) -> Tensor:
    """A copy of ``frames`` with translations times ``factor`` (Angstrom <-> nm)."""
    out = frames.clone()
    out[..., :3, 3] = out[..., :3, 3] * factor
    return out


def _body_rotvec(r_t: Tensor, r_1: Tensor) -> Tensor:
    """``log(R_t^T R_1)`` as a rotation vector ``(..., 3)``: the body-frame direction to R_1."""
    return so3_log(r_t.transpose(-1, -2) @ r_1)


@dataclass
class BackboneLoss:
    """The parts of one loss evaluation: ``total`` (with its graph) and the detached 0-dim tensors
    of its terms, left on the device so that a training step reads nothing back (read them when
    logging, e.g. ``float(loss.translation)``)."""

    total: Tensor
    translation: Tensor
    rotation: Tensor
    auxiliary: Tensor


@dataclass
class BackboneFlow:
    """SE(3)^N flow matching for backbones: base, path, loss and sampler (see the module doc).

    Args:
        translation_std: std (nm) of the base translations per coordinate.
        translation_weight, rotation_weight: loss weights :math:`w_x, w_r`.
        auxiliary_weight: weight :math:`w_a` of the atom and distance terms (0: off).
        auxiliary_min_time: :math:`t_a`, the auxiliary term applies for larger times only.
        auxiliary_time_scaled: divide the auxiliary errors by :math:`\nu_t^2` as the frame
            terms are (FrameFlow: its atoms are divided by :math:`\nu_t`); False: unscaled
            (FrameDiff), so the auxiliary term weighs little against the frame terms near the data.
        auxiliary_cutoff: the distance term covers the atom pairs closer than this (nm) in the
            data (FrameDiff: 0.6); 0: every pair (FrameFlow).
        normaliser_clip: :math:`c` in :math:`\\nu_t = 1 - \\min(t, 1 - c)`.
        self_condition_prob: probability of a self-conditioned training step.
        time_power: training times with density :math:`a t^{a - 1}` (1: uniform).
        min_time: training times are drawn in ``[min_time, 1]``.
        rotation_scheduler: the rotation schedule used at sampling (exponential rate 10).
    """

    translation_std: float = 1.0
    translation_weight: float = 1.0
    rotation_weight: float = 0.5
    auxiliary_weight: float = 0.25
    auxiliary_min_time: float = 0.25
    auxiliary_time_scaled: bool = False
    auxiliary_cutoff: float = 0.6
    normaliser_clip: float = 0.1
    self_condition_prob: float = 0.5
    time_power: float = 1.0
    min_time: float = 0.01
    rotation_scheduler: ConvexScheduler = field(default_factory=lambda: ExponentialRateScheduler(10.0))

    def __post_init__(self) -> None:
        for name in ("translation_std", "time_power"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("translation_weight", "rotation_weight", "auxiliary_weight", "auxiliary_cutoff"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("auxiliary_min_time", "self_condition_prob", "min_time"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if not (isinstance(self.normaliser_clip, (int, float)) and 0 < self.normaliser_clip <= 1):
            raise ValueError(f"normaliser_clip must be in (0, 1], got {self.normaliser_clip!r}")
        if not isinstance(self.auxiliary_time_scaled, bool):
            raise ValueError(f"auxiliary_time_scaled must be a bool, got {self.auxiliary_time_scaled!r}")
        if not isinstance(self.rotation_scheduler, ConvexScheduler):
            raise ValueError(
                f"rotation_scheduler must be a gm.ConvexScheduler, got {type(self.rotation_scheduler).__name__}"
            )
        self.manifold = SE3()
        self.path = GeodesicPath(self.manifold, LinearScheduler(), validate=False)

    # ---------------------------------------------------------------------------------------
    # state

    @staticmethod
    def frames_from_atoms(atoms: Tensor, mask: Tensor, *, validate: bool = True) -> Tensor:
        """Centred frames (nm) ``(B, N, 4, 4)`` of backbone atoms ``(B, N, A >= 3, 3)`` in Angstrom.
        ``validate``: check the mask's rows and the residues' N, CA, C (one host read-back; see
        :func:`proteins.inputs.check_mask` and :func:`proteins.frames.frames_from_backbone`)."""
        checks = Checks() if value_checks_on(validate) else None
        check_mask(
            mask,
            tuple(atoms.shape[:-2]) if isinstance(atoms, Tensor) else (),
            nonempty=True,
            validate=validate,
            checks=checks,
        )
        frames = frames_from_backbone(atoms, mask, validate=checks is not None, checks=checks)
        if checks is not None:
            checks.run()  # the mask's rows and the residues' atoms: one host read-back
        return centre_translations(_scale_translations(frames, NM_PER_ANGSTROM), mask)

    @staticmethod
    def atoms_from_frames(frames: Tensor, mask: Tensor) -> Tensor:
        """Ideal backbone atoms N, CA, C, O ``(B, N, 4, 3)`` in Angstrom from frames in nm."""
        # validate=False: called in the training loss on predicted frames (rigid by construction)
        return backbone_atoms(_scale_translations(frames, 1 / NM_PER_ANGSTROM), mask, validate=False)

    def base(
        self,
        mask: Tensor,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        validate: bool = True,
    ) -> Tensor:
        """Draws ``(B, N, 4, 4)`` from the base: Haar rotations, centred Gaussian translations (nm);
        padding residues are identity frames. ``validate=False`` skips the mask's value check
        (for a mask checked once already)."""
        if not isinstance(mask, Tensor) or mask.dim() != 2:
            raise ValueError(
                f"mask must be a bool tensor of shape (B, N), got "
                f"{tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__}"
            )
        check_mask(mask, tuple(mask.shape), nonempty=True, validate=validate)
        check_generator(generator, device=mask.device)
        rot = SO3().random_base(*mask.shape, dtype=dtype, device=mask.device, generator=generator)
        trans = self.translation_std * torch.randn(*mask.shape, 3, dtype=dtype, device=mask.device, generator=generator)
        eye = torch.eye(3, dtype=dtype, device=mask.device)
        frames = SE3.from_rt(torch.where(mask[..., None, None], rot, eye), trans)
        return centre_translations(frames, mask)

    # ---------------------------------------------------------------------------------------
    # training

    def training_times(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``batch`` times in ``[min_time, 1]`` with density proportional to :math:`t^{a-1}`."""
        u = torch.rand(batch, dtype=dtype, device=device, generator=generator)
        u = u if self.time_power == 1.0 else u ** (1.0 / self.time_power)
        return self.min_time + (1 - self.min_time) * u

    def loss(
        self,
        model: FrameModel,
        x1: Tensor,
        mask: Tensor,
        *,
        generator: torch.Generator | None = None,
        t: Tensor | None = None,
        self_condition: bool | None = None,
        validate: bool = True,
    ) -> BackboneLoss:
        """The loss of ``model`` on data frames ``x1`` (nm, ``(B, N, 4, 4)``, e.g. from
        :meth:`frames_from_atoms`; centred here if they are not) with residue ``mask`` ``(B, N)``.

        Args:
            generator: draws the times, the base and the self-conditioning decision (on the
                data's device; ``None``: torch's default generators).
            t: times ``(B,)`` (default: drawn by :meth:`training_times`).
            self_condition: force (True) or skip (False) the self-conditioning pass; ``None``
                draws it with probability ``self_condition_prob`` on the host (``generator`` if
                it is a CPU generator, else torch's default CPU generator): never a read-back
                from the device. Pass it to ``torch.compile`` the loss (a Python branch).
            validate: check the mask's rows and the range of a given ``t`` (one host read-back);
                ``False`` for data checked once (the training objective checks its crops on the
                host). Types and shapes are always checked.
        """
        if not isinstance(x1, Tensor) or x1.dim() != 4 or x1.shape[-2:] != (4, 4):
            raise ValueError(
                f"x1 must be frames of shape (B, N, 4, 4), got "
                f"{tuple(x1.shape) if isinstance(x1, Tensor) else type(x1).__name__}"
            )
        checks = Checks() if value_checks_on(validate) else None
        check_mask(mask, tuple(x1.shape[:2]), nonempty=True, validate=validate, checks=checks)
        batch, dtype = x1.shape[0], x1.dtype
        if t is not None:
            t = _check_times(t, batch, "t", checks)
        if checks is not None:
            checks.run()  # mask and times: one host read-back
        x1 = centre_translations(x1, mask)  # a no-op for frames_from_atoms' output
        if t is None:
            t = self.training_times(batch, generator=generator, dtype=dtype, device=x1.device)
        x0 = self.base(mask, generator=generator, dtype=dtype, validate=False)  # mask checked above
        x_t = self.path.sample(x0, x1, t).x_t
        if self_condition is None:
            self_condition = _host_coin(self.self_condition_prob, generator)
        previous = None
        with _checked_model_calls():  # x_t is built here from checked data
            if self_condition:
                with torch.no_grad():
                    previous = model(x_t, t, mask, None).detach()
            x1_hat = model(x_t, t, mask, previous)
        return self.prediction_loss(x1, x_t, x1_hat, t, mask)

    def prediction_loss(self, x1: Tensor, x_t: Tensor, x1_hat: Tensor, t: Tensor, mask: Tensor) -> BackboneLoss:
        """The loss of a prediction ``x1_hat`` of the centred data frames ``x1`` from ``x_t`` at
        times ``t`` ``(B,)``, over the residues where ``mask``: the weighted translation and
        rotation-vector errors and, for ``t > auxiliary_min_time``, the atom terms (see the
        module doc). Residues outside ``mask`` (padding, or whole proteins left out of the
        structure loss, e.g. those whose structure was given) do not count."""
        dtype = x1.dtype
        real = mask.to(dtype)
        count = real.sum().clamp_min(1)
        nu = 1 - torch.clamp(t, max=1 - self.normaliser_clip)
        scale = (1 / nu**2)[:, None]
        trans_err = ((x1[..., :3, 3] - x1_hat[..., :3, 3]) ** 2).sum(-1)
        r_t = x_t[..., :3, :3]
        rot_err = ((_body_rotvec(r_t, x1[..., :3, :3]) - _body_rotvec(r_t, x1_hat[..., :3, :3])) ** 2).sum(-1)
        translation = (trans_err * scale * real).sum() / count
        rotation = (rot_err * scale * real).sum() / count
        total = self.translation_weight * translation + self.rotation_weight * rotation
        auxiliary = torch.zeros((), dtype=dtype, device=x1.device)
        if self.auxiliary_weight > 0:
            weight = (t > self.auxiliary_min_time).to(dtype)
            if self.auxiliary_time_scaled:
                weight = weight / nu**2
            auxiliary = self._auxiliary(x1, x1_hat, mask, weight, self.auxiliary_cutoff)
            total = total + self.auxiliary_weight * auxiliary
        # the terms stay on the device: reading them back here would stall every training step
        return BackboneLoss(total, translation.detach(), rotation.detach(), auxiliary.detach())

    @staticmethod
    def _auxiliary(x1: Tensor, x1_hat: Tensor, mask: Tensor, weight: Tensor, cutoff: float) -> Tensor:
        """Atom position and pairwise-distance errors (nm^2) of the ideal N, CA, C atoms, each
        protein's errors times its ``weight`` ``(B,)`` (0: left out), averaged over the atoms
        (pairs) of the proteins with a positive weight; the distance term over the pairs closer
        than ``cutoff`` (nm) in ``x1`` (0: every pair of distinct atoms)."""

        def atoms(frames: Tensor) -> Tensor:  # (B, N * 3, 3)
            return ideal_ncac(frames, length_scale=NM_PER_ANGSTROM).flatten(1, 2)

        a, a_hat = atoms(x1), atoms(x1_hat)
        atom_mask = (mask & (weight > 0)[:, None]).repeat_interleave(3, dim=1).to(x1.dtype)
        per_protein = weight[:, None]
        position = (((a - a_hat) ** 2).sum(-1) * atom_mask * per_protein).sum() / atom_mask.sum().clamp_min(1)
        d = torch.cdist(a, a)
        d_hat = torch.sqrt(((a_hat[:, :, None] - a_hat[:, None]) ** 2).sum(-1) + 1e-10)
        pairs = atom_mask[:, :, None] * atom_mask[:, None, :]
        if cutoff > 0:
            pairs = pairs * (d < cutoff).to(x1.dtype)
        else:  # every pair of distinct atoms
            pairs = pairs * (1 - torch.eye(a.shape[1], dtype=x1.dtype, device=x1.device))
        distance = (((d - d_hat) ** 2) * pairs * per_protein[:, :, None]).sum() / pairs.sum().clamp_min(1)
        return position + distance

    def objective(
        self,
        dataset,
        *,
        batch_size: int,
        min_length: int = 64,
        max_length: int = 128,
        device: torch.device | str = "cpu",
        buckets: tuple[int, ...] | None = None,
        squared_residues: int | None = None,
    ) -> Callable[[nn.Module, int, torch.Generator], Tensor]:
        """A ``loss_fn(model, step, generator)`` for :func:`gm.train.train`: random crops of
        ``dataset`` (``sample_crops(batch, generator, min_length, max_length) -> (atoms, mask)``).
        ``buckets`` (e.g. ``(64, 96, 128)``): one padded length per batch (see
        :meth:`proteins.data.StructureDataset.sample_crops`), so the shapes a compiled model
        sees are few and its graphs (CUDA graphs under ``mode="reduce-overhead"``) are reused;
        ``None`` pads each batch to its longest crop.

        ``squared_residues`` (FrameFlow's batching, e.g. 400_000): each batch holds crops of one
        length ``L``, ``clamp(squared_residues // L^2, 1, batch_size)`` of them
        (:meth:`proteins.data.StructureDataset.length_batch`; with ``buckets``, ``L`` is one of
        them): no padding, and about the same cost per step at every length.

        The crops are drawn, turned into frames and checked on the host, then copied to
        ``device``: the step on the device reads nothing back (``loss(validate=False)``). On the
        CPU the trainer's ``generator`` draws everything; on an accelerator the noise is drawn
        there by its default generator, and the self-conditioning decision on the host by
        ``generator``."""
        check_positive_int(batch_size, "batch_size")
        if squared_residues is not None:
            check_positive_int(squared_residues, "squared_residues")
        on_cpu = torch.device(device).type == "cpu"

        def loss_fn(model: nn.Module, step: int, generator: torch.Generator) -> Tensor:
            if squared_residues is not None:
                atoms, _, mask = dataset.length_batch(
                    squared_residues, generator, min_length, max_length, max_batch=batch_size, lengths=buckets
                )
            else:
                atoms, mask = dataset.sample_crops(
                    batch_size,
                    generator,
                    min_length=min_length,
                    max_length=max_length,
                    **({} if buckets is None else {"buckets": buckets}),
                )
            x1 = self.frames_from_atoms(atoms, mask)  # on the host: its checks need no device sync
            x1, mask = _to_device(x1, device), _to_device(mask, device)
            self_condition = None if on_cpu else _host_coin(self.self_condition_prob, generator)
            return self.loss(
                model, x1, mask, generator=generator if on_cpu else None, self_condition=self_condition, validate=False
            ).total

        return loss_fn

    # ---------------------------------------------------------------------------------------
    # sampling

    def velocity(
        self, x_t: Tensor, x1_hat: Tensor, t: Tensor, mask: Tensor, *, rotation_scheduler: ConvexScheduler | None = None
    ) -> Tensor:
        """The SE(3)^N velocity at ``x_t`` towards the predicted frames ``x1_hat`` (see the module
        doc): rotation rate from ``rotation_scheduler`` (default: the sampling one), translation
        rate ``1/(1-t)``; centred, zero on padding. ``t``: ``(B,)`` in [0, 1)."""
        sched = self.rotation_scheduler if rotation_scheduler is None else rotation_scheduler
        # rates are capped at t = 1 - 1e-3 (1/(1-t) is infinite at t = 1, where the likelihood
        # ODE starts; the prediction then equals x_t up to the model's error)
        capped = t.clamp(max=1 - 1e-3)
        rate_r = sched.rate(capped, validate=False)[:, None, None]
        rate_x = LinearScheduler().rate(capped, validate=False)[:, None, None]
        w = rate_r * _body_rotvec(x_t[..., :3, :3], x1_hat[..., :3, :3])
        v = rate_x * (x1_hat[..., :3, 3] - x_t[..., :3, 3])
        u = self.manifold.raw_to_tangent(x_t, torch.cat([w, v], dim=-1) * mask[..., None].to(x_t.dtype))
        return centre_translations(u, mask)

    def sample(
        self,
        model: FrameModel,
        mask: Tensor,
        *,
        steps: int = 100,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        self_condition: bool = True,
        return_trajectory: bool = False,
        compile: bool | str = False,
    ) -> Tensor:
        """Generate backbones: Euler steps on SE(3)^N from the base, 100 by default, any lengths.

        Args:
            model: the frame predictor (e.g. :class:`proteins.BackboneNetwork` in eval mode).
            mask: bool ``(B, N)``; each protein's length is its number of True entries (real
                residues first, padding after, for chains of different lengths). Checked once
                (one host read-back); the steps read nothing back.
            steps: Euler steps on the uniform grid from 0 to 1.
            self_condition: feed each step the previous step's prediction.
            return_trajectory: also return the frames at every grid time and the final
                prediction, ``(steps + 2, B, N, 4, 4)``.
            compile: ``torch.compile`` one step (the model call, the velocity and the SE(3)^N
                update; :func:`gm.simulate.compiled_advance`, ``fullgraph=True``): ``True`` or a
                mode (``"reduce-overhead"``: CUDA graphs). With self-conditioning two graphs, for
                the first step (no previous prediction) and the others, reused by later calls
                with the same shapes and model; the first call pays the compilation (seconds to
                minutes), so it pays for long or repeated runs. Off by default.

        Returns:
            Frames ``(B, N, 4, 4)`` with translations in **Angstrom**, ready for
            :func:`proteins.frames.backbone_atoms`: as in FrameFlow, the model's prediction of
            the clean frames from the state at t = 1 (with the exponential rotation schedule
            the state's rotations stop short of the last prediction by a factor e^{-10}).
        """
        check_positive_int(steps, "steps")
        x0 = self.base(mask, generator=generator, dtype=dtype)
        process = _FrameSampler(self, mask, self_condition)
        advance: Callable[[Any, Tensor, Tensor], Any]
        if compile is False:

            def advance(state: Any, t: Tensor, h: Tensor) -> Any:
                return process.advance(state, t, h, model)
        else:
            advance = compiled_advance(process, model, compile)
        # the grid on the host (as gm.simulate's): its times are never read back from the device
        grid = torch.linspace(0.0, 1.0, steps + 1, dtype=dtype).to(mask.device)
        starts, widths = grid[:-1].unbind(), grid.diff().unbind()
        state: tuple[Tensor, ...] = (x0,)  # (frames, previous prediction) after the first step
        trajectory = [x0]
        with torch.no_grad(), _checked_model_calls():
            for i in range(steps):
                state = advance(state, starts[i], widths[i])
                if i == steps - 1:
                    state = process.finalize(state, grid[-1])
                if return_trajectory:
                    trajectory.append(state[0])
            final, previous = state[0], (state[1] if len(state) > 1 else None)
            # FrameFlow's last step: the prediction at t = 1 from the final state (the
            # exponential rotation schedule leaves rotations e^{-10} short of the prediction)
            last = model(final, torch.ones(final.shape[0], dtype=dtype, device=mask.device), mask, previous)
            out = torch.stack(trajectory + [last]) if return_trajectory else last
        return _scale_translations(out, 1 / NM_PER_ANGSTROM)

    def sample_lengths(
        self,
        model: FrameModel,
        lengths: Iterable[int],
        *,
        device: torch.device | str = "cpu",
        squared_residues: int = 400_000,
        steps: int = 100,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        self_condition: bool = True,
        compile: bool | str = False,
    ) -> list[Tensor]:
        """Backbones of many lengths: frames ``(L_k, 4, 4)`` in Angstrom for each ``lengths[k]``,
        in the order given.

        Proteins of one length are sampled together, so no arithmetic goes to padding and a
        compiled step (``compile``) is reused by every batch of that length; each batch holds at
        most ``max(1, squared_residues // L^2)`` proteins (the pair features grow as L^2; 400k
        is FrameFlow's training budget per batch). Lengths are drawn in increasing order from
        ``generator`` (on ``device``), so a call is reproducible from its seed. The other
        arguments are :meth:`sample`'s.
        """
        if isinstance(lengths, (str, bytes, Tensor)) or not isinstance(lengths, Iterable):
            raise ValueError(f"lengths must be a non-empty sequence of positive integers, got {lengths!r}")
        given = list(lengths)
        if not given:
            raise ValueError("lengths must be a non-empty sequence of positive integers, got an empty one")
        for value in given:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"lengths must hold positive integers, got {value!r}")
        lengths = [int(value) for value in given]  # numpy integers too
        check_positive_int(squared_residues, "squared_residues")
        out: list[Tensor | None] = [None] * len(lengths)
        batches = []
        for length in sorted(set(lengths)):
            where = [k for k, value in enumerate(lengths) if value == length]
            per_batch = max(1, squared_residues // length**2)
            batches += [(length, where[first : first + per_batch]) for first in range(0, len(where), per_batch)]
        # A compiled step is one graph per batch shape (two with self-conditioning), all of one
        # code object: raise dynamo's recompile limit to the shapes of this call, which would
        # otherwise stop a fullgraph compile with an error after 8.
        limits: contextlib.AbstractContextManager = contextlib.nullcontext()
        if compile is not False:
            shapes = len({(length, len(chunk)) for length, chunk in batches})
            limit = max(torch._dynamo.config.recompile_limit, 2 * shapes + 2)
            limits = torch._dynamo.config.patch(recompile_limit=limit)
        with limits:
            for length, chunk in batches:
                mask = torch.ones(len(chunk), length, dtype=torch.bool, device=device)
                frames = self.sample(
                    model,
                    mask,
                    steps=steps,
                    generator=generator,
                    dtype=dtype,
                    self_condition=self_condition,
                    compile=compile,
                )
                for k, protein in zip(chunk, frames.unbind(0)):
                    out[k] = protein
        return cast(list[Tensor], out)

    def log_likelihood(
        self,
        model: FrameModel,
        x1: Tensor,
        *,
        steps: int = 32,
        method: str = "rk4",
        divergence: str = "exact",
        n_probes: int = 1,
        rotation_scheduler: ConvexScheduler | None = None,
        generator: torch.Generator | None = None,
        log_p0: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Exact log-density of centred frames ``x1`` (nm, ``(B, N, 4, 4)``, all residues real)
        under the model's flow ODE, on :class:`proteins.CentredFrames` (dimension 6N - 3).

        The network couples all residues, so the divergence is the trace of the Jacobian over
        all 6N - 3 directions of one protein (``"exact"``, 6N - 3 JVPs in one batched call, for
        small N) or its Hutchinson estimate (``"hutchinson"`` with ``n_probes``). The field is
        the velocity without self-conditioning (a state-dependent input would make it an ODE
        with memory); rotations use ``rotation_scheduler`` (default: the training path's linear
        schedule, the flow whose marginals the model learnt). Density w.r.t. the product of the
        SO(3) volumes (8 pi^2 each) and the Lebesgue measure of the centred translations in nm.
        The source density added at t = 0 is the flow's base (Haar rotations x centred Gaussian
        translations of std ``translation_std``: ``CentredFrames.base_logprob``, what
        :meth:`sample` starts from), or ``log_p0(x0)`` (``x0``: ``(B, N, 4, 4)`` frames in nm).
        """
        if not isinstance(x1, Tensor) or x1.dim() != 4 or x1.shape[-2:] != (4, 4):
            raise ValueError(
                f"x1 must be frames of shape (B, N, 4, 4), got "
                f"{tuple(x1.shape) if isinstance(x1, Tensor) else type(x1).__name__}"
            )
        sched = LinearScheduler() if rotation_scheduler is None else rotation_scheduler
        batch, n = x1.shape[:2]
        manifold = CentredFrames(n, self.translation_std)

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            lead = x.shape[:-3]  # (probes, B) inside the divergence, (B,) otherwise
            flat = x.reshape(-1, n, 4, 4)
            times = t.expand(lead).reshape(-1) if t.dim() else t.expand(flat.shape[0])
            full = torch.ones(flat.shape[:2], dtype=torch.bool, device=x.device)
            x1_hat = model(flat, times, full, None)
            return self.velocity(flat, x1_hat, times, full, rotation_scheduler=sched).reshape(x.shape)

        log_p = ODESolver(manifold, velocity).log_likelihood(
            x1, steps=steps, method=method, divergence=divergence, n_probes=n_probes, generator=generator, log_p0=log_p0
        )
        return cast(Tensor, log_p)  # one tensor: return_source is off


class _FrameSampler(Process):
    """:meth:`BackboneFlow.sample`'s Euler step on SE(3)^N with self-conditioning: the state is
    ``(frames, previous prediction)``, or ``(frames,)`` before the first step and without
    self-conditioning, so that one step is a pure function of tensors (``torch.compile`` it with
    :func:`gm.simulate.compiled_advance`; under ``"reduce-overhead"`` it clones every output)
    instead of a closure that keeps the prediction. ``model`` is a frame model
    ``model(x_t, t, mask, self_condition)``."""

    def __init__(self, flow: BackboneFlow, mask: Tensor, self_condition: bool) -> None:
        self.flow, self.mask, self.self_condition = flow, mask, bool(self_condition)
        self.euler = ManifoldFlowProcess(flow.manifold, "euler", "exp")

    def step(self, x: tuple[Tensor, ...], t: Tensor, h: Tensor, model_output: Tensor) -> tuple[Tensor, ...]:
        frames = x[0]
        velocity = self.flow.velocity(frames, model_output, t.expand(frames.shape[0]), self.mask)
        frames = self.euler.step(frames, t, h, velocity)
        # without self-conditioning the state stays (frames,): every step is then one graph
        return (frames, model_output) if self.self_condition else (frames,)

    def advance(self, x: tuple[Tensor, ...], t: Tensor, h: Tensor, model: Callable) -> tuple[Tensor, ...]:
        frames = x[0]
        previous = x[1] if len(x) > 1 else None
        return self.step(x, t, h, model(frames, t.expand(frames.shape[0]), self.mask, previous))

    def finalize(self, x: tuple[Tensor, ...], t: Tensor) -> tuple[Tensor, ...]:
        return (self.euler.finalize(x[0], t),) + tuple(x[1:])
