"""The protein user commands end to end (``rdfm dataset build``, ``backbones train/sample``,
``codesign train``, ``design``, ``fold``, ``generate``) on PDB files of ideal chains, through
``gm.cli.main`` as the console script runs them, and their one-line errors (exit code 2)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_STRUCTURE_RUN as TINY
from conftest import write_ideal_pdbs as _write_pdbs

from gm.cli import main

pytest.importorskip("gemmi")
pytest.importorskip("biotite")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A dataset built by ``rdfm dataset build`` and a backbone and a co-design run trained on it."""
    root = tmp_path_factory.mktemp("protein_commands")
    pdbs = _write_pdbs(root / "pdbs")
    data = root / "structures.npz"
    assert main(["dataset", "build", str(root / "pdbs"), "-o", str(data)]) == 0
    assert main(["backbones", "train", "--data", str(data), "--out", str(root / "bb"), *TINY]) == 0
    assert main(["codesign", "train", "--data", str(data), "--out", str(root / "cd"), *TINY]) == 0
    return {
        "root": root,
        "pdbs": pdbs,
        "data": data,
        "bb": root / "bb" / "checkpoint.pt",
        "cd": root / "cd" / "checkpoint.pt",
    }


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_help_lists_the_protein_commands(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for command in ("dataset", "backbones", "codesign", "design", "fold", "generate"):
        assert command in out
    with pytest.raises(SystemExit):
        main(["backbones", "sample", "--help"])
    assert "examples:" in capsys.readouterr().out


def test_dataset_build_writes_a_clustered_dataset(runs, capsys):
    from proteins.data import StructureDataset

    data = StructureDataset.load(runs["data"])
    assert len(data) == 8 and len(torch.unique(data.clusters)) == 8
    assert main(["dataset", "build", str(runs["pdbs"][0]), "-o", str(runs["root"] / "x.npz")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_training_writes_a_checkpoint_metrics_and_resumes(runs, capsys):
    from gm.train import load_trained_weights

    weights = load_trained_weights(runs["bb"])
    assert weights.steps == 2 and weights.run_config["node_dim"] == 16 and weights.run_config["split"] == "cluster"
    assert (runs["root"] / "bb" / "checkpoint.metrics.jsonl").is_file()
    # the same command again resumes: a larger budget continues from step 2
    argv = ["backbones", "train", "--data", str(runs["data"]), "--out", str(runs["root"] / "bb"), *TINY]
    assert main([*argv, "--steps", "3"]) == 0
    assert load_trained_weights(runs["bb"]).steps == 3
    assert "3 steps" in capsys.readouterr().out
    # other settings are refused with the differences listed (exit 2)
    assert main([*argv, "--steps", "4", "--node-dim", "24"]) == 2
    assert "node_dim" in capsys.readouterr().err


def test_backbones_sample_writes_pdbs_of_each_length_reproducibly(runs, tmp_path, capsys):
    from proteins.structures import read_backbone_chains

    argv = ["backbones", "sample", "--checkpoint", str(runs["bb"]), "--lengths", "12", "15", "--n", "2"]
    assert main([*argv, "--steps", "3", "--out", str(tmp_path / "a")]) == 0
    files = sorted(p.name for p in (tmp_path / "a").glob("*.pdb"))
    assert files == ["length12_000.pdb", "length12_001.pdb", "length15_000.pdb", "length15_001.pdb"]
    assert len(capsys.readouterr().out.splitlines()) == 4
    chains = read_backbone_chains(
        tmp_path / "a" / "length15_001.pdb", min_length=1, max_ca_gap=1e9
    )  # untrained: long gaps
    assert len(chains) == 1 and len(chains[0].sequence) == 15
    assert main([*argv, "--steps", "3", "--out", str(tmp_path / "b")]) == 0
    for name in files:
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    assert main([*argv, "--steps", "3", "--seed", "1", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / files[0]).read_text() != (tmp_path / "a" / files[0]).read_text()
    # another rotation schedule, same seed: other backbones
    assert main([*argv, "--steps", "3", "--rotation-rate", "2", "--out", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / files[0]).read_text() != (tmp_path / "a" / files[0]).read_text()


def test_training_snapshots_are_the_weights_of_shorter_runs_and_sample(runs, tmp_path, capsys):
    from gm.train import load_snapshot, load_trained_weights

    out = tmp_path / "snap"
    argv = ["backbones", "train", "--data", str(runs["data"]), "--out", str(out), *TINY]
    assert main([*argv, "--steps", "4", "--snapshots", "0.5", "1"]) == 0
    printed = capsys.readouterr().out
    assert "snapshots step 2, step 4 ->" in printed and "--snapshot MARK" in printed
    assert load_trained_weights(out / "checkpoint.pt").run_config["min_lr_ratio"] == 1.0  # constant after warmup
    half, full = (load_snapshot(out / "snapshots.pt", mark) for mark in (2, 4))
    assert (half["step"], full["step"]) == (2, 4)
    # the half-budget snapshot is the EMA of a 2-step run under the same constant learning rate
    from gm.train import load_checkpoint

    short = tmp_path / "short"
    assert main([*argv[:5], str(short), *TINY, "--min-lr-ratio", "1"]) == 0
    capsys.readouterr()
    shadow = load_checkpoint(short / "checkpoint.pt")["ema"]["shadow"]
    assert shadow and all(torch.allclose(value, half["state"][name]) for name, value in shadow.items())
    assert not all(torch.allclose(value, full["state"][name]) for name, value in shadow.items())
    # sampling a snapshot: other weights than the selected model's, so other backbones
    sample = ["backbones", "sample", "--checkpoint", str(out / "checkpoint.pt"), "--lengths", "12", "--n", "1"]
    assert main([*sample, "--steps", "2", "--out", str(tmp_path / "a")]) == 0
    assert main([*sample, "--steps", "2", "--snapshot", "2", "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    a, b = ((tmp_path / d / "length12_000.pdb").read_text() for d in "ab")
    assert a != b
    # a mark the run did not keep, a run without snapshots, a fraction out of range: one line each
    assert "holds no snapshot at 3.0; it holds: step 2, step 4" in _one_line_error(
        capsys, main([*sample, "--snapshot", "3", "--out", str(tmp_path / "c")])
    )
    no_snapshots = ["backbones", "sample", "--checkpoint", str(runs["bb"]), "--lengths", "12", "--snapshot", "2"]
    assert "train with --snapshots" in _one_line_error(capsys, main([*no_snapshots, "--out", str(tmp_path / "d")]))
    generate = ["generate", "--length", "10", "--checkpoint", str(runs["cd"]), "--snapshot", "2"]  # co-design too
    assert "train with --snapshots" in _one_line_error(capsys, main([*generate, "--out", str(tmp_path / "e")]))
    assert "--snapshots fractions must be in (0, 1]" in _one_line_error(
        capsys, main([*argv, "--steps", "4", "--snapshots", "1.5"])
    )


def test_design_writes_sequences_onto_the_input_backbone(runs, tmp_path, capsys):
    pdb = runs["pdbs"][0]
    argv = ["design", str(pdb), "--checkpoint", str(runs["cd"]), "--n", "3", "--steps", "3", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "native" in out and out.count("recovery") == 3
    lines = (tmp_path / "chain0_A.fasta").read_text().splitlines()
    assert [line.split()[0] for line in lines[::2]] == [">chain0_A_000", ">chain0_A_001", ">chain0_A_002"]
    sequences = lines[1::2]
    assert all(len(s) == 44 and s.isalpha() for s in sequences)
    # the designed PDB keeps the input's own CA coordinates and carries the designed residues
    from proteins.structures import read_backbone_chains

    native = read_backbone_chains(pdb)[0]
    designed = read_backbone_chains(tmp_path / "chain0_A_000.pdb")[0]
    assert torch.allclose(torch.as_tensor(designed.atoms[:, 1]), torch.as_tensor(native.atoms[:, 1]), atol=1e-3)
    assert designed.sequence == sequences[0]


def test_fold_takes_a_sequence_or_a_fasta_file_and_names_nonstandard_letters(runs, tmp_path, capsys):
    common = ["--checkpoint", str(runs["cd"]), "--n", "1", "--steps", "2", "--out", str(tmp_path)]
    assert main(["fold", "MKUVLAOBKLLA", *common]) == 0
    captured = capsys.readouterr()
    assert "B, O, U are not standard amino acids: folded as unknown (X) residues" in captured.err
    assert (tmp_path / "len12_000.pdb").is_file()
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">first protein\nMKVLA\nAGGK\n>second\nMKTAYIAKQR\n")
    assert main(["fold", str(fasta), *common]) == 0
    assert (tmp_path / "first_000.pdb").is_file() and (tmp_path / "second_000.pdb").is_file()
    assert "not standard" not in capsys.readouterr().err


def test_generate_writes_proteins_of_each_length(runs, tmp_path, capsys):
    argv = ["generate", "--length", "10", "14", "--n", "2", "--checkpoint", str(runs["cd"]), "--steps", "2"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.pdb")) == [
        "len10_000.pdb",
        "len10_001.pdb",
        "len14_000.pdb",
        "len14_001.pdb",
    ]
    assert (tmp_path / "len14.fasta").read_text().count(">") == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--length", "0", "--checkpoint", "x.pt"], "--length must be positive"),
        (["generate", "--length", "5", "--checkpoint", "missing.pt"], "--checkpoint missing.pt: no such file"),
        (["backbones", "sample", "--checkpoint", "x.pt", "--lengths", "10", "--n", "0", "--out", "o"], "--n must"),
        (
            ["backbones", "sample", "--checkpoint", "x.pt", "--lengths", "10", "--rotation-rate", "0", "--out", "o"],
            "--rotation-rate must be positive",
        ),
        (["fold", "MK1", "--checkpoint", "x.pt"], "not a one-letter sequence"),
        (["design", "missing.pdb", "--checkpoint", "x.pt"], "structure missing.pdb: no such file"),
        (["backbones", "train", "--data", "missing.npz", "--out", "o", "--steps", "1"], "no such structure dataset"),
        (["generate", "--length", "5", "--checkpoint", "x.pt", "--temperature", "0"], "--temperature must be"),
        # settings are checked before any data is read (the dataset here does not exist)
        (["backbones", "train", "--data", "x.npz", "--out", "o", "--node-dim", "33"], "node_dim must be even"),
        (["codesign", "train", "--data", "x.npz", "--out", "o", "--squared-residues", "-5"], "squared_residues"),
        (["backbones", "train", "--data", "x.npz", "--out", "o", "--min-crop", "200"], "max_crop (128) must be"),
        (["backbones", "train", "--data", "x.npz", "--out", "o", "--threads", "0"], "--threads must be at least 1"),
        # a sequence longer than a file name can be is still a sequence
        (["fold", "M" * 300, "--checkpoint", "x.pt"], "--checkpoint x.pt: no such file"),
    ],
)
def test_bad_requests_are_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, main(argv))
    assert message in err


def test_a_checkpoint_of_the_other_model_is_named_as_such(runs, capsys, tmp_path):
    code = main(["generate", "--length", "8", "--checkpoint", str(runs["bb"]), "--out", str(tmp_path)])
    assert "does not hold a co-design network" in _one_line_error(capsys, code)
    code = main(["backbones", "sample", "--checkpoint", str(runs["data"]), "--lengths", "8", "--out", str(tmp_path)])
    assert f"checkpoint {runs['data']}" in _one_line_error(capsys, code)


def test_presets_set_the_network_and_old_checkpoints_keep_their_settings(runs, tmp_path):
    from gm.train import load_trained_weights
    from proteins.training import PRESETS, BackboneConfig, apply_preset, load_backbone_model, run_settings

    # the small preset is the default network; its later architecture fields are not recorded,
    # so checkpoints written before they existed resume under the same settings
    assert apply_preset(BackboneConfig(), "small") == BackboneConfig()
    assert not {"query_points", "value_points", "transformer_layers"} & set(run_settings(BackboneConfig()))
    frameflow = apply_preset(BackboneConfig(), "frameflow")
    assert run_settings(frameflow)["transformer_layers"] == 2 and frameflow.node_dim == 256
    with pytest.raises(ValueError, match=r"preset must be one of \['frameflow', 'small'\]"):
        apply_preset(BackboneConfig(), "huge")
    # --preset, then --<field> overrides (a shrunken frameflow network: its transformer stays)
    small = ["--node-dim", "16", "--pair-dim", "8", "--blocks", "1", "--heads", "2", "--head-dim", "4"]
    argv = ["backbones", "train", "--data", str(runs["data"]), "--out", str(tmp_path), *TINY, "--preset", "frameflow"]
    assert main([*argv, *small, "--transformer-heads", "2"]) == 0
    settings = load_trained_weights(tmp_path / "checkpoint.pt").run_config
    assert settings["transformer_layers"] == PRESETS["frameflow"]["transformer_layers"] and settings["node_dim"] == 16
    model, config = load_backbone_model(tmp_path / "checkpoint.pt")
    assert config.transformer_layers == 2 and len(model.blocks[0].transformer) == 2


def test_time_power_reaches_the_flow_and_is_recorded_only_when_changed():
    from dataclasses import replace

    from proteins.training import (
        BackboneConfig,
        CodesignConfig,
        backbone_flow,
        check_config,
        codesign_flow,
        run_settings,
    )

    assert "time_power" not in run_settings(BackboneConfig())  # earlier checkpoints keep resuming
    config = replace(BackboneConfig(), time_power=2.0)
    assert run_settings(config)["time_power"] == 2.0
    flow = backbone_flow(config)
    assert flow.time_power == 2.0
    assert codesign_flow(replace(CodesignConfig(), time_power=2.0)).backbone.time_power == 2.0
    # density 2t on [0.01, 1]: the mean is about 2/3 (uniform: about 1/2)
    t = flow.training_times(20000, generator=torch.Generator().manual_seed(0))
    assert abs(float(t.mean()) - (0.01 + 0.99 * 2 / 3)) < 0.01 and float(t.min()) >= 0.01
    with pytest.raises(ValueError, match="time_power must be a positive number"):
        check_config(replace(BackboneConfig(), time_power=0.0))


def test_auxiliary_settings_reach_both_flows_and_are_recorded_only_when_changed():
    from dataclasses import replace

    from proteins.training import (
        BackboneConfig,
        CodesignConfig,
        backbone_flow,
        check_config,
        codesign_flow,
        run_settings,
    )

    names = ("auxiliary_weight", "auxiliary_time_scaled", "auxiliary_cutoff")
    assert not set(names) & set(run_settings(BackboneConfig()))  # earlier checkpoints keep resuming
    frameflow = {"auxiliary_weight": 0.5, "auxiliary_time_scaled": True, "auxiliary_cutoff": 0.0}
    settings = run_settings(replace(BackboneConfig(), **frameflow))
    assert {name: settings[name] for name in names} == frameflow
    for flow in (
        backbone_flow(replace(BackboneConfig(), **frameflow)),
        codesign_flow(replace(CodesignConfig(), **frameflow)).backbone,
    ):
        assert (flow.auxiliary_weight, flow.auxiliary_time_scaled, flow.auxiliary_cutoff) == (0.5, True, 0.0)
    with pytest.raises(ValueError, match="auxiliary_cutoff"):
        check_config(replace(BackboneConfig(), auxiliary_cutoff=-1.0))


def test_objectives_train_on_length_batches_under_a_squared_residue_budget(runs):
    from proteins import BackboneFlow, BackboneNetwork, CodesignFlow, CodesignNetwork
    from proteins.data import StructureDataset

    data = StructureDataset.load(runs["data"])
    sizes = dict(node_dim=16, pair_dim=8, blocks=1, heads=2, head_dim=4)
    for flow, network in ((BackboneFlow(), BackboneNetwork(**sizes)), (CodesignFlow(), CodesignNetwork(**sizes))):
        shapes = []

        def model(x_t, *args, network=network, shapes=shapes, **kwargs):
            mask = next(a for a in args if isinstance(a, torch.Tensor) and a.dtype == torch.bool)
            shapes.append((tuple(x_t.shape[:2]), bool(mask.all())))
            return network(x_t, *args, **kwargs)

        loss_fn = flow.objective(data, batch_size=3, min_length=12, max_length=40, squared_residues=2000)
        g = torch.Generator().manual_seed(0)
        losses = [loss_fn(model, step, g) for step in range(12)]
        assert all(torch.isfinite(loss) for loss in losses)
        for (batch, length), unpadded in shapes:
            assert 12 <= length <= 40 and batch == max(1, min(3, 2000 // length**2)) and unpadded
        assert len({length for (_, length), _ in shapes}) > 3  # one length per batch, varying between batches
    with pytest.raises(ValueError, match="squared_residues"):
        BackboneFlow().objective(data, batch_size=2, squared_residues=0)


def test_backbones_benchmark_curve_evaluates_snapshots_at_budget_fractions(runs, tmp_path, capsys):
    pytest.importorskip("pydssp")
    pytest.importorskip("matplotlib")
    import json

    from benchmarks.backbones import _crossing
    from benchmarks.backbones import main as backbones_main

    argv = ["--quick", "--dataset", str(runs["data"]), "--steps", "6", "--curve", "0.5", "1", "--no-progress"]
    assert backbones_main([*argv, "--out", str(tmp_path), "--threads", "1"]) == 0
    record = json.loads((tmp_path / "seed0" / "results.json").read_text())
    points = record["curve"]["points"]
    assert [p["step"] for p in points] == [3, 6] and [p["mark"] for p in points] == [3.0, 6.0]
    per_step = record["curve"]["residues_per_step"]
    assert 2 * 40 <= per_step <= 2 * 48 and points[1]["residues_seen"] == pytest.approx(6 * per_step)
    assert set(record["curve"]["crossings"]) == {"ca_ca_within_0.1", "clash_rate", "helix", "strand", "ramachandran_js"}
    assert (tmp_path / "seed0" / "curve.png").is_file() and "| real (held out) |" in capsys.readouterr().out
    # crossings: at a snapshot, interpolated in log residues, extrapolated, or never
    assert _crossing([10.0, 100.0], [0.1, 0.2]) == {"met": True, "residues": 10.0, "how": "met at the first snapshot"}
    assert _crossing([10.0, 1000.0], [-1.0, 1.0])["residues"] == pytest.approx(100.0)
    assert _crossing([10.0, 100.0], [-2.0, -1.0])["residues"] == pytest.approx(1000.0)
    assert _crossing([10.0, 100.0], [-1.0, -2.0])["residues"] is None
    # met means met at the last snapshot: a target met early and lost later is not met
    lost = _crossing([10.0, 100.0, 1000.0], [0.1, -0.1, -0.2])
    assert not lost["met"] and lost["residues"] is None and "met at 10 residues, lost by the last" in lost["how"]
    again = _crossing([10.0, 100.0, 1000.0, 10000.0], [-1.0, 1.0, -1.0, 1.0])
    assert again["met"] and again["residues"] == pytest.approx(3162.3, rel=1e-3)  # between the last two


def test_design_of_a_chain_cut_at_missing_residues_designs_the_longest_segment(runs, tmp_path, capsys):
    from proteins.frames import ideal_chain
    from proteins.pdb import write_pdb

    atoms = ideal_chain(torch.full((50,), -1.05), torch.full((50,), -0.8)).float()
    atoms[30:] += torch.tensor([30.0, 0.0, 0.0])  # a chain break after residue 30: two segments
    pdb = write_pdb(tmp_path / "broken.pdb", atoms)
    argv = ["design", str(pdb), "--checkpoint", str(runs["cd"]), "--n", "1", "--steps", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "has 2 segments (cut at missing residues); designing the longest, 30 residues from residue 1" in captured.err
    assert len((tmp_path / "broken_A.fasta").read_text().splitlines()[1]) == 30
