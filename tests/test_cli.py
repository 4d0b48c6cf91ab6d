"""``python -m benchmarks``: budgets of ``--minutes`` / ``--steps``, and the user's errors (an
unusable device, missing data, a checkpoint made under other settings) reported as a short
message with exit code 2 instead of a traceback."""

import pytest
import torch

from benchmarks import __main__ as cli_main
from benchmarks import table
from gm.cli import Budget, CommandLineError, as_budget, run_budget


def test_run_budget_minutes_only_uses_the_time_cadence():
    assert run_budget(None, None, default_minutes=10.0, eval_every_minutes=1.0) == Budget(10.0, None, None, 1.0)
    budget = run_budget(2.5, None, default_minutes=10.0, eval_every_minutes=0.5)
    assert budget == Budget(2.5, None, None, 0.5)
    assert budget.record_fields() == {"budget_minutes": 2.5} and budget.describe() == "2.5 min"
    assert budget.train_fields() == {
        "max_minutes": 2.5,
        "max_steps": None,
        "eval_every": None,
        "eval_every_minutes": 0.5,
        "eval_at_minutes": (),
        "compile": False,
    }
    assert as_budget(2.5, 0.5) == budget and as_budget(budget, 9.0) is budget


def test_run_budget_steps_only_has_no_time_limit_and_validates_as_often_as_the_time_budget_would():
    # default 10 min validated every minute: 10 evaluations, so every 100 of 1000 steps
    budget = run_budget(None, 1000, default_minutes=10.0, eval_every_minutes=1.0)
    assert budget == Budget(None, 1000, 100, None)
    assert budget.record_fields() == {"budget_steps": 1000} and budget.describe() == "1000 steps"
    # a step count the evaluations do not divide: rounded up, so there are at most that many
    assert run_budget(None, 1001, default_minutes=10.0, eval_every_minutes=1.0).eval_every == 101
    # a fixed number of evaluations (text: 5) overrides the time cadence
    assert run_budget(None, 12, default_minutes=10.0, eval_every_minutes=1.0, evaluations=5).eval_every == 3
    # fewer steps than evaluations: every step, never every 0 steps
    assert run_budget(None, 3, default_minutes=10.0, eval_every_minutes=1.0).eval_every == 1
    # a time budget shorter than its cadence still validates (once, at the end)
    assert run_budget(None, 50, default_minutes=0.3, eval_every_minutes=1.0).eval_every == 50


