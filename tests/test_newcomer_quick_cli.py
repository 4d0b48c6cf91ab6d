"""Issue #28 (a newcomer's report): ``--quick`` runs that take minutes in silence, and command
lines that fail with the wrong message.

- ``codesign --quick`` trains its feature-MLP baseline on a small random subset of the training
  chains for a few epochs (it trained on every chain, for minutes, without a word), and every
  long evaluation phase says on stderr what it is doing;
- ``text --quick`` shares one small training budget among its models (it gave each model 0.4
  min: two and a half minutes for the five defaults), announces its evaluation phases, and the
  snapshots' clock starts with the trainer's (its set-up is not training time);
- quick runs use one thread unless ``--threads`` says otherwise;
- ``codesign --design / --fold / --generate`` point to the user commands (``rdfm design`` ...,
  tested in tests/test_protein_commands.py); ``text sample --template`` without holes names the
  ``--hole`` character.

Timing is never asserted: the tests check the settings a quick run picks and what it prints."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch

from benchmarks import codesign, text
from benchmarks.__main__ import main as benchmarks_main
from benchmarks.text_data import Corpus
from gm.cli import CommandLineError
from proteins import training


def _ideal_dataset(n_chains: int, length: int = 30, seed: int = 0):
    """A StructureDataset of ``n_chains`` ideal random-coil chains with random sequences, one
    cluster each (no data files needed)."""
    from proteins.data import AMINO_ACIDS, StructureDataset
    from proteins.frames import ideal_chain

    g = torch.Generator().manual_seed(seed)
    atoms, sequences = [], []
    for k in range(n_chains):
        phi = (-90.0 + 30 * torch.randn(length, generator=g, dtype=torch.float64)).deg2rad()
        psi = (130.0 + 30 * torch.randn(length, generator=g, dtype=torch.float64)).deg2rad()
        atoms.append(ideal_chain(phi, psi) + 100.0 * k)
        sequences.append("".join(AMINO_ACIDS[int(i)] for i in torch.randint(20, (length,), generator=g)))
    offsets = np.cumsum([0] + [len(s) for s in sequences])
    return StructureDataset(
        torch.cat(atoms).numpy(),
        offsets,
        sequences,
        [f"f{i}.pdb" for i in range(n_chains)],
        ["A"] * n_chains,
        np.arange(n_chains),
        starts=[1] * n_chains,
    )


def _toy_corpus(monkeypatch) -> None:
    body = "in the beginning god created the heaven and the earth. " * 40
    corpus = Corpus(train=body * 4, val=body, test=body, chars=" .abcdefghilnortvw")
    monkeypatch.setattr(text, "load_kjv", lambda: corpus)


# ------------------------------------------------------------------------------------------------
# 5. --quick is quick


def test_codesign_quick_trains_the_baseline_on_a_small_subset_for_few_epochs():
    full, quick = codesign.CodesignConfig(), codesign.QUICK
    # the published full run is unchanged: every training chain, 30 epochs
    assert full.baseline_chains == 0 and full.baseline_epochs == 30
    assert 0 < quick.baseline_chains <= 64 and quick.baseline_epochs <= 5
    # evaluation-only settings: a checkpoint resumes across them
    assert {"baseline_chains", "baseline_epochs"} <= training.EVALUATION_FIELDS


def test_feature_classifier_uses_a_random_subset_of_chains_and_reports_progress(monkeypatch, capsys):
    train, val = _ideal_dataset(12), _ideal_dataset(3, seed=1)
    seen = []
    from proteins import design_evaluation

    table = design_evaluation.structure_feature_table

    def recording_table(dataset, max_length, chains=None):
        seen.append((dataset, chains))
        return table(dataset, max_length, chains)

    monkeypatch.setattr(design_evaluation, "structure_feature_table", recording_table)
    mlp = codesign.train_feature_classifier(train, val, seed=3, max_length=48, epochs=2, chains=4, progress=True)
    assert isinstance(mlp, torch.nn.Module)
    (train_seen, subset), (val_seen, val_chains) = seen
    assert train_seen is train and val_seen is val and val_chains is None  # validation: every chain
    assert len(subset) == len(set(subset)) == 4 and all(0 <= i < 12 for i in subset)
    assert subset != [0, 1, 2, 3]  # random (seeded), not the first chains of the file order
    err = capsys.readouterr().err
    assert "[codesign] feature MLP baseline: structure features of 4 training chains (a random subset of 12)" in err
    assert "[codesign] feature MLP baseline: training on " in err and "residues for 2 epochs" in err
    assert "[codesign] feature MLP baseline: done in" in err
    seen.clear()
    codesign.train_feature_classifier(train, val, seed=3, max_length=48, epochs=1, chains=4)
    assert seen[0][1] == subset  # the same seed, the same subset
    assert capsys.readouterr().err == ""  # progress is off by default

    seen.clear()
    codesign.train_feature_classifier(train, val, seed=3, max_length=48, epochs=1, chains=50)
    assert seen[0][1] is None  # more chains asked for than there are: all of them
    for kwargs, name in ((dict(chains=0), "chains"), (dict(epochs=0), "epochs"), (dict(max_length=0), "max_length")):
        with pytest.raises(ValueError, match=name):
            codesign.train_feature_classifier(train, val, seed=0, **kwargs)


def test_codesign_rejects_a_negative_baseline_subset(tmp_path):
    with pytest.raises(CommandLineError, match="--baseline-chains"):
        codesign.main(["--quick", "--baseline-chains", "-1", "--out", str(tmp_path), "--threads", "1"])


def test_codesign_quick_run_says_what_each_evaluation_phase_does(small_structure_set, tmp_path, capsys):
    # every chain its own cluster, so that the test split holds more than one chain
    with np.load(small_structure_set, allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files}
    arrays["cluster"] = np.arange(len(arrays["cluster"]))
    dataset = tmp_path / "one_cluster_per_chain.npz"
    np.savez(dataset, **arrays)
    argv = [
        "--quick",
        "--steps",
        "2",
        "--dataset",
        str(dataset),
        "--out",
        str(tmp_path / "run"),
        "--threads",
        "1",
        "--eval-chains",
        "2",
        "--baseline-chains",
        "3",
    ]
    assert codesign.main(argv) == 0
    err = capsys.readouterr().err
    for phase in (
        "inverse folding, model, CTMC (T = 1): sampling 2 proteins",
        "folding: sampling 2 proteins",
        "co-generation: sampling 2 proteins",
        "feature MLP baseline: structure features of 3 training",
        "feature MLP baseline: training on",
        "folding: TM-scores",
        "co-generation: secondary structure, backbone statistics and all-against-all TM-align of the 2",
    ):
        assert f"[codesign] {phase}" in err, phase
    record = json.loads((tmp_path / "run" / "seed0" / "results.json").read_text())
    assert record["config"]["baseline_chains"] == 3 and record["config"]["baseline_epochs"] == 5

    # --no-progress: the evaluation is silent on stderr
    argv = [*argv[:-2], "--no-progress"]
    assert codesign.main([*argv, "--out", str(tmp_path / "quiet")]) == 0
    assert "[codesign]" not in capsys.readouterr().err


def test_text_quick_shares_one_budget_among_the_models_and_announces_evaluation(tmp_path, monkeypatch, capsys):
    _toy_corpus(monkeypatch)
    argv = [
        "--quick",
        "--steps",
        "2",
        "--minutes",
        "5",
        "--models",
        "ar",
        "masked",
        "--width",
        "16",
        "--depth",
        "1",
        "--heads",
        "1",
        "--eval-chunks",
        "8",
        "--n-samples",
        "2",
        "--sample-steps",
        "4",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert text.main(argv) == 0
    record = json.loads((tmp_path / "results_seed0.json").read_text())
    # --quick caps each model's minutes at its share of the quick budget
    assert record["budget_minutes"] == pytest.approx(text.QUICK_MINUTES / 2)
    assert text.QUICK_MINUTES <= 0.3
    err = capsys.readouterr().err
    assert "[text] ar: test bits per character on 8 windows" in err
    assert "[text] ar: sampling 2 sequences of 64 tokens (ancestral" in err
    assert err.count("[text] masked: sampling 2 sequences") == 2  # its two samplers

    assert text.main([*argv, "--no-progress", "--skip-training"]) == 0
    assert "[text]" not in capsys.readouterr().err


def test_text_snapshot_marks_count_from_the_first_training_step(tmp_path, monkeypatch):
    from gm.train import snapshots as snapshots_module

    clock = [100.0]
    monkeypatch.setattr(snapshots_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    model = torch.nn.Linear(2, 2)
    snaps = snapshots_module.BudgetSnapshots(tmp_path / "s.pt", [0.01], prior_s=0.0)  # a mark at 0.6 s
    clock[0] = 105.0  # 5 s of set-up (optimiser, checkpoint) before the first step
    snaps.begin()
    clock[0] = 105.5
    snaps.begin()  # once: later steps do not move the clock
    snaps.step = 7
    snaps.take(model)  # 0.5 s of training: before the mark
    clock[0] = 106.5
    snaps.step = 9
    snaps.take(model)  # past the mark: the state at step 7 stands for it
    saved = snaps.finish()
    assert set(saved) == {0.01} and saved[0.01]["step"] == 7 and saved[0.01]["elapsed_s"] == pytest.approx(0.5)


def test_quick_runs_use_one_thread_unless_told(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    # each command stops (at a check made after the threads are set) before any work
    with pytest.raises(CommandLineError, match="moved to the user command"):
        codesign.main(["--quick", "--generate", "--out", str(tmp_path)])
    with pytest.raises(CommandLineError, match="moved to the user command"):
        codesign.main(["--quick", "--generate", "--threads", "2", "--out", str(tmp_path)])
    with pytest.raises(CommandLineError, match="moved to the user command"):
        codesign.main(["--generate", "--out", str(tmp_path)])  # not quick: torch's default
    tiny = "a b\n" * 30
    monkeypatch.setattr(text, "load_kjv", lambda: Corpus(train=tiny, val="ab\n", test="ab\n", chars="\n ab"))
    for extra in ([], ["--threads", "2"]):
        with pytest.raises(CommandLineError, match="too small"):
            text.main(["--quick", "--models", "ar", "--out", str(tmp_path), *extra])
    assert calls == [1, 2, 1, 2]


def test_text_encode_is_the_character_table_lookup():
    corpus = Corpus(train="", val="", test="", chars="\n !,.abcé")
    sample = "abc, é!\n" * 5 + "."
    assert corpus.encode(sample).tolist() == [corpus.chars.index(c) for c in sample]
    assert corpus.encode(sample).dtype == torch.long and corpus.encode("").shape == (0,)
    assert corpus.decode(corpus.encode(sample)) == sample
    with pytest.raises(ValueError, match="'z' is not in the vocabulary"):
        corpus.encode("abz")


# ------------------------------------------------------------------------------------------------
# 8. command-line errors and options


def test_codesign_benchmark_points_its_old_sampling_options_to_the_user_commands(tmp_path, capsys):
    # design / fold / generate are user commands now (tests/test_protein_commands.py)
    for option, value in (("--design", "x.pdb"), ("--fold", "MKV"), ("--generate", None)):
        argv = ["codesign", option, *([value] if value else []), "--out", str(tmp_path)]
        assert benchmarks_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {option} moved to the user command: rdfm {option[2:]} ") and err.count("\n") == 1


def test_text_sample_of_a_run_without_snapshots_is_a_one_line_error(tmp_path, capsys):
    torch.save({"config": {}, "corpus": None}, tmp_path / "masked_seed0_meta.pt")
    torch.save({}, tmp_path / "masked_seed0_snapshots.pt")
    assert benchmarks_main(["text", "sample", "--out", str(tmp_path), "--model", "masked", "--prompt", "in"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds no snapshots" in err and err.count("\n") == 1


def test_text_template_without_holes_names_the_hole_character(tmp_path, capsys):
    from dfm import MixturePath, infill_template

    for extra, hole in (([], "_"), (["--hole", "#"], "#")):
        code = benchmarks_main(
            ["text", "sample", "--out", str(tmp_path), "--model", "masked", "--template", "no hole here", *extra]
        )
        assert code == 2
        assert capsys.readouterr().err == f"error: --template has no holes ({hole!r} characters) to fill\n"
    with pytest.raises(CommandLineError, match="--hole must be one character"):
        text.main(["sample", "--out", str(tmp_path), "--template", "a__b", "--hole", "__"])
    # the library keeps its own terms: hole ids
    with pytest.raises(ValueError, match=r"template has no hole \(id -1\)"):
        infill_template(torch.tensor([1, 2, 3]), MixturePath(5, "mask"))
