"""``python -m benchmarks codesign``: structure and sequence with one generator-matching model
(Multiflow-class): co-generation, inverse folding and folding, trained on the backbone set.

1. Data: the backbone structure set with its sequences (``python -m benchmarks data backbones``),
   split by sequence cluster (50% identity) into train / validation / test by the run's seed,
   exactly as ``python -m benchmarks backbones``.
2. Training: random crops of 64-128 residues; per protein, independent structure and sequence
   times, or one of them given (t = 1): ``proteins.CodesignFlow`` (frame loss + masked
   cross-entropy), the shared trainer (EMA, checkpoints, resume, validation-loss selection).
3. Evaluation on held-out chains (crops of at most ``max_length`` residues):

   - inverse folding: sequence recovery and per-residue perplexity (discrete ELBO) of the
     model, against the most frequent amino acid and an MLP on local structure features
     (phi, psi, DSSP state, neighbour counts; trained on the same split);
   - folding: TM-score and CA RMSD of structures generated from the native sequence, against
     the model's unconditional samples of the same lengths (no sequence information);
   - co-generation: amino-acid composition (Jensen-Shannon to the held-out chains), helix vs
     strand propensities of residue types in generated helices and strands (log-odds) beside
     the real ones, and the backbone metrics of the co-generated structures;
   - PDB files of every generated protein with its residue names.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.backbones import (
    _with_ideal_o,
    add_crop_arguments,
    bucket_setting,
    check_buckets,
    load_splits,
    split_setting,
)
from benchmarks.cli import (
    Budget,
    CommandLineError,
    add_config_overrides,
    add_run_arguments,
    apply_config_overrides,
    as_budget,
    check_device,
    rank_batch,
    run_budget,
    training_settings,
)
from benchmarks.results import new_record, write_results
from gm.training import TrainConfig, train
from proteins.codesign import CodesignFlow
from proteins.data import AMINO_ACIDS, THREE_LETTER_CODES, StructureDataset
from proteins.flow import BackboneFlow
from proteins.metrics import js_divergence
from proteins.network import CodesignNetwork


@dataclass
class CodesignConfig:
    node_dim: int = 96
    pair_dim: int = 48
    blocks: int = 4
    heads: int = 8
    head_dim: int = 12
    batch: int = 4
    min_crop: int = 64
    max_crop: int = 128
    lr: float = 5e-4
    ema_decay: float = 0.999
    warmup_steps: int = 200
    sequence_weight: float = 1.0
    inverse_folding_prob: float = 0.25
    folding_prob: float = 0.25
    eval_every_minutes: float = 5.0
    val_crops: int = 24  # validation crops (fixed) for model selection
    sample_steps: int = 100
    rotation_rate: float = 10.0
    eval_chains: int = 32  # held-out chains evaluated
    eval_max_length: int = 128  # their crops' length cap
    elbo_draws: int = 4  # time draws per chain for the inverse-folding ELBO
    eval_batch: int = 8  # proteins per sampling batch
    # The feature-MLP inverse-folding baseline: trained on a random subset of this many training
    # chains (0: all of them) for this many epochs. On every chain it trains for minutes on a CPU,
    # longer than a whole --quick run; a quick run only has to show the pipeline works.
    baseline_chains: int = 0
    baseline_epochs: int = 30


QUICK = CodesignConfig(
    node_dim=32,
    pair_dim=16,
    blocks=2,
    heads=4,
    head_dim=8,
    batch=2,
    min_crop=40,
    max_crop=48,
    warmup_steps=5,
    eval_every_minutes=0.2,
    val_crops=4,
    sample_steps=10,
    eval_chains=4,
    eval_max_length=48,
    elbo_draws=1,
    eval_batch=4,
    baseline_chains=48,
    baseline_epochs=5,
)

# fields that only change the evaluation: a checkpoint resumes across them
_EVALUATION_ONLY = ("eval_chains", "eval_max_length", "elbo_draws", "eval_batch", "baseline_chains", "baseline_epochs")


class _PhaseLog:
    """Progress of the evaluation's long phases on stderr, in the trainer's plain-line style
    (gm.training): a line when a phase starts, then at most one every ``every_s`` seconds, so
    that a full run's minutes of sampling, baseline training and TM-align are never silent and
    logs get no carriage-return flood. Silent when ``enabled`` is false (``--no-progress``)."""

    def __init__(self, enabled: bool, every_s: float = 10.0) -> None:
        self.enabled, self.every_s = enabled, every_s
        self.last = -math.inf

    def start(self, text: str) -> None:
        self.last = time.perf_counter()
        self._print(text)

    def update(self, text: str) -> None:
        """Print ``text`` if the last line is ``every_s`` seconds old."""
        if time.perf_counter() - self.last >= self.every_s:
            self.start(text)

    def _print(self, text: str) -> None:
        if self.enabled:
            print(f"[codesign] {text}", file=sys.stderr, flush=True)


def network(cfg: CodesignConfig) -> CodesignNetwork:
    return CodesignNetwork(
        node_dim=cfg.node_dim, pair_dim=cfg.pair_dim, blocks=cfg.blocks, heads=cfg.heads, head_dim=cfg.head_dim
    )


def codesign_flow(cfg: CodesignConfig) -> CodesignFlow:
    from gm.schedulers import ExponentialRateScheduler

    return CodesignFlow(
        BackboneFlow(rotation_scheduler=ExponentialRateScheduler(cfg.rotation_rate)),
        sequence_weight=cfg.sequence_weight,
        inverse_folding_prob=cfg.inverse_folding_prob,
        folding_prob=cfg.folding_prob,
    )


def validation_loss(flow: CodesignFlow, val: StructureDataset, cfg: CodesignConfig, device: str):
    """``val_fn(model)``: the joint loss on fixed validation crops at fixed, evenly spread times
    (structure and sequence times in opposite orders, neither given), no self-conditioning."""
    g = torch.Generator().manual_seed(12345)
    atoms, residues, mask = val.sample_sequence_crops(
        cfg.val_crops, g, min_length=cfg.min_crop, max_length=cfg.max_crop
    )
    atoms, residues, mask = atoms.to(device), residues.to(device), mask.to(device)
    x1 = flow.backbone.frames_from_atoms(atoms, mask)
    t = (torch.arange(cfg.val_crops, dtype=torch.float32, device=device) + 0.5) / cfg.val_crops

    def val_fn(model: torch.nn.Module) -> float:
        with torch.no_grad():
            noise = torch.Generator(device=device).manual_seed(6789)
            return float(
                flow.loss(model, x1, residues, mask, t=(t, t.flip(0)), self_condition=False, generator=noise).total
            )

    return val_fn


def train_model(
    seed: int,
    budget: Budget | float,
    cfg: CodesignConfig,
    out: Path,
    *,
    progress: bool = True,
    device: str = "cpu",
    restart: bool = False,
    dataset: Path | None = None,
    split: str = "cluster",
    buckets: tuple[int, ...] | None = None,
):
    """Train one model; returns ``(model with the best EMA weights, TrainResult, splits)``."""
    budget = as_budget(budget, cfg.eval_every_minutes)
    train_set, val_set, test_set = load_splits(seed, dataset, split)
    flow = codesign_flow(cfg)
    torch.manual_seed(seed)
    model = network(cfg).to(device)
    loss_fn = flow.objective(
        train_set,
        batch_size=rank_batch(cfg.batch),
        min_length=cfg.min_crop,
        max_length=cfg.max_crop,
        device=device,
        buckets=buckets,
    )
    tc = TrainConfig(
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        ema_decay=cfg.ema_decay,
        seed=seed,
        progress=progress,
        checkpoint_every_minutes=2.0,
        **budget.train_fields(),
    )
    settings = {
        k: v
        for k, v in training_settings(
            cfg, dataset=str(dataset) if dataset else "default", **split_setting(split), **bucket_setting(buckets)
        ).items()
        if k not in _EVALUATION_ONLY
    }
    res = train(
        model,
        loss_fn,
        tc,
        val_fn=validation_loss(flow, val_set, cfg, device),
        checkpoint_path=out / f"seed{seed}" / "checkpoint.pt",
        run_config=settings,
        resume=not restart,
    )
    if res.rank == 0:  # the other ranks of a data-parallel run hold no EMA weights
        model.load_state_dict(res.best_state, strict=False)
    model.eval()
    return model, res, (train_set, val_set, test_set)


# ------------------------------------------------------------------------------------------------
# evaluation data


@dataclass
class HeldOut:
    """Held-out crops, padded: atoms (B, L, 4, 3) Angstrom, residues (B, L), mask (B, L)."""

    atoms: torch.Tensor
    residues: torch.Tensor
    mask: torch.Tensor
    names: list[str]


def held_out_crops(test: StructureDataset, count: int, max_length: int, seed: int) -> HeldOut:
    """``count`` test chains (distinct, random), each cropped to at most ``max_length`` residues
    at a random start; ordered by length (batches of similar lengths pad little)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(test), generator=g)[:count].tolist()
    items = []
    for i in order:
        chain, residues = test[i], test.residue_types(i)
        length = min(len(chain), max_length)
        start = int(torch.randint(len(chain) - length + 1, (), generator=g))
        items.append(
            (
                chain.atoms[start : start + length],
                residues[start : start + length],
                f"{Path(chain.source).name}:{chain.chain_id}:{chain.start + start}",
            )
        )
    items.sort(key=lambda item: len(item[1]))
    longest = max(len(r) for _, r, _ in items)
    atoms = torch.zeros(len(items), longest, 4, 3)
    residues = torch.full((len(items), longest), -1, dtype=torch.long)
    mask = torch.zeros(len(items), longest, dtype=torch.bool)
    for k, (a, r, _) in enumerate(items):
        atoms[k, : len(r)], residues[k, : len(r)], mask[k, : len(r)] = a, r, True
    return HeldOut(_with_ideal_o(atoms, mask), residues, mask, [name for _, _, name in items])