def test_run_budget_steps_and_minutes_both_limit_and_scale_together():
    budget = run_budget(2.0, 400, default_minutes=10.0, eval_every_minutes=0.5)
    # 2 min at one validation per 0.5 min: 4 evaluations, by steps
    assert budget == Budget(2.0, 400, 100, None)
    assert budget.record_fields() == {"budget_minutes": 2.0, "budget_steps": 400}
    assert budget.describe() == "400 steps or 2 min"
    assert budget.scaled(3) == Budget(6.0, 1200, 300, None)  # as many evaluations for 3 classes at once
    with pytest.raises(CommandLineError, match="--steps must be >= 1"):
        run_budget(None, 0, default_minutes=10.0, eval_every_minutes=1.0)
    with pytest.raises(CommandLineError, match="--minutes must be > 0"):
        run_budget(0.0, 10, default_minutes=10.0, eval_every_minutes=1.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("script", ["earth", "proteins", "so3", "text"])
def test_device_cuda_without_cuda_is_one_line_and_exit_code_2(script, tmp_path, capsys):
    code = cli_main.main([script, "--device", "cuda", "--quick", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device cuda: ") and "--device cpu" in lines[0]
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_missing_data_is_reported_without_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RDFM_DATA_DIR", str(tmp_path / "no-data-here"))
    code = cli_main.main(["text", "--quick", "--steps", "1", "--no-progress", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: KJV text not found") and str(tmp_path / "no-data-here") in err
    assert "Traceback" not in err


def test_other_errors_keep_their_traceback(monkeypatch):
    # only the user's errors are shortened: a bug must still show where it happened
    from benchmarks import so3

    def broken(argv):
        raise ValueError("a bug, not a checkpoint problem")

    monkeypatch.setattr(so3, "main", broken)
    with pytest.raises(ValueError, match="a bug"):
        cli_main.main(["so3"])


def _so3(tmp_path, *extra: str) -> list[str]:
    return [
        "so3",
        "--quick",
        "--components",
        "4",
        "--hidden",
        "8",
        "--depth",
        "1",
        "--batch",
        "16",
        "--val-steps",
        "1",
        "--test-steps",
        "2",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path),
        *extra,
    ]


def test_refused_resume_names_each_difference_once_and_both_ways_out(tmp_path, capsys):
    assert cli_main.main(_so3(tmp_path, "--steps", "3")) == 0
    capsys.readouterr()
    # lr is in both the optimiser's config and the script's run settings: listed once
    code = cli_main.main(_so3(tmp_path, "--steps", "3", "--lr", "0.002", "--warmup-steps", "5"))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    checkpoint = tmp_path / "M4" / "seed0" / "checkpoint.pt"
    assert err.splitlines() == [
        f"error: {checkpoint} was made with other settings:",
        "  lr: checkpoint 0.001, now 0.002",
        "  warmup_steps: checkpoint 20, now 5",
        "rerun with --restart to start afresh, or pick a new --out to keep both runs",
    ]
    # the first way out works
    assert cli_main.main(_so3(tmp_path, "--steps", "3", "--lr", "0.002", "--restart")) == 0


def test_resumed_run_says_from_which_step(tmp_path, capsys):
    assert cli_main.main(_so3(tmp_path, "--steps", "3")) == 0
    capsys.readouterr()
    assert cli_main.main(_so3(tmp_path, "--steps", "5")) == 0  # a longer budget extends the run
    captured = capsys.readouterr()
    # said even with --no-progress: a run that starts part-way is worth one line
    resumed = [line for line in captured.err.splitlines() if "resuming" in line]
    assert len(resumed) == 1 and "resuming from step 3 (0.0 minutes done)" in resumed[0]
    assert "5 steps" in captured.out


def _record(budget: dict, seed: int = 0) -> dict:
    return {
        "benchmark": "so3",
        "dataset": "M16",
        "seed": seed,
        "method": "rfm",
        "steps": 100,
        "wall_time_s": 10.0,
        "test_loglik": 0.5,
        "true_test_loglik": 1.0,
        **budget,
    }


def test_table_shows_step_budgets_with_their_unit():
    minutes_only = table.render_tables([_record({"budget_minutes": 10.0})])
    assert "| method | dataset | seeds | budget (min) |" in minutes_only
    assert "| rfm | m16 | 0 | 10 |" in minutes_only
    steps = table.render_tables([_record({"budget_steps": 2000}), _record({"budget_steps": 2000}, seed=1)])
    assert "| method | dataset | seeds | budget |" in steps
    assert "| rfm | m16 | 0 1 | 2000 steps |" in steps and "Note: these records mix" not in steps
    mixed = table.render_tables(
        [_record({"budget_steps": 2000, "budget_minutes": 5.0}), _record({"budget_minutes": 10.0}, seed=1)]
    )
    assert "| rfm | m16 | 0 1 | 2000 steps or 5 min, 10 min |" in mixed
    assert "Note: these records mix budgets: 2000 steps or 5 min, 10 min." in mixed


def test_compile_flag_reaches_the_train_config():
    """--compile [MODE] on every benchmark becomes TrainConfig(compile=...) through the budget."""
    import argparse

    from gm.cli import add_run_arguments, run_budget
    from gm.train import TrainConfig

    parser = argparse.ArgumentParser()
    add_run_arguments(parser, minutes=1.0, out="runs/x")
    for argv, want in (([], False), (["--compile"], True), (["--compile", "reduce-overhead"], "reduce-overhead")):
        args = parser.parse_args(argv)
        for steps in (None, 10):
            budget = run_budget(args.minutes, steps, default_minutes=1.0, eval_every_minutes=0.5, compile=args.compile)
            assert TrainConfig(**budget.train_fields()).compile == want
            assert budget.scaled(2).compile == want


def test_budget_train_config_takes_the_optimisation_settings_of_a_config():
    from dataclasses import dataclass

    @dataclass
    class Config:
        lr: float = 3e-3
        warmup_steps: int = 7
        ema_decay: float = 0.99
        eval_every_minutes: float = 9.0  # the budget's cadence wins
        seed: int = 5  # a config's seed is not the run's
        hidden: int = 64  # not a trainer setting

    budget = run_budget(None, 100, default_minutes=10.0, eval_every_minutes=1.0, compile="default")
    tc = budget.train_config(Config(), seed=2, progress=False, val_name="val NLL")
    assert (tc.lr, tc.warmup_steps, tc.ema_decay) == (3e-3, 7, 0.99)
    assert (tc.max_steps, tc.max_minutes, tc.eval_every, tc.eval_every_minutes) == (100, None, 10, None)
    assert tc.seed == 2 and tc.progress is False and tc.val_name == "val NLL" and tc.compile is True
