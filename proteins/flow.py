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
  :math:`x_1`, and their pairwise distances below 0.6 nm.
- Self-conditioning: with probability ``self_condition_prob`` a training step first predicts
  without it (no gradient) and feeds that prediction back; at sampling, each step gets the
  previous step's prediction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from gm.checks import check_generator, check_positive_int
from gm.schedulers import ConvexScheduler, ExponentialRateScheduler, LinearScheduler
from gm.simulate import simulate
from manifolds.se3 import SE3
from manifolds.so3 import SO3, so3_log
from proteins.frames import backbone_atoms, frames_from_backbone, ideal_ncac
from proteins.manifold import CentredFrames
from rfm.path import GeodesicPath
from rfm.solver import ManifoldFlowProcess, ODESolver

__all__ = ["NM_PER_ANGSTROM", "BackboneFlow", "BackboneLoss", "centre_translations", "check_mask"]

#: translations inside the model are in nanometres
NM_PER_ANGSTROM = 0.1

#: ``model(x_t, t, mask, self_condition) -> predicted clean frames``
FrameModel = Callable[[Tensor, Tensor, Tensor, "Tensor | None"], Tensor]


def check_mask(mask: Tensor, batch: tuple[int, ...], name: str = "mask") -> Tensor:
    """A bool residue mask of shape ``batch`` with at least one real residue per protein."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor (True: real residue), got "
                         f"{mask.dtype if isinstance(mask, Tensor) else type(mask).__name__}")
    if tuple(mask.shape) != tuple(batch):
        raise ValueError(f"{name} must have shape (B, N) = {tuple(batch)}, got {tuple(mask.shape)}")
    if mask.numel() and not bool(mask.any(-1).all()):
        raise ValueError(f"{name} has a protein with no real residue (a row of all False)")
    return mask


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
    """The parts of one loss evaluation (detached floats except ``total``)."""

    total: Tensor
    translation: float
    rotation: float
    auxiliary: float


@dataclass
class BackboneFlow:
    """SE(3)^N flow matching for backbones: base, path, loss and sampler (see the module doc).

    Args:
        translation_std: std (nm) of the base translations per coordinate.
        translation_weight, rotation_weight: loss weights :math:`w_x, w_r`.
        auxiliary_weight: weight :math:`w_a` of the atom and distance terms (0: off).
        auxiliary_min_time: :math:`t_a`, the auxiliary term applies for larger times only.
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
        for name in ("translation_weight", "rotation_weight", "auxiliary_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("auxiliary_min_time", "self_condition_prob", "min_time"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if not (isinstance(self.normaliser_clip, (int, float)) and 0 < self.normaliser_clip <= 1):
            raise ValueError(f"normaliser_clip must be in (0, 1], got {self.normaliser_clip!r}")
        if not isinstance(self.rotation_scheduler, ConvexScheduler):
            raise ValueError(f"rotation_scheduler must be a gm.ConvexScheduler, got {type(self.rotation_scheduler).__name__}")
        self.manifold = SE3()
        self.path = GeodesicPath(self.manifold, LinearScheduler(), validate=False)

    # ---------------------------------------------------------------------------------------
    # state

    @staticmethod
    def frames_from_atoms(atoms: Tensor, mask: Tensor) -> Tensor:
        """Centred frames (nm) ``(B, N, 4, 4)`` of backbone atoms ``(B, N, A >= 3, 3)`` in Angstrom."""
        check_mask(mask, tuple(atoms.shape[:-2]) if isinstance(atoms, Tensor) else (), "mask")
        return centre_translations(_scale_translations(frames_from_backbone(atoms, mask), NM_PER_ANGSTROM), mask)

    @staticmethod
    def atoms_from_frames(frames: Tensor, mask: Tensor) -> Tensor:
        """Ideal backbone atoms N, CA, C, O ``(B, N, 4, 3)`` in Angstrom from frames in nm."""
        # validate=False: called in the training loss on predicted frames (rigid by construction)
        return backbone_atoms(_scale_translations(frames, 1 / NM_PER_ANGSTROM), mask, validate=False)

    def base(self, mask: Tensor, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
             ) -> Tensor:
        """Draws ``(B, N, 4, 4)`` from the base: Haar rotations, centred Gaussian translations (nm);
        padding residues are identity frames."""
        if not isinstance(mask, Tensor) or mask.dim() != 2:
            raise ValueError(f"mask must be a bool tensor of shape (B, N), got "
                             f"{tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__}")
        check_mask(mask, tuple(mask.shape))
        check_generator(generator, device=mask.device)
        rot = SO3().random_base(*mask.shape, dtype=dtype, device=mask.device, generator=generator)
        trans = self.translation_std * torch.randn(*mask.shape, 3, dtype=dtype, device=mask.device,
                                                   generator=generator)
        eye = torch.eye(3, dtype=dtype, device=mask.device)
        frames = SE3.from_rt(torch.where(mask[..., None, None], rot, eye), trans)
        return centre_translations(frames, mask)

    # ---------------------------------------------------------------------------------------
    # training

    def training_times(self, batch: int, *, generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        """``batch`` times in ``[min_time, 1]`` with density proportional to :math:`t^{a-1}`."""
        u = torch.rand(batch, dtype=dtype, device=device, generator=generator)
        u = u if self.time_power == 1.0 else u ** (1.0 / self.time_power)
        return self.min_time + (1 - self.min_time) * u

    def loss(self, model: FrameModel, x1: Tensor, mask: Tensor, *, generator: torch.Generator | None = None,
             t: Tensor | None = None, self_condition: bool | None = None) -> BackboneLoss:
        """The loss of ``model`` on data frames ``x1`` (nm, ``(B, N, 4, 4)``, e.g. from
        :meth:`frames_from_atoms`; centred here if they are not) with residue ``mask`` ``(B, N)``.

        Args:
            t: times ``(B,)`` (default: drawn by :meth:`training_times`).
            self_condition: force (True) or skip (False) the self-conditioning pass; ``None``
                draws it with probability ``self_condition_prob``.
        """
        if not isinstance(x1, Tensor) or x1.dim() != 4 or x1.shape[-2:] != (4, 4):
            raise ValueError(f"x1 must be frames of shape (B, N, 4, 4), got "
                             f"{tuple(x1.shape) if isinstance(x1, Tensor) else type(x1).__name__}")
        check_mask(mask, tuple(x1.shape[:2]))
        x1 = centre_translations(x1, mask)  # a no-op for frames_from_atoms' output
        batch, dtype = x1.shape[0], x1.dtype
        if t is None:
            t = self.training_times(batch, generator=generator, dtype=dtype, device=x1.device)
        x0 = self.base(mask, generator=generator, dtype=dtype)
        x_t = self.path.sample(x0, x1, t).x_t
        if self_condition is None:
            self_condition = bool(torch.rand((), generator=generator, device=x1.device) < self.self_condition_prob)
        previous = None
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
            auxiliary = self._auxiliary(x1, x1_hat, mask, t > self.auxiliary_min_time)
            total = total + self.auxiliary_weight * auxiliary
        return BackboneLoss(total, float(translation.detach()), float(rotation.detach()), float(auxiliary.detach()))

    @staticmethod
    def _auxiliary(x1: Tensor, x1_hat: Tensor, mask: Tensor, active: Tensor) -> Tensor:
        """Atom position and local pairwise-distance errors (nm^2) of the ideal N, CA, C atoms,
        over the proteins where ``active`` ``(B,)``."""
        def atoms(frames: Tensor) -> Tensor:  # (B, N * 3, 3)
            return ideal_ncac(frames, length_scale=NM_PER_ANGSTROM).flatten(1, 2)

        a, a_hat = atoms(x1), atoms(x1_hat)
        atom_mask = (mask & active[:, None]).repeat_interleave(3, dim=1).to(x1.dtype)
        position = (((a - a_hat) ** 2).sum(-1) * atom_mask).sum() / atom_mask.sum().clamp_min(1)
        d = torch.cdist(a, a)
        d_hat = torch.sqrt(((a_hat[:, :, None] - a_hat[:, None]) ** 2).sum(-1) + 1e-10)
        pairs = atom_mask[:, :, None] * atom_mask[:, None, :] * (d < 0.6).to(x1.dtype)
        distance = (((d - d_hat) ** 2) * pairs).sum() / pairs.sum().clamp_min(1)
        return position + distance

    def objective(self, dataset, *, batch_size: int, min_length: int = 64, max_length: int = 128,
                  device: torch.device | str = "cpu") -> Callable[[nn.Module, int, torch.Generator], Tensor]:
        """A ``loss_fn(model, step, generator)`` for :func:`gm.training.train`: random crops of
        ``dataset`` (``sample_crops(batch, generator, min_length, max_length) -> (atoms, mask)``)."""
        check_positive_int(batch_size, "batch_size")

        def loss_fn(model: nn.Module, step: int, generator: torch.Generator) -> Tensor:
            atoms, mask = dataset.sample_crops(batch_size, generator, min_length=min_length, max_length=max_length)
            atoms, mask = atoms.to(device), mask.to(device)
            x1 = self.frames_from_atoms(atoms, mask)
            return self.loss(model, x1, mask, generator=generator if device == "cpu" else None).total

        return loss_fn

    # ---------------------------------------------------------------------------------------
    # sampling

    def velocity(self, x_t: Tensor, x1_hat: Tensor, t: Tensor, mask: Tensor, *,
                 rotation_scheduler: ConvexScheduler | None = None) -> Tensor:
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

    def sample(self, model: FrameModel, mask: Tensor, *, steps: int = 100, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32, self_condition: bool = True, return_trajectory: bool = False
               ) -> Tensor:
        """Generate backbones: Euler steps on SE(3)^N from the base, 100 by default, any lengths.

        Args:
            model: the frame predictor (e.g. :class:`proteins.BackboneNetwork` in eval mode).
            mask: bool ``(B, N)``; each protein's length is its number of True entries (real
                residues first, padding after, for chains of different lengths).
            steps: Euler steps on the uniform grid from 0 to 1.
            self_condition: feed each step the previous step's prediction.
            return_trajectory: also return the frames at every grid time and the final
                prediction, ``(steps + 2, B, N, 4, 4)``.

        Returns:
            Frames ``(B, N, 4, 4)`` with translations in **Angstrom**, ready for
            :func:`proteins.frames.backbone_atoms`: as in FrameFlow, the model's prediction of
            the clean frames from the state at t = 1 (with the exponential rotation schedule
            the state's rotations stop short of the last prediction by a factor e^{-10}).
        """
        check_positive_int(steps, "steps")
        x0 = self.base(mask, generator=generator, dtype=dtype)
        previous: list[Tensor | None] = [None]

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            times = t.expand(x.shape[0])
            x1_hat = model(x, times, mask, previous[0] if self_condition else None)
            previous[0] = x1_hat
            return self.velocity(x, x1_hat, times, mask)

        grid = torch.linspace(0.0, 1.0, steps + 1, dtype=dtype, device=mask.device)
        with torch.no_grad():
            out = simulate(ManifoldFlowProcess(self.manifold, "euler", "exp"), velocity, x0, grid,
                           return_intermediates=return_trajectory)
            final = out[-1] if return_trajectory else out
            # FrameFlow's last step: the prediction at t = 1 from the final state (the
            # exponential rotation schedule leaves rotations e^{-10} short of the prediction)
            last = model(final, torch.ones(final.shape[0], dtype=dtype, device=mask.device), mask,
                         previous[0] if self_condition else None)
            out = torch.cat([out, last[None]]) if return_trajectory else last
        return _scale_translations(out, 1 / NM_PER_ANGSTROM)

    def log_likelihood(self, model: FrameModel, x1: Tensor, *, steps: int = 32, method: str = "rk4",
                       divergence: str = "exact", n_probes: int = 1, rotation_scheduler: ConvexScheduler | None = None,
                       generator: torch.Generator | None = None,
                       log_p0: Callable[[Tensor], Tensor] | None = None) -> Tensor:
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
            raise ValueError(f"x1 must be frames of shape (B, N, 4, 4), got "
                             f"{tuple(x1.shape) if isinstance(x1, Tensor) else type(x1).__name__}")
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

        return ODESolver(manifold, velocity).log_likelihood(x1, steps=steps, method=method, divergence=divergence,
                                                            n_probes=n_probes, generator=generator, log_p0=log_p0)