def _batches(n: int, size: int):
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _trim(sl: slice, *tensors: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """The rows ``sl`` of each tensor, cut to the longest real length among them."""
    longest = int(mask[sl].sum(-1).max())
    return [t[sl, :longest] for t in tensors]


# ------------------------------------------------------------------------------------------------
# inverse-folding baselines


def structure_features(atoms: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-residue local structure features ``(B, L, F)`` from backbone atoms (Angstrom): sin/cos
    of phi, psi, omega of the residue and its two neighbours (0 where undefined), the DSSP
    state (one-hot helix / strand / coil) and the numbers of CB atoms within 6, 8, 10 and 12 A
    of its CB (ideal CB from N, CA, C), scaled."""
    from proteins.frames import backbone_dihedrals, beta_carbons
    from proteins.metrics import secondary_structure

    phi, psi, omega = backbone_dihedrals(atoms[..., :3, :], mask)
    angles = torch.stack([phi, psi, omega], dim=-1)  # (B, L, 3)
    trig = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).nan_to_num(0.0)
    window = []
    for shift in (-1, 0, 1):  # a fixed window of three residues: three rolls, not a loop over residues
        rolled = torch.roll(trig, shifts=-shift, dims=1)
        valid = torch.roll(mask, shifts=-shift, dims=1)
        index = torch.arange(mask.shape[1], device=mask.device) + shift
        valid = valid & (index >= 0) & (index < mask.shape[1])
        window.append(rolled * valid[..., None])
    ss = secondary_structure(atoms, mask).clamp_min(0)
    ss_onehot = torch.nn.functional.one_hot(ss.long(), 3).to(atoms.dtype)
    cb = beta_carbons(atoms[..., :3, :])
    d = torch.cdist(cb, cb)
    pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
    counts = torch.stack([((d < r) & pair).sum(-1) for r in (6.0, 8.0, 10.0, 12.0)], dim=-1).to(atoms.dtype)
    return torch.cat(window + [ss_onehot, counts / 10.0], dim=-1) * mask[..., None]


def _residue_table(
    dataset: StructureDataset, max_length: int, chains: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and residue types of every residue of ``dataset``'s chains (or of the chains
    with indices ``chains``; chains longer than ``max_length`` in pieces of at most that
    length), flattened over real, known residues."""
    feats, types = [], []
    pieces = []
    for i in range(len(dataset)) if chains is None else chains:
        chain, residues = dataset[i], dataset.residue_types(i)
        for s in range(0, len(chain), max_length):
            pieces.append((chain.atoms[s : s + max_length], residues[s : s + max_length]))
    pieces.sort(key=lambda p: len(p[1]))
    for sl in _batches(len(pieces), 32):
        group = pieces[sl]
        longest = max(len(r) for _, r in group)
        atoms = torch.zeros(len(group), longest, 4, 3)
        residues = torch.full((len(group), longest), -1, dtype=torch.long)
        mask = torch.zeros(len(group), longest, dtype=torch.bool)
        for k, (a, r) in enumerate(group):
            atoms[k, : len(r)], residues[k, : len(r)], mask[k, : len(r)] = a, r, True
        atoms = _with_ideal_o(atoms, mask)
        f = structure_features(atoms, mask)
        keep = mask & (residues >= 0)
        feats.append(f[keep])
        types.append(residues[keep])
    return torch.cat(feats), torch.cat(types)


def train_feature_classifier(
    train_set: StructureDataset,
    val_set: StructureDataset,
    *,
    seed: int,
    max_length: int = 128,
    epochs: int = 30,
    hidden: int = 128,
    chains: int | None = None,
    progress: bool = False,
) -> torch.nn.Module:
    """The per-residue MLP baseline: residue type from :func:`structure_features`, trained with
    Adam on every residue of the training chains (or of a random subset of them, ``chains``;
    chains cut into pieces of at most ``max_length`` residues, as the evaluated crops are), the
    epoch with the lowest validation cross-entropy kept.

    Args:
        chains: train on a random subset (drawn with ``seed``) of this many training chains
            instead of all of them (all if there are fewer), for a quick run.
        progress: report on stderr what is being trained and, every 10 s, the epoch.

    Raises:
        ValueError: naming the argument, for ``epochs``, ``max_length``, ``hidden`` or ``chains``
            below 1.
    """
    for name, value in (("epochs", epochs), ("max_length", max_length), ("hidden", hidden)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if chains is not None and chains < 1:
        raise ValueError(f"chains must be at least 1 (or None: every training chain), got {chains}")
    subset = None
    if chains is not None and chains < len(train_set):
        # a random subset, not the first chains: the dataset's order follows its source files,
        # so its first chains would be one protein family
        subset = sorted(torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:chains].tolist())
    log = _PhaseLog(progress)
    t0 = time.perf_counter()
    used = len(train_set) if subset is None else len(subset)
    log.start(
        f"feature MLP baseline: structure features of {used} training chains"
        + ("" if subset is None else f" (a random subset of {len(train_set)})")
    )
    x, y = _residue_table(train_set, max_length, subset)
    xv, yv = _residue_table(val_set, max_length)
    log.start(f"feature MLP baseline: training on {len(x)} residues for {epochs} epochs")
    torch.manual_seed(seed)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, len(AMINO_ACIDS)),
    )
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3, weight_decay=1e-5)
    g = torch.Generator().manual_seed(seed)
    best, best_state = math.inf, None
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for sl in _batches(len(x), 512):
            idx = perm[sl]
            loss = torch.nn.functional.cross_entropy(mlp(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():  # one read-back per epoch, for the model selection
            val = float(torch.nn.functional.cross_entropy(mlp(xv), yv))
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in mlp.state_dict().items()}
        log.update(
            f"feature MLP baseline: epoch {epoch + 1}/{epochs}, validation cross-entropy {val:.3f}, "
            f"{time.perf_counter() - t0:.0f} s"
        )
    mlp.load_state_dict(best_state)
    log.start(
        f"feature MLP baseline: done in {time.perf_counter() - t0:.0f} s (best validation cross-entropy {best:.3f})"
    )
    return mlp.eval()


def residue_frequencies(dataset: StructureDataset) -> torch.Tensor:
    """Frequencies ``(20,)`` of the residue types of ``dataset`` (float64)."""
    residues = torch.cat([dataset.residue_types(i) for i in range(len(dataset))])
    counts = torch.bincount(residues[residues >= 0], minlength=len(AMINO_ACIDS)).to(torch.float64)
    return counts / counts.sum()


# ------------------------------------------------------------------------------------------------
# evaluation


def _recovery(designed: torch.Tensor, native: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-protein fraction of known native residues recovered, ``(B,)``."""
    known = mask & (native >= 0)
    return ((designed == native) & known).sum(-1) / known.sum(-1).clamp_min(1)


def _mean_ci(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def propensity_log_odds(
    residues: torch.Tensor, ss: torch.Tensor, mask: torch.Tensor, *, pseudo: float = 1.0
) -> np.ndarray:
    """Per residue type, ``log P(type | helix) / P(type | strand)`` ``(20,)`` over the real
    residues (``ss``: 1 helix, 2 strand), with ``pseudo`` counts added to every type."""
    known = mask & (residues >= 0)
    counts = []
    for state in (1, 2):
        sel = known & (ss == state)
        counts.append(torch.bincount(residues[sel], minlength=len(AMINO_ACIDS)).to(torch.float64) + pseudo)
    helix, strand = (c / c.sum() for c in counts)
    return torch.log(helix / strand).numpy()


def evaluate(
    model, splits, cfg: CodesignConfig, run_dir: Path, *, seed: int, device: str = "cpu", progress: bool = True
) -> dict:
    """Inverse folding, folding and co-generation on held-out crops; returns the record fields
    (with a markdown ``table``) and writes PDB files of every generated protein. ``progress``:
    say on stderr what each long phase is doing (sampling, the baseline, TM-scores)."""
    from proteins import evaluation, metrics
    from proteins.frames import backbone_atoms
    from proteins.pdb import write_pdb

    train_set, val_set, test_set = splits
    flow = codesign_flow(cfg)
    held = held_out_crops(test_set, cfg.eval_chains, cfg.eval_max_length, seed=seed + 101)
    n = len(held.names)
    batches = _batches(n, cfg.eval_batch)
    timings: dict[str, float] = {}
    log = _PhaseLog(progress)

    def run(name: str, given: str | None = None, **options) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples for every held-out crop, in batches, with the native ``"structure"`` or
        ``"sequence"`` given (or neither): atoms (B, L, 4, 3) and residues (B, L)."""
        t0 = time.perf_counter()
        log.start(
            f"{name}: sampling {n} proteins ({cfg.sample_steps} steps, {len(batches)} batches of at most "
            f"{cfg.eval_batch})"
        )
        atoms = torch.zeros_like(held.atoms)
        residues = torch.full_like(held.residues, -1)
        for k, sl in enumerate(batches):
            log.update(f"{name}: batch {k + 1}/{len(batches)}, {time.perf_counter() - t0:.0f} s")
            native_atoms, native_res, mask = _trim(sl, held.atoms, held.residues, held.mask, mask=held.mask)
            g = torch.Generator(device=device).manual_seed(seed * 1000 + 17 * k + len(name))
            fixed = {} if given is None else {given: (native_atoms if given == "structure" else native_res).to(device)}
            out = flow.sample(model, mask.to(device), steps=cfg.sample_steps, generator=g, **fixed, **options)
            length = mask.shape[1]
            atoms[sl, :length] = backbone_atoms(out.frames, mask.to(device)).cpu()
            residues[sl, :length] = out.residues.cpu()
        timings[name] = time.perf_counter() - t0
        print(f"[codesign] {name}: {n} proteins in {timings[name]:.0f} s", flush=True)
        return atoms, residues

    # inverse folding: the model (exact CTMC, and purity sampling at low temperature) ------------
    inverse = {}
    for label, options in (
        ("model, CTMC (T = 1)", {}),
        ("model, purity (T = 0.1)", {"temperature": 0.1, "unmasking": "confidence"}),
    ):
        inverse[label] = run(f"inverse folding, {label}", "structure", **options)[1]
    # the one-shot posterior argmax from the fully masked sequence (one network call)
    one_shot = torch.full_like(held.residues, -1)
    elbo_nats = []
    log.start(f"inverse folding: one-shot argmax and sequence ELBO ({cfg.elbo_draws} draws) of {n} proteins")
    with torch.no_grad():
        for sl in batches:
            native_atoms, native_res, mask = _trim(sl, held.atoms, held.residues, held.mask, mask=held.mask)
            frames = flow.backbone.frames_from_atoms(native_atoms.to(device), mask.to(device))
            one = torch.ones(mask.shape[0], device=device)
            masked = torch.full(mask.shape, 20, dtype=torch.long, device=device)
            logits = model(frames, one, masked, torch.zeros_like(one), mask.to(device), None).logits
            one_shot[sl, : mask.shape[1]] = torch.where(mask, logits.argmax(-1).cpu(), -1)
            est = flow.sequence_elbo(
                model,
                native_atoms.to(device),
                native_res.to(device),
                mask.to(device),
                n_draws=cfg.elbo_draws,
                generator=torch.Generator().manual_seed(seed),
            )
            elbo_nats.append((est.nats_per_token * est.n_tokens, est.n_tokens, est.stderr_bits_per_token))
    inverse["model, one-shot argmax"] = one_shot
    tokens = sum(k for _, k, _ in elbo_nats)
    model_nats = sum(v for v, _, _ in elbo_nats) / tokens
    model_nats_se = math.sqrt(sum((s * math.log(2) * k) ** 2 for _, k, s in elbo_nats)) / tokens

    # baselines: most frequent residue type, and the feature MLP
    freq = residue_frequencies(train_set)
    most = int(freq.argmax())
    inverse[f"most frequent ({AMINO_ACIDS[most]})"] = torch.where(held.mask, most, -1)
    t0 = time.perf_counter()
    mlp = train_feature_classifier(
        train_set,
        val_set,
        seed=seed,
        max_length=cfg.eval_max_length,
        epochs=cfg.baseline_epochs,
        chains=cfg.baseline_chains or None,
        progress=progress,
    )
    timings["feature MLP training"] = time.perf_counter() - t0
    with torch.no_grad():
        feats = structure_features(held.atoms, held.mask)
        mlp_logits = mlp(feats)
    inverse["feature MLP"] = torch.where(held.mask, mlp_logits.argmax(-1), -1)
    known = held.mask & (held.residues >= 0)
    native_known = held.residues[known]
    unigram_nats = float(-torch.log(freq[native_known]).mean())
    mlp_nats = float(torch.nn.functional.cross_entropy(mlp_logits[known], native_known))
    perplexity = {
        "model, CTMC (T = 1)": (math.exp(model_nats), model_nats_se * math.exp(model_nats)),
        f"most frequent ({AMINO_ACIDS[most]})": (math.exp(unigram_nats), 0.0),
        "feature MLP": (math.exp(mlp_nats), 0.0),
    }
    recovery = {
        label: _mean_ci(_recovery(designed, held.residues, held.mask).tolist()) for label, designed in inverse.items()
    }
    # pooled over residues too (the per-protein mean weights short chains more)
    recovery_pooled = {
        label: float(((designed == held.residues) & known).sum() / known.sum()) for label, designed in inverse.items()
    }

    # folding vs the unconditional model of the same lengths ----------------------------------
    folded = run("folding", "sequence")[0]
    cogen_atoms, cogen_res = run("co-generation")
    fold_tm, fold_rmsd, base_tm, base_rmsd = [], [], [], []
    t0 = time.perf_counter()
    log.start(f"folding: TM-scores and CA RMSDs of {n} folded and {n} unconditional structures")
    for k in range(n):
        log.update(f"folding: TM-scores, protein {k + 1}/{n}, {time.perf_counter() - t0:.0f} s")
        m = held.mask[k]
        native = held.atoms[k][m][:, :3]
        fold_tm.append(metrics.tm_score(native, folded[k][m][:, :3], aligned=True))
        base_tm.append(metrics.tm_score(native, cogen_atoms[k][m][:, :3], aligned=True))
        fold_rmsd.append(metrics.ca_rmsd(native, folded[k][m]))
        base_rmsd.append(metrics.ca_rmsd(native, cogen_atoms[k][m]))
    folding = {
        "tm": _mean_ci(fold_tm),
        "tm_std": float(np.std(fold_tm, ddof=1)) if n > 1 else float("nan"),
        "rmsd": _mean_ci(fold_rmsd),
        "baseline_tm": _mean_ci(base_tm),
        "baseline_tm_std": float(np.std(base_tm, ddof=1)) if n > 1 else float("nan"),
        "baseline_rmsd": _mean_ci(base_rmsd),
        "per_protein_tm": fold_tm,
        "per_protein_baseline_tm": base_tm,
    }
    folding["target_met"] = bool(folding["tm"][0] - folding["baseline_tm"][0] > folding["baseline_tm_std"])

    # co-generation -----------------------------------------------------------------------------
    def composition(res: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        r = res[mask & (res >= 0)]
        c = torch.bincount(r, minlength=len(AMINO_ACIDS)).to(torch.float64)
        return (c / c.sum()).numpy()

    log.start(
        f"co-generation: secondary structure, backbone statistics and all-against-all TM-align of the {n} "
        "co-generated backbones"
    )
    real_comp = composition(held.residues, held.mask)
    cogen_comp = composition(cogen_res, held.mask)
    train_comp = freq.numpy()
    real_ss = metrics.secondary_structure(held.atoms, held.mask)
    cogen_ss = metrics.secondary_structure(cogen_atoms, held.mask)
    real_lo = propensity_log_odds(held.residues, real_ss, held.mask)
    cogen_lo = propensity_log_odds(cogen_res, cogen_ss, held.mask)
    # the real log-odds from every training residue as well (a low-noise reference)
    stats = {
        "co-generated": evaluation.structure_statistics(cogen_atoms, held.mask),
        "folded": evaluation.structure_statistics(folded, held.mask),
        "real (held out)": evaluation.structure_statistics(held.atoms, held.mask),
    }
    distances = {
        "co-generated": evaluation.distribution_distances(cogen_atoms, held.mask, held.atoms, held.mask),
        "folded": evaluation.distribution_distances(folded, held.mask, held.atoms, held.mask),
    }
    cogen = {
        "composition_js": js_divergence(cogen_comp, real_comp),
        "composition_js_train_vs_test": js_divergence(train_comp, real_comp),
        "composition": dict(zip(AMINO_ACIDS, cogen_comp.tolist())),
        "real_composition": dict(zip(AMINO_ACIDS, real_comp.tolist())),
        "helix_strand_log_odds": dict(zip(AMINO_ACIDS, cogen_lo.tolist())),
        "real_helix_strand_log_odds": dict(zip(AMINO_ACIDS, real_lo.tolist())),
        # undefined (NaN) when the generated set has no helix or no strand residues
        "log_odds_correlation": (
            float(np.corrcoef(cogen_lo, real_lo)[0, 1]) if cogen_lo.std() > 0 and real_lo.std() > 0 else float("nan")
        ),
        "statistics": stats,
        "distances": distances,
        "diversity": metrics.diversity(cogen_atoms[:, :, :3], held.mask),
    }

    # PDB files ------------------------------------------------------------------------------------
    def names(res: torch.Tensor) -> list[str]:
        return [THREE_LETTER_CODES[int(r)] if r >= 0 else "UNK" for r in res]

    for k in range(n):
        m = held.mask[k]
        source, chain_id, first = held.names[k].rsplit(":", 2)
        tag = f"{source.split('.')[0]}_{chain_id}_{first}"  # 1A0J_A.pdb.gz:A:203 -> 1A0J_A_A_203
        write_pdb(
            run_dir / "samples" / f"cogen_{k:03d}_len{int(m.sum())}.pdb",
            cogen_atoms[k],
            m,
            residue_names=names(cogen_res[k][m]),
            title=f"rdfm codesign seed {seed}: co-generated",
        )
        write_pdb(
            run_dir / "samples" / f"folded_{k:03d}_{tag}.pdb",
            folded[k],
            m,
            residue_names=names(held.residues[k][m]),
            title=f"rdfm codesign seed {seed}: folded {held.names[k]}",
        )
        write_pdb(
            run_dir / "samples" / f"designed_{k:03d}_{tag}.pdb",
            held.atoms[k],
            m,
            residue_names=names(inverse["model, purity (T = 0.1)"][k][m]),
            title=f"rdfm codesign seed {seed}: inverse folding of {held.names[k]} (purity, T = 0.1)",
        )

    # the target is judged on one sampler fixed in advance (Multiflow's inverse-folding setting),
    # not on the best of the variants on the test chains
    designed_label = "model, purity (T = 0.1)"
    record = {
        "n_chains": n,
        "max_length": cfg.eval_max_length,
        "chains": held.names,
        "recovery": recovery,
        "recovery_pooled": recovery_pooled,
        "perplexity": perplexity,
        "elbo_nats_per_residue": model_nats,
        "folding": folding,
        "cogeneration": cogen,
        "timings_s": timings,
        "n_train_chains": len(train_set),
        "n_test_chains": len(test_set),
    }
    record["floors"] = {
        "inverse folding: model (purity, T = 0.1) recovery >= feature MLP + 0.05": recovery[designed_label][0]
        >= recovery["feature MLP"][0] + 0.05,
        "folding: TM gain over unconditional > its spread": folding["target_met"],
    }
    record["table"] = _table(record)
    return record


def _table(r: dict) -> str:
    lines = [
        f"Inverse folding ({r['n_chains']} held-out chains, crops of <= {r['max_length']} residues):",
        "",
        "| method | recovery (mean per chain, 95% CI) | recovery (pooled) | perplexity |",
        "|---|---|---|---|",
    ]
    for label, (mean, ci) in r["recovery"].items():
        ppl = r["perplexity"].get(label)
        ppl_text = (
            "—" if ppl is None else (f"{ppl[0]:.2f} ± {1.96 * ppl[1]:.2f} (ELBO bound)" if ppl[1] else f"{ppl[0]:.2f}")
        )
        lines.append(f"| {label} | {mean:.3f} ± {ci:.3f} | {r['recovery_pooled'][label]:.3f} | {ppl_text} |")
    f = r["folding"]
    lines += [
        "",
        "Folding (structure from the native sequence) vs unconditional samples of the same lengths:",
        "",
        "| method | TM-score (mean ± 95% CI) | TM std | CA RMSD (A) |",
        "|---|---|---|---|",
        f"| model, sequence given | {f['tm'][0]:.3f} ± {f['tm'][1]:.3f} | {f['tm_std']:.3f} | "
        f"{f['rmsd'][0]:.1f} ± {f['rmsd'][1]:.1f} |",
        f"| model, unconditional | {f['baseline_tm'][0]:.3f} ± {f['baseline_tm'][1]:.3f} | "
        f"{f['baseline_tm_std']:.3f} | {f['baseline_rmsd'][0]:.1f} ± {f['baseline_rmsd'][1]:.1f} |",
    ]
    c = r["cogeneration"]
    s, d = c["statistics"], c["distances"]
    lines += [
        "",
        f"Co-generation: composition JS to held-out chains {c['composition_js']:.4f} nats (training vs "
        f"held-out chains: {c['composition_js_train_vs_test']:.4f}); helix/strand log-odds correlation with "
        f"the real chains {c['log_odds_correlation']:.2f}; mean pairwise TM of the co-generated backbones "
        f"{c['diversity']['mean_pairwise_tm']:.3f}, {c['diversity']['clusters_at_0_5']} clusters at TM 0.5 of "
        f"{c['diversity']['n']}",
        "",
        "| set | CA-CA within 0.1 A | clash rate | helix | strand | R_g / L^0.4 | Rama JS |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ("co-generated", "folded", "real (held out)"):
        js = d[row]["ramachandran_js"] if row in d else 0.0
        lines.append(
            f"| {row} | {s[row]['ca_ca_within_0.1']:.3f} | {s[row]['clash_rate']:.4f} | {s[row]['helix']:.2f} | "
            f"{s[row]['strand']:.2f} | {s[row]['rg_over_l_0.4']:.2f} | {js:.3f} |"
        )
    lines.append("")
    lines.append("Targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in r["floors"].items()))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# using a trained model: design a sequence for a structure file, fold a sequence, generate proteins


def load_trained(checkpoint: Path, device: str = "cpu") -> tuple[CodesignNetwork, CodesignConfig]:
    """The best (EMA, validation-selected) model of a training checkpoint of this script, with
    the settings it was trained under."""
    from benchmarks.cli import CommandLineError

    if not checkpoint.is_file():
        raise CommandLineError(
            f"no trained model at {checkpoint}: train one first (python -m benchmarks codesign "
            "--train-only ...) or pass --checkpoint"
        )
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    settings = state.get("run_config") or {}
    fields = CodesignConfig.__dataclass_fields__
    cfg = CodesignConfig(**{k: v for k, v in settings.items() if k in fields})
    model = network(cfg)
    try:
        model.load_state_dict(state["best_state"] if state.get("best_state") is not None else state["ema"])
    except RuntimeError as error:  # another network's weights (e.g. a backbones checkpoint)
        raise CommandLineError(
            f"{checkpoint} does not hold a co-design network of its settings: {str(error).splitlines()[0]}"
        ) from None
    return model.to(device).eval(), cfg


def use_model(args: argparse.Namespace, cfg: CodesignConfig) -> int:
    """``--design FILE`` / ``--fold SEQUENCE`` / ``--generate COUNT``: sample with a trained model,
    write PDB files with residue names to ``--out/<mode>/`` and print the sequences."""
    from benchmarks.cli import CommandLineError
    from proteins.data import decode_residues, encode_sequence, read_backbone_chains
    from proteins.frames import backbone_atoms
    from proteins.pdb import write_pdb

    if args.samples < 1:
        raise CommandLineError(f"--samples must be at least 1, got {args.samples}")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise CommandLineError(f"--temperature must be a positive number, got {args.temperature}")
    # checked before the model is loaded: a bad request is reported as such, not as a missing checkpoint
    if args.generate and args.length is None:
        raise CommandLineError("--generate needs --length L (residues per protein)")
    if args.generate and args.length < 1:
        raise CommandLineError(f"--length must be a positive number of residues, got {args.length}")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise CommandLineError(f"--seed must be between 0 and 2**63 - 1, got {args.seed}")
    seed = args.seeds[0]  # the training run whose checkpoint is used
    out = Path(args.out)
    checkpoint = args.checkpoint or out / f"seed{seed}" / "checkpoint.pt"
    model, trained = load_trained(Path(checkpoint), args.device)
    flow = codesign_flow(trained)
    options = dict(steps=cfg.sample_steps, temperature=args.temperature, unmasking=args.unmasking)
    # every draw of the sampler comes from this generator: one seed, one set of proteins
    g = torch.Generator(device=args.device).manual_seed(seed if args.seed is None else args.seed)
    count = args.samples
    if args.design is not None:
        try:
            chains = read_backbone_chains(args.design)
        except (ValueError, OSError) as error:
            raise CommandLineError(str(error)) from None
        chain = chains[0]
        atoms = torch.as_tensor(chain.atoms[:, :3], dtype=torch.float32)[None].expand(count, -1, -1, -1)
        mask = torch.ones(atoms.shape[:2], dtype=torch.bool)
        result = flow.sample(model, mask.to(args.device), structure=atoms.to(args.device), generator=g, **options)
        native = encode_sequence(chain.sequence)
        mode, label = "design", Path(args.design).name.split(".")[0]
        # the designed sequences go onto the input's own atoms (ideal O where the file has none)
        written = _with_ideal_o(torch.as_tensor(chain.atoms, dtype=torch.float32)[None], mask[:1]).expand(
            count, -1, -1, -1
        )
        print(f"native     {chain.sequence}")
    elif args.fold is not None:
        try:
            native = encode_sequence(args.fold)
        except ValueError as error:
            raise CommandLineError(f"--fold: {error}") from None
        if len(native) == 0:
            raise CommandLineError("--fold needs a non-empty sequence")
        nonstandard = sorted({c for c in args.fold.upper() if c not in AMINO_ACIDS})
        if nonstandard:
            verb = "is not a standard amino acid" if len(nonstandard) == 1 else "are not standard amino acids"
            print(
                f"[codesign] --fold: {', '.join(nonstandard)} {verb}: folded as unknown (X) residues, the "
                f"model's input for a residue of no known type",
                file=sys.stderr,
            )
        mask = torch.ones(count, len(native), dtype=torch.bool)
        result = flow.sample(
            model, mask.to(args.device), sequence=native.expand(count, -1).to(args.device), generator=g, **options
        )
        mode, label, written = "fold", f"len{len(native)}", None
    else:
        mask = torch.ones(count, args.length, dtype=torch.bool)
        result = flow.sample(model, mask.to(args.device), generator=g, **options)
        native, mode, label, written = None, "generate", f"len{args.length}", None
    atoms = written if mode == "design" else backbone_atoms(result.frames.cpu())
    residues = result.residues.cpu()
    for k in range(count):
        sequence = decode_residues(residues[k])
        path = write_pdb(
            out / mode / f"{label}_{k:03d}.pdb",
            atoms[k],
            residue_names=[THREE_LETTER_CODES[int(r)] if r >= 0 else "UNK" for r in residues[k]],
            title=f"rdfm codesign {mode} {label} sample {k}",
        )
        extra = ""
        if native is not None and mode == "design":
            known = native >= 0
            extra = f"  recovery {float(((residues[k] == native) & known).sum() / known.sum()):.2f}"
        print(f"sample {k:<3} {sequence}{extra}  -> {path}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks codesign", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    use = parser.add_argument_group("using a trained model (no training)")
    modes = use.add_mutually_exclusive_group()
    modes.add_argument(
        "--design", metavar="FILE", help="inverse folding: design sequences for the first chain of a PDB/mmCIF file"
    )
    modes.add_argument("--fold", metavar="SEQUENCE", help="folding: generate structures for a one-letter sequence")
    modes.add_argument("--generate", action="store_true", help="co-generation: structures and sequences together")
    use.add_argument("--length", type=int, default=None, help="residues per protein for --generate")
    use.add_argument("--samples", type=int, default=4, help="proteins per request (default 4)")
    use.add_argument("--temperature", type=float, default=1.0, help="sequence sampling temperature (default 1)")
    use.add_argument(
        "--unmasking",
        choices=("random", "confidence"),
        default="random",
        help="which masked residues a step reveals: random (the exact CTMC) or the most confident (purity sampling)",
    )
    use.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a training checkpoint of this script (default: OUT/seed<seed>/checkpoint.pt)",
    )
    use.add_argument(
        "--seed",
        type=int,
        default=None,
        help="sampling seed: the same seed, model and options give the same proteins (default: the "
        "first of --seeds, which also picks the checkpoint)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny model, 40-48 residue crops, at most 0.3 min of "
        "training, 4 held-out chains, the feature-MLP baseline on 48 training chains, one thread "
        "unless --threads (under a minute)",
    )
    parser.add_argument("--train-only", action="store_true", help="train (or resume) and stop before evaluating")
    parser.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="a structure dataset .npz (proteins.data.build_structure_dataset; default: the cached "
        "set of `python -m benchmarks data backbones`)",
    )
    add_crop_arguments(parser)
    add_run_arguments(parser, minutes=60.0, out="runs/codesign")
    add_config_overrides(parser, CodesignConfig())
    args = parser.parse_args(argv)
    check_device(args.device)
    # --quick runs on one thread unless --threads says otherwise: its tiny models gain little from
    # a second one, and on a busy 2-core machine threads waiting for each other made a quick run
    # 10-50x slower (measured: 0.4 instead of 12-30 steps/s beside one other process)
    threads = args.threads or (1 if args.quick else None)
    if threads:
        torch.set_num_threads(threads)
    cfg, default_minutes = CodesignConfig(), 60.0
    if args.quick:
        cfg, default_minutes = QUICK, 0.3
        if args.minutes is not None:
            args.minutes = min(args.minutes, 0.3)
    cfg = apply_config_overrides(cfg, args)
    if args.design is not None or args.fold is not None or args.generate:
        return use_model(args, cfg)
    if args.seed is not None:
        raise CommandLineError("--seed is the sampling seed of --design, --fold and --generate; training takes --seeds")
    if cfg.baseline_chains < 0 or cfg.baseline_epochs < 1:
        raise CommandLineError(
            f"--baseline-chains must be >= 0 (0: all) and --baseline-epochs >= 1, got "
            f"{cfg.baseline_chains} and {cfg.baseline_epochs}"
        )
    budget = run_budget(
        args.minutes,
        args.steps,
        default_minutes=default_minutes,
        eval_every_minutes=cfg.eval_every_minutes,
        compile=args.compile,
    )
    buckets = check_buckets(args.crop_buckets, cfg)
    out = Path(args.out)
    for seed in args.seeds:
        print(f"[codesign] seed {seed}: training for {budget.describe()}")
        start = time.perf_counter()
        model, res, splits = train_model(
            seed,
            budget,
            cfg,
            out,
            progress=not args.no_progress,
            device=args.device,
            restart=args.restart,
            dataset=args.dataset,
            split=args.split,
            buckets=buckets,
        )
        if res.rank != 0:
            continue  # data-parallel run: rank 0 evaluates and writes
        print(
            f"[codesign] seed {seed}: {res.steps} steps, best validation loss {res.best_val:.3f} (step {res.best_step})"
        )
        if args.train_only:
            continue
        record = evaluate(
            model, splits, cfg, out / f"seed{seed}", seed=seed, device=args.device, progress=not args.no_progress
        )
        record = new_record(
            "codesign",
            "structures",
            seed,
            config=asdict(cfg),
            **budget.record_fields(),
            steps=res.steps,
            best_step=res.best_step,
            best_val=res.best_val,
            wall_time_s=time.perf_counter() - start + res.resumed_elapsed_s,
            **record,
        )
        write_results(out / f"seed{seed}" / "results.json", record)
        print(record["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
