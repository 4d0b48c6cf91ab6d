r"""Fit a probability density on the sphere :math:`S^2` to points (events given by latitude and
longitude: :mod:`rfm.geospatial`) by Riemannian flow matching, and measure it by its exact
likelihood.

The model is the push-forward :math:`p_1 = (\phi_1)_\# p_0` of the uniform density
:math:`p_0 = 1/(4\pi)` by the flow :math:`\phi_t` of a velocity :math:`v_\theta(x, t) \in T_xS^2`:
a :func:`rfm.models.velocity_mlp` on random Fourier features of the point (Tancik et al. 2020),
which resolve densities concentrated on a few hundred km within minutes of training. It is
trained on the Riemannian flow matching loss (:mod:`rfm.dataset_objective`)

.. math::
    \mathcal L(\theta) = \mathbb E_{t,\, x_0 \sim p_0,\, x_1 \sim \mathrm{train}}
        \big\| v_\theta(x_t, t) - \dot x_t \big\|^2, \qquad
    x_t = \exp_{x_0}\!\big(t \log_{x_0} x_1\big),

with training times of density :math:`a t^{a-1}` (``time_power``: more effort near
:math:`t = 1`, where the flow resolves the finest scales). The recipe of Chen & Lipman (2024):
a seeded random 80/10/10 split (:mod:`rfm.splits`), the EMA weights with the best validation
negative log-likelihood (model selection by :func:`gm.train.train`), and the test NLL
:math:`-\frac1n \sum_i \log p_1(x_i)` in nats per point, computed exactly
(:mod:`rfm.likelihood`). For reference, the uniform density has NLL :math:`\log 4\pi \approx 2.53`.

Example::

    from rfm.geospatial import load_latlon
    from rfm.sphere_density import fit_sphere_density

    fit = fit_sphere_density(load_latlon("quakes.csv"), max_minutes=5)
    print(fit.test_nll)                # nats per point, lower is better
    samples = fit.sample(1000)         # (1000, 3) unit vectors
    fit.plot("quakes.png")             # data, samples and log-density (Mollweide; matplotlib)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gm.cli import training_settings
from gm.train import (
    PrecisionChoice,
    TrainConfig,
    TrainResult,
    load_trained_weights,
    rank_batch_size,
    resolve_precision,
    train,
)
from manifolds import Sphere
from rfm.dataset_objective import dataset_rfm_loss
from rfm.likelihood import log_likelihood, solver_settings
from rfm.models import ProjectedVelocity, velocity_mlp
from rfm.solver import ODESolver
from rfm.splits import split_indices, split_sizes

__all__ = [
    "SphereDensityConfig",
    "SphereDensityFit",
    "fit_sphere_density",
    "load_sphere_density",
    "minimum_points",
    "sample_sphere_density",
    "sphere_velocity_model",
]

#: the split of :func:`fit_sphere_density`: (train, validation, test) fractions
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass
class SphereDensityConfig:
    """Model, optimisation and evaluation settings of :func:`fit_sphere_density`.

    Chosen for CPU budgets of minutes on the Earth event datasets (``python -m benchmarks
    earth``). 3-minute volcano runs: raw coordinates, 256x4, lr 1e-3: test NLL -1.16; with 64
    Fourier features of scale 8 / 16: -2.42 / -2.70; 128 features of scale 32: -2.84; the same
    with lr 2e-3: -3.27. Batch 512 had a better validation NLL than 256 on all four datasets
    (15-minute runs). The scale suits broad densities (floods, fires, earthquakes: 8 to 16);
    a few sharp clusters (volcanoes) want 32.
    """

    hidden: int = 256
    depth: int = 4
    batch: int = 512  # global batch (shared between the processes of a torchrun run)
    lr: float = 2e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    warmup_steps: int = 200
    eval_every_minutes: float = 1.0  # validation cadence of a time budget
    val_steps: int = 16  # rk4 steps of the validation likelihood (model selection)
    test_steps: int = 128  # rk4 steps of the reported likelihoods
    grid_power: float = 2.0  # likelihood time grid t_k = 1 - (1 - k/N)^p (gm.data_end_time_grid)
    time_frequencies: int = 8
    fourier_features: int = 128  # random Fourier features of the point (0: raw coordinates)
    fourier_scale: float = 16.0  # std of the Fourier frequencies
    # bfloat16 autocast of the network in training (likelihoods stay float32): "auto" uses it only
    # where the CPU/GPU runs bfloat16 natively (gm.train.resolve_precision); "bf16" / "off" force it.
    mixed_precision: str = "auto"
    time_power: float = 2.0  # training times t = u^(1/a), density a t^(a-1)


def sphere_velocity_model(config: SphereDensityConfig) -> ProjectedVelocity:
    """The velocity network of ``config`` on :math:`S^2` (initialised from torch's global RNG)."""
    return velocity_mlp(
        Sphere(2),
        hidden=config.hidden,
        depth=config.depth,
        time_frequencies=config.time_frequencies,
        fourier_features=config.fourier_features,
        fourier_scale=config.fourier_scale,
    )


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def sample_sphere_density(model: nn.Module, n: int, *, steps: int = 64, seed: int = 0) -> Tensor:
    """``n`` samples of the flow ``model`` from uniform points on :math:`S^2` (drawn on the CPU
    from ``seed``): ``steps`` rk4 steps; ``(n, 3)`` unit vectors on the model's device."""
    sphere = Sphere(2)
    x0 = sphere.random_base(n, generator=torch.Generator().manual_seed(seed)).to(_model_device(model))
    with torch.no_grad():
        samples = ODESolver(sphere, model).sample(x0, steps=steps, method="rk4")
    return samples


def minimum_points(fractions: Sequence[float] = DEFAULT_FRACTIONS) -> int:
    """The fewest points whose split by ``fractions`` leaves every part non-empty."""
    if min(fractions) <= 0:
        raise ValueError(f"every fraction must be > 0, got {tuple(fractions)}")
    n = math.ceil(1 / min(fractions)) - 1
    while min(split_sizes(max(n, 1), fractions)) < 1:
        n += 1
    return max(n, 1)


@dataclass
class SphereDensityFit:
    """The result of :func:`fit_sphere_density`.

    ``model`` holds the selected EMA weights (eval mode); ``split`` the train / validation /
    test indices into ``points``. ``val_nll`` and ``test_nll`` (nats per point, exact, with
    ``config.test_steps`` rk4 steps) are ``None`` on the ranks other than 0 of a data-parallel
    run, where rank 0 alone evaluates."""

    model: ProjectedVelocity
    config: SphereDensityConfig
    points: Tensor
    split: tuple[Tensor, Tensor, Tensor]
    seed: int
    val_nll: float | None
    test_nll: float | None
    precision: PrecisionChoice
    train_result: TrainResult

    @property
    def steps(self) -> int:
        """Optimiser steps done (over all resumptions)."""
        return self.train_result.steps

    @property
    def best_step(self) -> int | None:
        """The step of the selected weights."""
        return self.train_result.best_step

    @property
    def rank(self) -> int:
        return self.train_result.rank

    @property
    def n_train(self) -> int:
        return len(self.split[0])

    @property
    def n_val(self) -> int:
        return len(self.split[1])

    @property
    def n_test(self) -> int:
        return len(self.split[2])

    def likelihood_solver(self) -> dict[str, Any]:
        """The settings of the reported likelihoods (:func:`rfm.likelihood.solver_settings`)."""
        return solver_settings(self.config.test_steps, self.config.grid_power)

    def log_density(self, x: Tensor, steps: int | None = None) -> Tensor:
        """Exact :math:`\\log p_1(x)` of ``(n, 3)`` unit vectors (``steps`` rk4 steps, default
        ``config.test_steps``), on ``x``'s device."""
        steps = self.config.test_steps if steps is None else steps
        values = log_likelihood(Sphere(2), self.model, x.to(_model_device(self.model)), steps, self.config.grid_power)
        return values.to(x.device)

    def sample(self, n: int, *, steps: int = 64, seed: int | None = None) -> Tensor:
        """``n`` samples (:func:`sample_sphere_density`; ``seed`` defaults to the run's)."""
        return sample_sphere_density(self.model, n, steps=steps, seed=self.seed if seed is None else seed)

    def plot(self, path: str | os.PathLike[str], title: str = "", *, n_samples: int = 2000, n_lat: int = 45) -> Path:
        """Mollweide maps of the points, ``n_samples`` samples and the model's log-density
        (``config.test_steps // 2`` rk4 steps on an ``n_lat x 2 n_lat`` grid), written to
        ``path`` (:func:`rfm.geospatial_plots.plot_earth`; needs matplotlib)."""
        from rfm.geospatial_plots import plot_earth

        steps = max(1, self.config.test_steps // 2)
        return plot_earth(
            self.points.cpu(),
            self.sample(n_samples).cpu(),
            lambda x: self.log_density(x, steps).cpu(),
            path,
            title=title,
            n_lat=n_lat,
        )


def fit_sphere_density(
    points: Tensor,
    config: SphereDensityConfig | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_steps: int | None = None,
    max_minutes: float | None = None,
    eval_every: int | None = None,
    eval_every_minutes: float | None = None,
    eval_at_minutes: tuple[float, ...] = (),
    compile: bool | str = False,
    checkpoint_path: str | os.PathLike[str] | None = None,
    resume: bool = True,
    run_settings: Mapping[str, Any] | None = None,
    progress: bool = True,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> SphereDensityFit:
    """Fit a density on :math:`S^2` to ``points`` (the recipe of the module docstring).

    ``seed`` draws the split (:func:`rfm.splits.split_indices`), initialises the network (torch's
    global RNG is seeded with it) and seeds the trainer. Training stops after ``max_steps`` or
    ``max_minutes``, whichever comes first; validation runs every ``eval_every`` steps if given,
    else every ``eval_every_minutes`` (default ``config.eval_every_minutes``), at the minute
    marks ``eval_at_minutes`` and at the end.

    With ``checkpoint_path`` the run is saved there (with its metrics and loss plot beside it,
    see :func:`gm.train.train`) and, with ``resume``, continues from it. The checkpoint
    records the settings that define the run: the training fields of ``config``, the precision
    used and ``run_settings`` (e.g. the dataset's name), and refuses to resume under others
    (:class:`gm.train.CheckpointMismatchError`).

    Args:
        points: ``(n, 3)`` unit vectors (e.g. :func:`rfm.geospatial.load_latlon`); used in float32.
        config: model and training settings (default :class:`SphereDensityConfig`).
        device: where to train.
        compile: ``torch.compile`` the network for training (``gm.train.TrainConfig.compile``).
        progress: progress output on stderr.
        fractions: the (train, validation, test) split.

    Raises:
        ValueError: for points that are not ``(n, 3)`` unit vectors, too few of them for the split
            (:func:`minimum_points`), no budget, or a bad ``config.mixed_precision``.
    """
    config = SphereDensityConfig() if config is None else config
    if max_steps is None and max_minutes is None:
        raise ValueError("give a training budget: max_steps, max_minutes or both")
    sphere = Sphere(2)
    precision = resolve_precision(config.mixed_precision, device)
    if not isinstance(points, Tensor):
        raise ValueError(f"points must be a torch.Tensor of unit vectors, got {type(points).__name__}")
    points = points.to(device=device, dtype=torch.float32)
    sphere.check_point(points, "points")
    if len(points) < minimum_points(fractions):
        raise ValueError(
            f"{len(points)} points are too few: a {'/'.join(f'{f:g}' for f in fractions)} split into "
            f"train/validation/test needs at least {minimum_points(fractions)}"
        )
    split = split_indices(len(points), seed, fractions)
    x_train, x_val, x_test = (points[idx] for idx in split)
    torch.manual_seed(seed)
    model = sphere_velocity_model(config).to(device)
    loss_fn = dataset_rfm_loss(
        sphere,
        x_train,
        rank_batch_size(config.batch),
        device,
        autocast_dtype=precision.autocast_dtype,
        time_power=config.time_power,
    )

    def nll(m: nn.Module, x: Tensor, steps: int, validate: bool = True) -> float:
        return float(-log_likelihood(sphere, m, x, steps, config.grid_power, validate=validate).mean())

    if eval_every is None and eval_every_minutes is None:
        eval_every_minutes = config.eval_every_minutes
    train_config = TrainConfig.from_config(
        config,
        checkpoint_every_minutes=1.0,
        seed=seed,
        progress=progress,
        val_name=f"val NLL ({config.val_steps} rk4 steps)",
        max_minutes=max_minutes,
        max_steps=max_steps,
        eval_every=eval_every,
        eval_every_minutes=eval_every_minutes,
        eval_at_minutes=eval_at_minutes,
        compile=compile,
    )
    extra = dict(run_settings or {})
    if tuple(fractions) != DEFAULT_FRACTIONS:
        extra["split"] = list(fractions)
    result = train(
        model,
        loss_fn,
        train_config,
        val_fn=lambda m: nll(m, x_val, config.val_steps, validate=False),
        checkpoint_path=checkpoint_path,
        run_config=training_settings(config, precision=precision.name, **extra),
        resume=resume,
    )
    model.eval()  # train() leaves the selected EMA weights in the model
    val_nll = test_nll = None
    if result.rank == 0:  # data-parallel run: rank 0 evaluates
        val_nll = nll(model, x_val, config.test_steps)
        test_nll = nll(model, x_test, config.test_steps)
    return SphereDensityFit(model, config, points, split, seed, val_nll, test_nll, precision, result)


def load_sphere_density(checkpoint_path: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """The flow saved by :func:`fit_sphere_density` (or ``python -m benchmarks earth``) at
    ``checkpoint_path``: the network its settings describe, with the selected weights, in eval
    mode on ``device``.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if it is not a training checkpoint of a density on the sphere.
    """
    weights = load_trained_weights(checkpoint_path)
    names = {f.name for f in fields(SphereDensityConfig)}
    settings = {k: v for k, v in weights.run_config.items() if k in names}
    if not {"hidden", "depth", "fourier_features", "fourier_scale", "time_frequencies"} <= settings.keys():
        raise ValueError(f"checkpoint {checkpoint_path} is not one of a density on the sphere (rdfm earth fit)")
    model = sphere_velocity_model(SphereDensityConfig(**settings))
    try:
        model.load_state_dict(weights.state)
    except RuntimeError as error:
        raise ValueError(
            f"checkpoint {checkpoint_path} does not fit the network its settings describe: {error}"
        ) from None
    return model.to(device).eval()
