r"""Structure and sequence together: co-design, inverse folding and folding with one model
(Multiflow-class; Campbell et al. 2024, "Generative flows on discrete state-spaces").

State: backbone frames :math:`T` ``(B, N, 4, 4)`` (the SE(3)^N flow of
:class:`proteins.BackboneFlow`) and residue types :math:`a` ``(B, N)`` (the mask-source
:class:`dfm.MixturePath` over the 20 amino acids, mask id 20). The two components have their
own times :math:`t_{str}` and :math:`t_{seq}`; the conditional path factorises,

.. math:: p_t(T, a \mid T_1, a_1) = p_{t_{str}}(T \mid T_1)\; p_{t_{seq}}(a \mid a_1),

and one network (:class:`proteins.CodesignNetwork`) predicts both the clean frames
:math:`\hat T_1` and the posterior :math:`p_{1|t}(a_1^i \mid T, a)` of each masked residue from
the joint noisy state.

**Training** draws the two times independently for a share of the batch, and sets one of them
to 1 (its component given at the data value) for the rest, so one model learns

- co-generation (both from noise),
- inverse folding (:math:`t_{str} = 1`: the structure given, the sequence generated),
- folding (:math:`t_{seq} = 1`: the sequence given, the structure generated).

The loss is the backbone flow's frame loss (over proteins whose structure is not given) plus
``sequence_weight`` times the mean cross-entropy of the masked residues.

**Sampling** runs :func:`gm.simulate` with a :class:`gm.JointProcess` of the frames' Euler
step on SE(3)^N and the mask CTMC (:class:`dfm.MixtureJumpProcess`, with temperature and
purity/confidence unmasking), one network call per step for both; a given component is held
fixed at its data value (``times=1``) and never changes.

As in :mod:`proteins.flow`, the checks read back once per call (none with ``validate=False``),
the self-conditioning decision is drawn on the host, the sampling steps read nothing back, and
the loss (``self_condition`` given, ``generator=None``) and one joint step compile with
``fullgraph=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from dfm.loss import ELBOEstimate, mask_elbo, masked_cross_entropy
from dfm.path import MixturePath
from dfm.solver import MixtureJumpProcess
from gm.checks import Checks, check_generator, check_positive_int, time_out_of_range, value_checks_on
from gm.process import JointProcess
from gm.simulate import simulate
from proteins.data import AMINO_ACIDS, UNKNOWN_RESIDUE
from proteins.flow import (
    NM_PER_ANGSTROM,
    BackboneFlow,
    _checked_model_calls,
    _host_coin,
    _scale_translations,
    _to_device,
    centre_translations,
)
from proteins.frames import frames_from_backbone
from proteins.inputs import check_mask
from proteins.network import CodesignPrediction
from rfm.solver import ManifoldFlowProcess

__all__ = ["CodesignFlow", "CodesignLoss", "CodesignSample", "RESIDUE_TYPES", "MASK_RESIDUE", "FINAL_STRUCTURE_TIME"]

#: Residue types generated (the 20 standard amino acids of :data:`proteins.data.AMINO_ACIDS`).
RESIDUE_TYPES = len(AMINO_ACIDS)
#: Id of the mask token (the source of the sequence path).
MASK_RESIDUE = RESIDUE_TYPES

#: structure time of the final frame prediction (t = 1 is reserved for a given structure)
FINAL_STRUCTURE_TIME = 1 - 1e-3

#: ``model(x_t, t_structure, residues_t, t_sequence, mask, self_condition) -> CodesignPrediction``
CodesignModel = Callable[..., CodesignPrediction]


@dataclass
class CodesignLoss:
    """The parts of one co-design loss evaluation: ``total`` (with its graph) and the detached
    0-dim tensors of its terms, left on the device so that a training step reads nothing back
    (read them when logging, e.g. ``float(loss.sequence)``)."""

    total: Tensor
    translation: Tensor
    rotation: Tensor
    auxiliary: Tensor
    sequence: Tensor


@dataclass
class CodesignSample:
    """Generated proteins.

    Attributes:
        frames: ``(B, N, 4, 4)`` with translations in Angstrom (padding: identity), ready for
            :func:`proteins.frames.backbone_atoms`.
        residues: int64 ``(B, N)`` residue types, indices into :data:`proteins.data.AMINO_ACIDS`
            (:data:`proteins.data.UNKNOWN_RESIDUE` at padding).
    """

    frames: Tensor
    residues: Tensor


def _check_probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


@dataclass
class CodesignFlow:
    """Joint flow of backbone frames and residue types (see the module doc).

    Args:
        backbone: the SE(3)^N backbone flow (base, path, frame loss, velocity).
        sequence_weight: weight of the sequence cross-entropy beside the frame loss.
        inverse_folding_prob: share of training proteins with the structure given (``t_str = 1``).
        folding_prob: share with the sequence given (``t_seq = 1``); the remaining
            ``1 - inverse_folding_prob - folding_prob`` draw both times independently.
    """

    backbone: BackboneFlow = field(default_factory=BackboneFlow)
    sequence_weight: float = 1.0
    inverse_folding_prob: float = 0.25
    folding_prob: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, BackboneFlow):
            raise ValueError(f"backbone must be a proteins.BackboneFlow, got {type(self.backbone).__name__}")
        if (
            isinstance(self.sequence_weight, bool)
            or not isinstance(self.sequence_weight, (int, float))
            or not (math.isfinite(self.sequence_weight) and self.sequence_weight >= 0)
        ):
            raise ValueError(f"sequence_weight must be a finite number >= 0, got {self.sequence_weight!r}")
        given = _check_probability("inverse_folding_prob", self.inverse_folding_prob) + _check_probability(
            "folding_prob", self.folding_prob
        )
        if given > 1:
            raise ValueError(f"inverse_folding_prob + folding_prob must be at most 1, got {given}")
        self.sequence_path = MixturePath(RESIDUE_TYPES, "mask", validate=False)

    # ---------------------------------------------------------------------------------------
    # state

    def _check_residues(
        self,
        residues: Tensor,
        mask: Tensor,
        name: str,
        *,
        allow_mask: bool,
        validate: bool = True,
        checks: Checks | None = None,
    ) -> None:
        """Type and shape now; the range of the real residues' types (with ``validate``, see
        :func:`gm.checks.value_checks_on`) read back now, or added to ``checks`` (read back later
        with the caller's other checks)."""
        if not isinstance(residues, Tensor) or residues.is_floating_point() or residues.dtype == torch.bool:
            raise ValueError(
                f"{name} must be an integer tensor of residue types, got "
                f"{residues.dtype if isinstance(residues, Tensor) else type(residues).__name__}"
            )
        if residues.shape != mask.shape:
            raise ValueError(
                f"{name} must have the mask's shape (B, N) = {tuple(mask.shape)}, got {tuple(residues.shape)}"
            )
        if not value_checks_on(validate):
            return
        high = MASK_RESIDUE if allow_mask else RESIDUE_TYPES - 1
        bad = mask & ((residues < UNKNOWN_RESIDUE) | (residues > high))
        own = Checks() if checks is None else checks
        own.add(
            bad.any(),
            lambda: (
                f"{name} must hold residue types in [{UNKNOWN_RESIDUE}, {high}] at real residues "
                f"({UNKNOWN_RESIDUE}: unknown), got {int(residues[bad][0])}"
            ),
        )
        if checks is None:
            own.run()

    def training_times(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(t_structure, t_sequence)``, each ``(batch,)``: the structure's time from
        :meth:`BackboneFlow.training_times`, the sequence's uniform on [0, 1]; then a share
        ``inverse_folding_prob`` of the proteins gets ``t_structure = 1`` and a share
        ``folding_prob`` ``t_sequence = 1`` (disjoint)."""
        batch = check_positive_int(batch, "batch")
        t_structure = self.backbone.training_times(batch, generator=generator, dtype=dtype, device=device)
        t_sequence = torch.rand(batch, generator=generator, dtype=dtype, device=device)
        mode = torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
        structure_given = mode < self.inverse_folding_prob
        sequence_given = ~structure_given & (mode < self.inverse_folding_prob + self.folding_prob)
        one = torch.ones((), dtype=dtype, device=device)
        return torch.where(structure_given, one, t_structure), torch.where(sequence_given, one, t_sequence)

    def noisy_residues(
        self, residues: Tensor, t_sequence: Tensor, mask: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw residue types at ``t_sequence`` ``(B,)`` from data ``residues`` ``(B, N)``: each
        real residue kept with probability :math:`\\kappa_t = t`, else the mask id. Unknown
        residues (:data:`proteins.data.UNKNOWN_RESIDUE`) are always masked (never revealed
        as data); padding holds the mask id."""
        known = mask & (residues >= 0)
        x1 = torch.where(known, residues, torch.zeros_like(residues))
        x_t = self.sequence_path.sample(None, x1, t_sequence, generator=generator).x_t
        return torch.where(known, x_t, torch.full_like(x_t, MASK_RESIDUE))

    # ---------------------------------------------------------------------------------------
    # training

    def loss(
        self,
        model: CodesignModel,
        x1: Tensor,
        residues: Tensor,
        mask: Tensor,
        *,
        generator: torch.Generator | None = None,
        t: tuple[Tensor, Tensor] | None = None,
        self_condition: bool | None = None,
        validate: bool = True,
    ) -> CodesignLoss:
        """The joint loss of ``model`` on data frames ``x1`` (nm, ``(B, N, 4, 4)``, e.g. from
        :meth:`BackboneFlow.frames_from_atoms`) with residue types ``residues`` ``(B, N)`` and
        residue ``mask`` ``(B, N)``.

        Args:
            t: ``(t_structure, t_sequence)`` (default: :meth:`training_times`); a time of 1
                gives that component at its data value and drops it from the loss.
            self_condition: force (True) or skip (False) the self-conditioning pass; ``None``
                draws it with the backbone flow's ``self_condition_prob`` on the host (as
                :meth:`BackboneFlow.loss`). Pass it to ``torch.compile`` the loss.
            validate: check the mask's rows, the residue types and the range of given times
                (one host read-back); ``False`` for data checked once (the training objective
                checks its crops on the host). Types and shapes are always checked.

        Raises:
            ValueError: for frames, residues, mask or times of the wrong shape, type or range.
        """
        if not isinstance(x1, Tensor) or x1.dim() != 4 or x1.shape[-2:] != (4, 4):
            raise ValueError(
                f"x1 must be frames of shape (B, N, 4, 4), got "
                f"{tuple(x1.shape) if isinstance(x1, Tensor) else type(x1).__name__}"
            )
        checks = Checks() if value_checks_on(validate) else None
        check_mask(mask, tuple(x1.shape[:2]), nonempty=True, validate=validate, checks=checks)
        self._check_residues(residues, mask, "residues", allow_mask=False, validate=validate, checks=checks)
        batch, dtype = x1.shape[0], x1.dtype
        if t is not None:
            t = self._check_times(t, batch, checks)
        if checks is not None:
            checks.run()  # mask, residues and times: one host read-back
        x1 = centre_translations(x1, mask)
        if t is None:
            t = self.training_times(batch, generator=generator, dtype=dtype, device=x1.device)
        t_structure, t_sequence = t
        structure_given = t_structure >= 1

        x0 = self.backbone.base(mask, generator=generator, dtype=dtype, validate=False)  # mask checked above
        x_t = self.backbone.path.sample(x0, x1, t_structure.clamp(max=1)).x_t
        x_t = torch.where(structure_given[:, None, None, None], x1, x_t)  # given: exactly the data
        residues_t = self.noisy_residues(residues, t_sequence, mask, generator=generator)

        if self_condition is None:
            self_condition = _host_coin(self.backbone.self_condition_prob, generator)
        previous = None
        with _checked_model_calls():  # x_t and residues_t are built here from checked data
            if self_condition:
                with torch.no_grad():
                    first = model(x_t, t_structure, residues_t, t_sequence, mask, None)
                    previous = CodesignPrediction(first.frames.detach(), first.logits.detach())
            prediction = model(x_t, t_structure, residues_t, t_sequence, mask, previous)

        frames = self.backbone.prediction_loss(
            x1, x_t, prediction.frames, t_structure, mask & ~structure_given[:, None]
        )
        known = mask & (residues >= 0)
        sequence = masked_cross_entropy(
            prediction.logits,
            torch.where(known, residues, 0),
            residues_t,
            self.sequence_path,
            padding_mask=~known,
            validate=False,
        )
        total = frames.total + self.sequence_weight * sequence
        # the terms stay on the device: reading them back here would stall every training step
        return CodesignLoss(total, frames.translation, frames.rotation, frames.auxiliary, sequence.detach())

    @staticmethod
    def _check_times(t: object, batch: int, checks: Checks | None = None) -> tuple[Tensor, Tensor]:
        """Types and shapes now; the ranges into ``checks`` (when given)."""
        if not isinstance(t, (tuple, list)) or len(t) != 2:
            raise ValueError(f"t must be a pair (t_structure, t_sequence), got {type(t).__name__}")
        for name, value in zip(("t_structure", "t_sequence"), t):
            if not isinstance(value, Tensor) or not value.is_floating_point() or tuple(value.shape) != (batch,):
                raise ValueError(
                    f"{name} must be a floating-point tensor of shape ({batch},), got "
                    f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}"
                )
            if checks is not None:

                def explain(name: str = name, value: Tensor = value) -> str:
                    return (
                        f"{name} must be times in [0, 1], got values in "
                        f"[{float(value.min()):.4g}, {float(value.max()):.4g}]"
                    )

                checks.add(time_out_of_range(value), explain)
        return t[0], t[1]

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
        """A ``loss_fn(model, step, generator)`` for the shared trainer: random crops of
        ``dataset`` with their sequences (``sample_sequence_crops(batch, generator, min_length,
        max_length) -> (atoms, residues, mask)``, e.g. :class:`proteins.data.StructureDataset`).
        As :meth:`BackboneFlow.objective`: crops drawn, turned into frames and checked on the
        host, the device step reads nothing back; ``buckets``: one padded length per batch;
        ``squared_residues``: batches of one length sized by that budget, at most ``batch_size``
        (``dataset.length_batch``)."""
        check_positive_int(batch_size, "batch_size")
        if squared_residues is not None:
            check_positive_int(squared_residues, "squared_residues")
        on_cpu = torch.device(device).type == "cpu"

        def loss_fn(model: nn.Module, step: int, generator: torch.Generator) -> Tensor:
            if squared_residues is not None:
                atoms, residues, mask = dataset.length_batch(
                    squared_residues, generator, min_length, max_length, max_batch=batch_size, lengths=buckets
                )
            else:
                atoms, residues, mask = dataset.sample_sequence_crops(
                    batch_size,
                    generator,
                    min_length=min_length,
                    max_length=max_length,
                    **({} if buckets is None else {"buckets": buckets}),
                )
            # on the host: these checks need no device sync
            x1 = self.backbone.frames_from_atoms(atoms, mask)
            self._check_residues(residues, mask, "residues", allow_mask=False)
            x1, residues, mask = _to_device(x1, device), _to_device(residues, device), _to_device(mask, device)
            self_condition = None if on_cpu else _host_coin(self.backbone.self_condition_prob, generator)
            return self.loss(
                model,
                x1,
                residues,
                mask,
                generator=generator if on_cpu else None,
                self_condition=self_condition,
                validate=False,
            ).total

        return loss_fn

    # ---------------------------------------------------------------------------------------
    # sampling

    def sample(
        self,
        model: CodesignModel,
        mask: Tensor,
        *,
        structure: Tensor | None = None,
        sequence: Tensor | None = None,
        steps: int = 100,
        temperature: float = 1.0,
        unmasking: str = "random",
        corrector: float = 0.0,
        self_condition: bool = True,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        dtype_categorical: torch.dtype = torch.float32,
    ) -> CodesignSample:
        """Generate proteins: co-generation, inverse folding (``structure`` given) or folding
        (``sequence`` given), with one model call per Euler step for both components.

        Args:
            model: the co-design network (e.g. :class:`proteins.CodesignNetwork` in eval mode).
            mask: bool ``(B, N)``; real residues first, padding after.
            structure: backbone atoms ``(B, N, >= 3, 3)`` N, CA, C[, O] in Angstrom to hold
                fixed (inverse folding).
            sequence: residue types ``(B, N)`` to hold fixed (folding); unknown residues
                (:data:`proteins.data.UNKNOWN_RESIDUE`) stay masked for the model.
            steps: Euler steps on the uniform grid from 0 to 1.
            temperature: divides the sequence posterior's logits before every draw (1: exact).
            unmasking: ``"random"`` (the CTMC) or ``"confidence"`` (purity sampling).
            corrector: re-masking corrector strength of the sequence CTMC (0: none).
            self_condition: feed each step the previous step's prediction.
            generator: RNG of the base and the draws (on the mask's device).
            dtype: of the frames; dtype_categorical: of the categorical draws.

        Returns:
            :class:`CodesignSample`: frames in Angstrom (for a generated structure, centred, the
            model's prediction of the clean frames from the final state as in FrameFlow; for a
            given one, its frames in the input's coordinates) and residue types (a given
            sequence unchanged).

        Raises:
            ValueError: for both components given, a bad mask, structure, sequence or option.
        """
        steps = check_positive_int(steps, "steps")
        if not isinstance(mask, Tensor) or mask.dim() != 2:
            raise ValueError(
                f"mask must be a bool tensor of shape (B, N), got "
                f"{tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__}"
            )
        check_mask(mask, tuple(mask.shape), nonempty=True)
        check_generator(generator, device=mask.device)
        if structure is not None and sequence is not None:
            raise ValueError("structure and sequence are both given: nothing is left to generate")
        batch = mask.shape[0]
        if structure is not None:
            if (
                not isinstance(structure, Tensor)
                or structure.dim() != 4
                or tuple(structure.shape[:2]) != tuple(mask.shape)
                or structure.shape[-1] != 3
                or structure.shape[2] < 3
            ):
                raise ValueError(
                    f"structure must be backbone atoms (B, N, >= 3, 3) with (B, N) = {tuple(mask.shape)}, "
                    f"got {tuple(structure.shape) if isinstance(structure, Tensor) else type(structure).__name__}"
                )
            frames0 = self.backbone.frames_from_atoms(structure.to(dtype), mask)
        else:
            frames0 = self.backbone.base(mask, generator=generator, dtype=dtype, validate=False)  # mask checked above
        if sequence is not None:
            self._check_residues(sequence, mask, "sequence", allow_mask=False)
            residues0 = torch.where(mask & (sequence >= 0), sequence.long(), MASK_RESIDUE)
        else:
            residues0 = torch.full(mask.shape, MASK_RESIDUE, dtype=torch.long, device=mask.device)
        residues0 = torch.where(mask, residues0, 0)  # padding: any valid id, never changed

        process, joint_model = self._sampling_process(
            model,
            mask,
            structure_given=structure is not None,
            sequence_given=sequence is not None,
            self_condition=self_condition,
            dtype=dtype,
            dtype_categorical=dtype_categorical,
            generator=generator,
            temperature=temperature,
            unmasking=unmasking,
            corrector=corrector,
        )
        # the grid on the host: gm.simulate checks it there and copies it to the device, never back
        grid = torch.linspace(0.0, 1.0, steps + 1, dtype=dtype)
        # the model's own value checks are off in the loop: its inputs were checked above or
        # built by the sampler
        with torch.no_grad(), _checked_model_calls():
            frames, residues = simulate(process, joint_model, (frames0, residues0), grid)
            if structure is None:
                # FrameFlow's last step: the prediction of the clean frames from the final state,
                # with the whole sequence now revealed (t_seq = 1). The structure's time is set
                # just below 1: t_str = 1 exactly marks a *given* structure in training, where
                # the frame head is not trained.
                t_last = torch.full((batch,), FINAL_STRUCTURE_TIME, dtype=dtype, device=mask.device)
                one = torch.ones(batch, dtype=dtype, device=mask.device)
                previous = joint_model.previous if self_condition else None
                frames = model(frames, t_last, residues, one, mask, previous).frames
        residues = torch.where(mask, residues, UNKNOWN_RESIDUE)
        if sequence is not None:  # unknown residues of a given sequence stay unknown
            residues = torch.where(mask & (sequence < 0), UNKNOWN_RESIDUE, residues)
        if structure is not None:  # the given structure's frames where it was (not centred; checked above)
            return CodesignSample(frames_from_backbone(structure.to(dtype), mask, validate=False), residues)
        return CodesignSample(_scale_translations(frames, 1 / NM_PER_ANGSTROM), residues)

    def _sampling_process(
        self,
        model: CodesignModel,
        mask: Tensor,
        *,
        structure_given: bool,
        sequence_given: bool,
        self_condition: bool,
        dtype: torch.dtype,
        dtype_categorical: torch.dtype,
        generator: torch.Generator | None,
        temperature: float,
        unmasking: str,
        corrector: float,
    ) -> tuple[JointProcess, _JointModel]:
        """:meth:`sample`'s process (the frames' Euler step on SE(3)^N and the mask CTMC, a given
        component held fixed) and its model call. One step, ``process.advance(state, t, h,
        joint_model)``, reads nothing back: the CTMC tallies bad posteriors on the device and
        reads them back once, at the end (``validate="end"``)."""
        jump = MixtureJumpProcess(
            self.sequence_path,
            corrector,
            dtype_categorical,
            padding_mask=~mask,
            generator=generator,
            temperature=temperature,
            unmasking=unmasking,
            validate="end",
        )
        jump.begin(mask.device)
        process = JointProcess(
            [ManifoldFlowProcess(self.backbone.manifold, "euler", "exp"), jump],
            times=(1.0 if structure_given else None, 1.0 if sequence_given else None),
        )
        return process, _JointModel(self.backbone, model, mask, dtype, self_condition, structure_given)

    # ---------------------------------------------------------------------------------------
    # likelihood

    def sequence_elbo(
        self,
        model: CodesignModel,
        structure: Tensor,
        residues: Tensor,
        mask: Tensor,
        *,
        n_draws: int = 1,
        generator: torch.Generator | None = None,
    ) -> ELBOEstimate:
        """The discrete ELBO of ``residues`` given the backbone ``structure`` (inverse folding):
        an upper bound on :math:`-\\log p(a \\mid T)` per residue (``exp(nats_per_token)`` is the
        per-residue perplexity), by :func:`dfm.mask_elbo` with the structure held at t = 1 and
        no self-conditioning. Unknown residues and padding do not count.

        Args:
            structure: backbone atoms ``(B, N, >= 3, 3)`` in Angstrom.
            residues: residue types ``(B, N)``; mask: bool ``(B, N)``.
            n_draws: time draws per protein.
        """
        check_mask(mask, tuple(residues.shape) if isinstance(residues, Tensor) else (), nonempty=True)
        self._check_residues(residues, mask, "residues", allow_mask=False)
        frames = self.backbone.frames_from_atoms(structure, mask)
        one = torch.ones(mask.shape[0], dtype=frames.dtype, device=mask.device)
        known = mask & (residues >= 0)

        def posterior(x_t: Tensor, t: Tensor) -> Tensor:  # unknown residues stay masked, as in training
            x_t = torch.where(known, x_t, MASK_RESIDUE)
            return model(frames, one, x_t, t.to(frames.dtype), mask, None).logits

        return mask_elbo(
            posterior,
            self.sequence_path,
            torch.where(known, residues, 0).long(),
            n_draws=n_draws,
            padding_mask=~known,
            generator=generator,
        )


class _JointModel:
    """The co-design sampler's one model call per step: ``(frames, residues), (t_str, t_seq) ->
    (frame velocity or None for a given structure, residue logits)``. It keeps the prediction for
    the next step's self-conditioning in ``previous`` (an attribute, which ``torch.compile``
    replays as a side effect)."""

    def __init__(
        self,
        backbone: BackboneFlow,
        model: CodesignModel,
        mask: Tensor,
        dtype: torch.dtype,
        self_condition: bool,
        structure_given: bool,
    ) -> None:
        self.backbone, self.model, self.mask, self.dtype = backbone, model, mask, dtype
        self.self_condition, self.structure_given = bool(self_condition), bool(structure_given)
        self.previous: CodesignPrediction | None = None

    def __call__(self, state: tuple[Tensor, Tensor], times: tuple[Tensor, Tensor]) -> tuple[Tensor | None, Tensor]:
        frames, residues = state
        t_structure, t_sequence = (time.to(self.dtype).expand(frames.shape[0]) for time in times)
        prediction = self.model(
            frames, t_structure, residues, t_sequence, self.mask, self.previous if self.self_condition else None
        )
        self.previous = prediction
        velocity = (
            None if self.structure_given else self.backbone.velocity(frames, prediction.frames, t_structure, self.mask)
        )
        return velocity, prediction.logits
