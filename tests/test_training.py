"""rfm.training: the schedule, EMA arithmetic, atomic checkpoints and exact resume."""
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from rfm import training
from rfm.training import EMA, TrainConfig, lr_factor, save_checkpoint, train


def regression_problem():
    torch.manual_seed(0)
    w_true = torch.tensor([[2.0, -1.0, 0.5]])
    model = nn.Linear(3, 1)

    def loss_fn(m, step, gen):
        x = torch.randn(64, 3, generator=gen)
        return ((m(x) - x @ w_true.T) ** 2).mean()

    def val_fn(m):
        x = torch.linspace(-1, 1, 30).reshape(10, 3)
        return float(((m(x) - x @ w_true.T) ** 2).mean())

    return model, loss_fn, val_fn


def test_lr_schedule_values():
    assert lr_factor(0, 0.0, 10, 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 0.0, 10, 0.0) == pytest.approx(1.0)
    assert lr_factor(10, 0.5, 10, 0.0) == pytest.approx(0.5)
    assert lr_factor(10, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(10, 0.25, 10, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_ema_matches_hand_computation():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9)
    values, expected = [1.0, 2.0, 3.0], 0.0
    for n, v in enumerate(values, start=1):
        with torch.no_grad():
            model.weight.fill_(v)
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * v
    assert float(ema.shadow["weight"]) == pytest.approx(expected)
    with ema.apply_to(model):
        assert float(model.weight) == pytest.approx(expected)
    assert float(model.weight) == 3.0


def test_training_reduces_loss_and_selects_best_on_validation():
    model, loss_fn, val_fn = regression_problem()
    before = val_fn(model)
    res = train(model, loss_fn, TrainConfig(lr=0.05, max_steps=300, warmup_steps=10, eval_every=50, ema_decay=0.9,
                                           progress=False), val_fn=val_fn)
    assert res.steps == 300 and res.best_val < 1e-3 * before
    assert [h["step"] for h in res.history] == [50, 100, 150, 200, 250, 300]
    assert res.best_val == min(h["val"] for h in res.history)
    with pytest.raises(ValueError, match="max_steps or max_minutes"):
        train(model, loss_fn, TrainConfig())


def test_time_budget_stops():
    model, loss_fn, _ = regression_problem()
    res = train(model, loss_fn, TrainConfig(max_minutes=0.02, progress=False))
    assert 1.0 <= res.wall_time_s < 10.0 and res.steps > 0


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"a": 1})

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(training.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"a": 2})
    monkeypatch.undo()
    assert torch.load(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_resume_after_a_crash_reproduces_an_uninterrupted_run(tmp_path):
    model_a, loss_fn, val_fn = regression_problem()
    cfg = TrainConfig(lr=0.02, warmup_steps=5, eval_every=20, progress=False, seed=3, max_steps=60,
                      checkpoint_every_minutes=0.0)
    full = train(model_a, loss_fn, cfg, val_fn=val_fn)

    def crashing_loss(m, step, gen):
        if step == 41:
            raise KeyboardInterrupt("killed")
        return loss_fn(m, step, gen)

    ck = tmp_path / "run.pt"
    model_b, _, _ = regression_problem()
    with pytest.raises(KeyboardInterrupt):
        train(model_b, crashing_loss, cfg, val_fn=val_fn, checkpoint_path=ck)
    assert torch.load(ck, weights_only=False)["step"] == 41
    model_c, _, _ = regression_problem()  # a fresh process rebuilds the model
    resumed = train(model_c, loss_fn, cfg, val_fn=val_fn, checkpoint_path=ck)
    assert resumed.steps == 60
    for k, v in full.final_state.items():
        torch.testing.assert_close(resumed.final_state[k], v)
    assert resumed.best_val == pytest.approx(full.best_val)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in full.history]
    assert full.resumed_elapsed_s == 0.0 and 0.0 < resumed.resumed_elapsed_s <= resumed.wall_time_s


def test_resume_from_another_models_checkpoint_names_the_path(tmp_path):
    model, loss_fn, _ = regression_problem()
    cfg = TrainConfig(lr=0.02, warmup_steps=1, progress=False, seed=0, max_steps=3)
    ck = tmp_path / "run.pt"
    train(model, loss_fn, cfg, checkpoint_path=ck)
    other = torch.nn.Linear(7, 2)
    with pytest.raises(ValueError, match="checkpoint_path .*run.pt holds a different model"):
        train(other, lambda m, s, g: m(torch.zeros(1, 7)).sum(), cfg, checkpoint_path=ck)


def test_resume_with_changed_settings_names_them_and_budget_may_grow(tmp_path):
    model, loss_fn, _ = regression_problem()
    cfg = TrainConfig(lr=0.02, warmup_steps=1, progress=False, seed=0, max_steps=3)
    ck = tmp_path / "run.pt"
    train(model, loss_fn, cfg, checkpoint_path=ck, run_config={"hidden": 7, "scale": 16.0})
    with pytest.raises(ValueError, match=r"run.pt was made with other settings \(lr: checkpoint 0.02, now 0.01\)"):
        train(regression_problem()[0], loss_fn, replace(cfg, lr=0.01), checkpoint_path=ck,
              run_config={"hidden": 7, "scale": 16.0})
    with pytest.raises(ValueError, match="scale: checkpoint 16.0, now 8.0"):
        train(regression_problem()[0], loss_fn, cfg, checkpoint_path=ck, run_config={"hidden": 7, "scale": 8.0})
    longer = train(regression_problem()[0], loss_fn, replace(cfg, max_steps=5, eval_every=2), checkpoint_path=ck,
                   run_config={"hidden": 7, "scale": 16.0})
    assert longer.steps == 5 and longer.resumed_elapsed_s > 0
