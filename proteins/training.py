"""Training and loading the structure models: the backbone generator (:class:`BackboneFlow` with
:class:`BackboneNetwork`) and the sequence co-design model (:class:`CodesignFlow` with
:class:`CodesignNetwork`), on a structure dataset split by sequence cluster.

One recipe for both, used by ``rdfm backbones train``, ``rdfm codesign train`` and the
benchmarks: random crops of ``min_crop..max_crop`` residues (optionally padded to a few bucket
lengths, for compiled steps), the shared trainer :func:`gm.train.train` (EMA, resumable atomic
checkpoints, metrics file and loss plot), and model selection on a validation loss at fixed crops,
times and noise (deterministic, so that two validations differ only by the weights).

A checkpoint records the run's settings (``run_config``: every field of the config but those
that only change an evaluation), so :func:`load_backbone_model` / :func:`load_codesign_model`
rebuild the network it was trained with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from gm import cli
from gm.schedulers import ExponentialRateScheduler
from gm.train import BudgetSnapshots, TrainConfig, TrainResult, load_trained_weights, train, world
from proteins.codesign import CodesignFlow
from proteins.data import StructureDataset, bucket_edges
from proteins.flow import BackboneFlow
from proteins.network import BackboneNetwork, CodesignNetwork

#: How a dataset may be split: whole sequence clusters (50% identity) per split, or chains at random.
SPLITS = ("cluster", "chain")


@dataclass
class StructureModelConfig:
    """What the backbone and the co-design model share: the IPA trunk's sizes, the crops and the
    optimisation, model selection and sampling."""

    node_dim: int = 96
    pair_dim: int = 48
    blocks: int = 4
    heads: int = 8
    head_dim: int = 12
    query_points: int = 4
    value_points: int = 8
    transformer_layers: int = 0  # the node transformer after each IPA (0: none)
    transformer_heads: int = 4
    batch: int = 4  # proteins per step (with squared_residues: the most per step)
    # FrameFlow's batching (e.g. 400_000): each step's crops share one length L, as many as
    # squared_residues // L^2 (at most batch); 0: a fixed batch of crops of mixed lengths, padded
    squared_residues: int = 0
    min_crop: int = 64
    max_crop: int = 128
    lr: float = 5e-4
    # the learning rate's cosine decay ends at lr * min_lr_ratio (1: constant after warmup, so
    # that the EMA weights at a fraction of the run are those of a run of that budget: --curve)
    min_lr_ratio: float = 0.01
    ema_decay: float = 0.999
    warmup_steps: int = 200
    eval_every_minutes: float = 5.0
    val_crops: int = 24  # validation crops (fixed) for model selection
    sample_steps: int = 100
    rotation_rate: float = 10.0  # exponential rate of the rotation schedule (FrameFlow / FoldFlow)
    # training times with density a t^(a-1) on [0.01, 1] (1: uniform, FrameFlow's; > 1: more
    # steps near the data, where the fine geometry is learnt)
    time_power: float = 1.0
    # the auxiliary atom and distance loss (proteins.flow.BackboneFlow): its weight, whether it is
    # divided by nu_t^2 as the frame terms are, and the distance cutoff in nm (0: every pair).
    # Defaults: FrameDiff's term; FrameFlow's: weight 0.5 (its 1 beside translation weight 2),
    # time-scaled, every pair
    auxiliary_weight: float = 0.25
    auxiliary_time_scaled: bool = False
    auxiliary_cutoff: float = 0.6


@dataclass
class BackboneConfig(StructureModelConfig):
    """The backbone model, its training and its sampling (defaults: the benchmark's CPU model)."""

    samples_per_length: int = 24  # generated backbones per evaluation length


@dataclass
class CodesignConfig(StructureModelConfig):
    """The co-design model (structure and sequence), its training and evaluation."""

    sequence_weight: float = 1.0
    inverse_folding_prob: float = 0.25
    folding_prob: float = 0.25
    eval_chains: int = 32  # held-out chains evaluated
    eval_max_length: int = 128  # their crops' length cap
    elbo_draws: int = 4  # time draws per chain for the inverse-folding ELBO
    eval_batch: int = 8  # proteins per sampling batch
    # The feature-MLP inverse-folding baseline: trained on a random subset of this many training
    # chains (0: all of them) for this many epochs.
    baseline_chains: int = 0
    baseline_epochs: int = 30


#: Config fields that only say how a model is evaluated or sampled: a checkpoint resumes, and
#: loads, whatever their values.
#: (The benchmarks' list, :data:`gm.cli.EVALUATION_FIELDS`, plus the co-design evaluation's.)
EVALUATION_FIELDS = cli.EVALUATION_FIELDS | {
    "eval_chains",
    "eval_max_length",
    "eval_batch",
    "baseline_chains",
    "baseline_epochs",
}


#: Network presets (:func:`apply_preset`): ``small``, the CPU model of the benchmarks (node 96,
#: pair 48, 4 IPA blocks, no node transformer), and ``frameflow``, the trunk of FrameFlow (Yim et
#: al. 2023): node 256, pair 128, 6 blocks of IPA with 8 heads, 8 query and 12 value points,
#: each followed by a 2-layer, 4-head node transformer, the edge transition and the AF2
#: backbone update. (The per-head IPA width is not fixed by the paper's text; 32 = 256 / 8.)
PRESETS: dict[str, dict[str, int]] = {
    "small": {
        "node_dim": 96,
        "pair_dim": 48,
        "blocks": 4,
        "heads": 8,
        "head_dim": 12,
        "query_points": 4,
        "value_points": 8,
        "transformer_layers": 0,
        "transformer_heads": 4,
    },
    "frameflow": {
        "node_dim": 256,
        "pair_dim": 128,
        "blocks": 6,
        "heads": 8,
        "head_dim": 32,
        "query_points": 8,
        "value_points": 12,
        "transformer_layers": 2,
        "transformer_heads": 4,
    },
}

# Architecture and batching fields added after checkpoints were first written: recorded only when they differ
# from these values (the networks of the earlier checkpoints), so those checkpoints still resume
# and load.
_LEGACY_ARCHITECTURE = {
    "query_points": 4,
    "value_points": 8,
    "transformer_layers": 0,
    "transformer_heads": 4,
    "squared_residues": 0,
    "min_lr_ratio": 0.01,
    "time_power": 1.0,
    "auxiliary_weight": 0.25,
    "auxiliary_time_scaled": False,
    "auxiliary_cutoff": 0.6,
}


def apply_preset(config: StructureModelConfig, preset: str) -> StructureModelConfig:
    """``config`` with the network sizes of the preset ``preset`` (a key of :data:`PRESETS`).

    Raises:
        ValueError: for an unknown preset, naming the known ones.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    sizes: dict[str, Any] = dict(PRESETS[preset])
    return replace(config, **sizes)


def check_config(config: StructureModelConfig) -> None:
    """Raise a ValueError naming the field for settings no run can use: a network that cannot be
    built (e.g. an odd ``node_dim``), a crop range or budget below 1, rates out of range."""
    backbone_network(config)  # the network's own checks name the field
    backbone_flow(config)  # and the flow's (rotation rate, time power, auxiliary loss)
    for name in ("batch", "min_crop", "val_crops", "warmup_steps"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < (0 if name == "warmup_steps" else 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if config.max_crop < config.min_crop:
        raise ValueError(f"max_crop ({config.max_crop}) must be at least min_crop ({config.min_crop})")
    if config.squared_residues < 0:
        raise ValueError(f"squared_residues must be >= 0 (0: fixed batches), got {config.squared_residues}")
    if not config.lr > 0 or not 0 <= config.min_lr_ratio <= 1 or not 0 <= config.ema_decay < 1:
        raise ValueError(
            f"lr must be > 0, min_lr_ratio in [0, 1] and ema_decay in [0, 1), got {config.lr}, "
            f"{config.min_lr_ratio} and {config.ema_decay}"
        )


def run_settings(config: StructureModelConfig, **extra: Any) -> dict[str, Any]:
    """The settings a checkpoint of ``config``'s run records and a resume must match: every field
    but :data:`EVALUATION_FIELDS` (and the later architecture fields at their earlier values),
    plus ``extra`` (e.g. the dataset and split)."""
    settings = {
        k: v
        for k, v in asdict(config).items()
        if k not in EVALUATION_FIELDS and not (k in _LEGACY_ARCHITECTURE and v == _LEGACY_ARCHITECTURE[k])
    }
    return {**settings, **extra}


def _trunk_sizes(config: StructureModelConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in PRESETS["small"]}


def backbone_network(config: StructureModelConfig) -> BackboneNetwork:
    """The IPA frame network of ``config``'s sizes."""
    return BackboneNetwork(**_trunk_sizes(config))


def codesign_network(config: CodesignConfig) -> CodesignNetwork:
    """The co-design network (the same trunk, sequence input and residue-type head) of ``config``'s sizes."""
    return CodesignNetwork(**_trunk_sizes(config))


def backbone_flow(config: StructureModelConfig) -> BackboneFlow:
    """SE(3)^N flow matching with the exponential rotation schedule of rate ``config.rotation_rate``,
    training times of density :math:`a t^{a-1}`, ``a = config.time_power``, and ``config``'s
    auxiliary loss (weight, time scaling, distance cutoff)."""
    return BackboneFlow(
        rotation_scheduler=ExponentialRateScheduler(config.rotation_rate),
        time_power=config.time_power,
        auxiliary_weight=config.auxiliary_weight,
        auxiliary_time_scaled=config.auxiliary_time_scaled,
        auxiliary_cutoff=config.auxiliary_cutoff,
    )


def codesign_flow(config: CodesignConfig) -> CodesignFlow:
    """The joint structure and sequence flow of ``config`` (weights and task probabilities)."""
    return CodesignFlow(
        backbone_flow(config),
        sequence_weight=config.sequence_weight,
        inverse_folding_prob=config.inverse_folding_prob,
        folding_prob=config.folding_prob,
    )


def load_splits(
    dataset: str | Path, seed: int, split: str = "cluster"
) -> tuple[StructureDataset, StructureDataset, StructureDataset]:
    """The train / validation / test split of the structure dataset ``dataset`` (an ``.npz`` of
    :func:`proteins.data.build_structure_dataset`, e.g. from ``rdfm dataset build``) by the
    seed: whole sequence clusters per split (``"cluster"``), or chains at random (``"chain"``:
    for a single protein family; similar sequences then land in train and test).

    Raises:
        FileNotFoundError: if ``dataset`` is not a file.
        ValueError: if it is not a structure dataset or cannot be split so (a cluster split needs
            at least 3 clusters; the message says what to do).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(dataset)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such structure dataset; build one with rdfm dataset build DIR -o FILE")
    data = StructureDataset.load(path)
    clusters = len(torch.unique(data.clusters))
    if split == "cluster" and clusters < 3:
        raise ValueError(
            f"{path}: split needs at least 3 sequence clusters (train, validation and test each get whole "
            f"clusters of >= 50% identity), this dataset has {clusters}: build it from more protein families, "
            "or split by chain (--split chain) to split the chains of a single family at random (similar "
            "sequences then land in train and test)"
        )
    try:
        return data.split(seed=seed, by=split)
    except ValueError as error:  # e.g. fewer than 3 chains
        raise ValueError(f"{path}: {error}") from None


def check_buckets(buckets: tuple[int, ...] | list[int] | None, config: StructureModelConfig) -> tuple[int, ...] | None:
    """Crop bucket lengths checked against the config's crop range (:func:`proteins.data.bucket_edges`)."""
    if buckets is None:
        return None
    bucket_edges(tuple(buckets), config.min_crop, config.max_crop)
    return tuple(buckets)


def _validation_times(count: int, device: torch.device | str) -> torch.Tensor:
    """``count`` evenly spread times in (0, 1): the same for every validation of a run."""
    return (torch.arange(count, dtype=torch.float32, device=device) + 0.5) / count


def backbone_validation_loss(
    flow: BackboneFlow, val: StructureDataset, config: StructureModelConfig, device: torch.device | str
) -> Callable[[torch.nn.Module], float]:
    """``val_fn(model)``: the loss on fixed validation crops at fixed, evenly spread times,
    without self-conditioning (deterministic given the seeds)."""
    g = torch.Generator().manual_seed(12345)
    atoms, mask = val.sample_crops(config.val_crops, g, min_length=config.min_crop, max_length=config.max_crop)
    atoms, mask = atoms.to(device), mask.to(device)
    x1 = flow.frames_from_atoms(atoms, mask)
    t = _validation_times(config.val_crops, device)

    def val_fn(model: torch.nn.Module) -> float:
        with torch.no_grad():
            noise = torch.Generator(device=device).manual_seed(6789)
            return float(flow.loss(model, x1, mask, t=t, self_condition=False, generator=noise).total)

    return val_fn


def codesign_validation_loss(
    flow: CodesignFlow, val: StructureDataset, config: CodesignConfig, device: torch.device | str
) -> Callable[[torch.nn.Module], float]:
    """``val_fn(model)``: the joint loss on fixed validation crops at fixed, evenly spread times
    (structure and sequence times in opposite orders, neither given), no self-conditioning."""
    g = torch.Generator().manual_seed(12345)
    atoms, residues, mask = val.sample_sequence_crops(
        config.val_crops, g, min_length=config.min_crop, max_length=config.max_crop
    )
    atoms, residues, mask = atoms.to(device), residues.to(device), mask.to(device)
    x1 = flow.backbone.frames_from_atoms(atoms, mask)
    t = _validation_times(config.val_crops, device)

    def val_fn(model: torch.nn.Module) -> float:
        with torch.no_grad():
            noise = torch.Generator(device=device).manual_seed(6789)
            loss = flow.loss(model, x1, residues, mask, t=(t, t.flip(0)), self_condition=False, generator=noise)
            return float(loss.total)

    return val_fn


def train_structure_model(
    config: StructureModelConfig,
    train_set: StructureDataset,
    val_set: StructureDataset,
    checkpoint_path: str | Path,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    buckets: tuple[int, ...] | None = None,
    settings: Mapping[str, Any] | None = None,
    resume: bool = True,
    progress: bool = True,
    snapshots: BudgetSnapshots | None = None,
    **budget: Any,
) -> tuple[torch.nn.Module, TrainResult]:
    """Train the backbone model (a :class:`BackboneConfig`) or the co-design model (a
    :class:`CodesignConfig`) on ``train_set``, selecting the EMA weights of the lowest
    validation loss on ``val_set``.

    Args:
        checkpoint_path: the run's checkpoint (resumed if it exists and ``resume``; its metrics
            file ``.metrics.jsonl`` and loss plot are written beside it).
        batch_size: proteins per step in this process (default ``config.batch``; under torchrun
            pass this rank's share, :func:`gm.train.distributed.rank_batch_size`).
        buckets: pad each batch to one of these lengths (few static shapes for compiled steps).
        settings: what the checkpoint records and a resume must match (default:
            :func:`run_settings` of ``config``).
        snapshots: keep the EMA weights at budget marks of the run (a quality-against-compute
            curve from one run; :class:`gm.train.BudgetSnapshots`, taken at validations).
        budget: :class:`gm.train.TrainConfig` fields of the budget and cadence
            (``max_minutes``, ``max_steps``, ``eval_every``, ``eval_every_minutes``, ``compile``,
            ...); ``eval_every_minutes`` defaults to the config's.

    Returns:
        The model with the selected weights, in eval mode, and the :class:`gm.train.TrainResult`.
    """
    check_config(config)
    buckets = check_buckets(buckets, config)
    torch.manual_seed(seed)
    model: torch.nn.Module
    if isinstance(config, CodesignConfig):
        cflow = codesign_flow(config)
        model = codesign_network(config).to(device)
        objective = cflow.objective
        val_fn = codesign_validation_loss(cflow, val_set, config, device)
    else:
        bflow = backbone_flow(config)
        model = backbone_network(config).to(device)
        objective = bflow.objective
        val_fn = backbone_validation_loss(bflow, val_set, config, device)
    loss_fn = objective(
        train_set,
        batch_size=config.batch if batch_size is None else batch_size,
        min_length=config.min_crop,
        max_length=config.max_crop,
        device=device,
        buckets=buckets,
        # FrameFlow's budget is per step of the whole run: each process takes its share
        squared_residues=max(1, config.squared_residues // world().size) if config.squared_residues else None,
    )
    if snapshots is not None:
        loss_fn, val_fn = snapshots.wrap(loss_fn, val_fn)
    budget.setdefault("eval_every_minutes", None if budget.get("eval_every") else config.eval_every_minutes)
    train_config = TrainConfig.from_config(config, seed=seed, progress=progress, checkpoint_every_minutes=2.0, **budget)
    result = train(
        model,
        loss_fn,
        train_config,
        val_fn=val_fn,
        checkpoint_path=Path(checkpoint_path),
        run_config=dict(run_settings(config) if settings is None else settings),
        resume=resume,
    )
    model.eval()  # train() loaded the selected weights on every rank
    return model, result


def residues_per_step(
    config: StructureModelConfig,
    train_set: StructureDataset,
    *,
    buckets: tuple[int, ...] | None = None,
    draws: int = 200,
    seed: int = 0,
) -> float:
    """The mean number of real residues in one training batch of ``config`` on ``train_set``,
    estimated from ``draws`` batches drawn as training draws them (fixed padded batches, or
    length batches under ``squared_residues``; ``buckets`` as the training's): steps times this is
    the run's residues seen, the compute axis of a quality-against-compute curve."""
    g = torch.Generator().manual_seed(seed)
    total = 0
    for _ in range(draws):
        if config.squared_residues:
            _, _, mask = train_set.length_batch(
                config.squared_residues, g, config.min_crop, config.max_crop, max_batch=config.batch, lengths=buckets
            )
        else:
            _, mask = train_set.sample_crops(config.batch, g, config.min_crop, config.max_crop, buckets=buckets)
        total += int(mask.sum())
    return total / draws


def _config_from(kind: type, run_config: Mapping[str, Any]) -> Any:
    names = {f.name for f in fields(kind)}
    return kind(**{k: v for k, v in run_config.items() if k in names})


def load_backbone_model(
    checkpoint: str | Path, device: torch.device | str = "cpu", snapshot: float | str | None = None
) -> tuple[BackboneNetwork, BackboneConfig]:
    """The selected (best validation, EMA) backbone network of a training checkpoint, in eval mode
    on ``device``, with the config it was trained under; with ``snapshot``, the EMA weights the
    run kept at that budget mark instead (``--snapshots`` of the training command; see
    :func:`gm.train.load_trained_weights`).

    Raises:
        FileNotFoundError: if ``checkpoint`` (or its snapshot file) is not a file.
        ValueError: if it is not a training checkpoint or holds another network (e.g. a co-design
            model), naming the file, or has no snapshot at ``snapshot``.
    """
    weights = load_trained_weights(checkpoint, snapshot)
    config = _config_from(BackboneConfig, weights.run_config)
    model = backbone_network(config)
    _load(model, weights.state, checkpoint, "backbone network")
    return model.to(device).eval(), config


def load_codesign_model(
    checkpoint: str | Path, device: torch.device | str = "cpu", snapshot: float | str | None = None
) -> tuple[CodesignNetwork, CodesignConfig]:
    """The selected co-design network of a training checkpoint, or its snapshot at a budget mark
    (see :func:`load_backbone_model`)."""
    weights = load_trained_weights(checkpoint, snapshot)
    config = _config_from(CodesignConfig, weights.run_config)
    model = codesign_network(config)
    _load(model, weights.state, checkpoint, "co-design network")
    return model.to(device).eval(), config


def _load(model: torch.nn.Module, state: dict, checkpoint: str | Path, what: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # another network's weights
        raise ValueError(
            f"{checkpoint} does not hold a {what} of its recorded settings: {str(error).splitlines()[0]}"
        ) from None


__all__ = [
    "SPLITS",
    "StructureModelConfig",
    "PRESETS",
    "apply_preset",
    "BackboneConfig",
    "CodesignConfig",
    "EVALUATION_FIELDS",
    "run_settings",
    "backbone_network",
    "codesign_network",
    "backbone_flow",
    "codesign_flow",
    "load_splits",
    "check_buckets",
    "backbone_validation_loss",
    "codesign_validation_loss",
    "train_structure_model",
    "residues_per_step",
    "load_backbone_model",
    "load_codesign_model",
]
