"""Generator-matching base shared by rfm (flows) and dfm (CTMC jump processes).

Holds kappa_t schedulers, the probability-path and process interfaces, and the one
simulation loop that both continuous and discrete samplers run on:

- :mod:`gm.schedulers`: one family of affine schedules (alpha_t, sigma_t) with derivatives, snr
  and its inverse: the convex ones (``LinearScheduler`` (CondOT), ``PolynomialScheduler``,
  ``CosineConvexScheduler``, ``ExponentialRateScheduler``: kappa, rate, inverse; geodesic and
  mixture paths) and ``CosineScheduler``, ``VPScheduler``, ``LinearVPScheduler``,
  ``VEScheduler`` (affine Gaussian paths); ``scheduler_by_name``.
- :mod:`gm.path`: ``ProbPath.sample(x0, x1, t) -> PathSample``.
- :mod:`gm.process`: ``Process.step(x, t, h, model_output)``, ``JointProcess`` (several
  components from one model call, each on its own clock: shared, fixed or mapped).
- :mod:`gm.simulate`: ``simulate(process, model, x_init, time_grid, steps, ...)``.
- :mod:`gm.times`: ``training_times`` (uniform, power-law towards t = 1, stratified).
- :mod:`gm.checks`: the shared input checks (one host read-back per call).
- :mod:`gm.guidance`: classifier-free guidance shared by flows and jump processes
  (``NULL_LABEL``, ``drop_labels``, ``guided_velocity``, ``guided_log_probs``).
- :mod:`gm.train`: ``train(model, loss_fn, TrainConfig(...))``, the one trainer of every
  model, with the code it runs on, a module per concept: ``loop`` (``train``), ``config``
  (``TrainConfig``, ``TrainResult``, the lr schedule), ``ema``, ``checkpoint`` (atomic,
  resumable, refused under other settings), ``progress``, ``step`` (compile, TF32, no host
  read-back per step), ``snapshots`` (EMA weights at several budgets of one run), ``metrics``
  (the metrics file, TensorBoard, W&B, the loss plot),
  ``distributed`` (data-parallel under ``torchrun``: ranks, per-rank batch shares and random
  streams, one GPU per rank) and ``precision`` (``resolve_precision("auto" | "bf16" | "off",
  device)``: bfloat16 autocast only where the hardware runs it natively). The old paths
  ``gm.training``, ``gm.distributed``, ``gm.precision`` and ``gm.training_metrics`` re-export
  their names.
- :mod:`gm.files`: atomic file writes (checkpoints, datasets, results, figures).
- :mod:`gm.phase_log`: rate-limited progress lines for the long phases of an evaluation.
- :mod:`gm.download`: the one downloader (atomic, sha256- and content-checked, with progress).
- :mod:`gm.profiling`: diagnostics of host read-backs and kernels in training and sampling loops.
- :mod:`gm.paths`: where rdfm reads data and writes caches; :mod:`gm.cli`: the ``rdfm`` command.
"""

from gm.path import PathSample, ProbPath
from gm.process import JointProcess, Process
from gm.schedulers import (
    ConvexScheduler,
    CosineConvexScheduler,
    CosineScheduler,
    ExponentialRateScheduler,
    LinearScheduler,
    LinearVPScheduler,
    PolynomialScheduler,
    Scheduler,
    SchedulerOutput,
    VEScheduler,
    VPScheduler,
    scheduler_by_name,
)
from gm.simulate import compiled_advance, data_end_time_grid, make_time_grid, simulate
from gm.times import training_times
from gm.train.precision import PrecisionChoice, native_bfloat16, resolve_precision

__all__ = [
    "data_end_time_grid",
    "PathSample",
    "ProbPath",
    "Process",
    "JointProcess",
    "Scheduler",
    "SchedulerOutput",
    "LinearScheduler",
    "PolynomialScheduler",
    "CosineScheduler",
    "ConvexScheduler",
    "CosineConvexScheduler",
    "VPScheduler",
    "LinearVPScheduler",
    "VEScheduler",
    "scheduler_by_name",
    "ExponentialRateScheduler",
    "simulate",
    "compiled_advance",
    "make_time_grid",
    "training_times",
    "resolve_precision",
    "native_bfloat16",
    "PrecisionChoice",
]
