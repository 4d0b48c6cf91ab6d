"""Issue-level input strictness: every bad input named in a ValueError, in paths and schedulers
as in solvers and losses (one test per defect a new user hit)."""

import math

import pytest
import torch

from dfm import CTMCSolver, MixturePath, masked_cross_entropy
from gm import CosineConvexScheduler, ExponentialRateScheduler, LinearScheduler, PolynomialScheduler
from gm.checks import Checks, broadcast_time
from manifolds import SE3, SO3, Euclidean, FlatTorus, Sphere
from rfm import GeodesicPath, ODESolver, rfm_loss

GEN = torch.Generator().manual_seed(0)


def _points(m, n=8, dtype=torch.float64):
    return m.random_base(n, dtype=dtype, generator=torch.Generator().manual_seed(n))


@pytest.mark.parametrize("m", [Sphere(2), FlatTorus(2), SO3(), SE3(), Euclidean(3)], ids=repr)
def test_geodesic_path_names_nan_points_and_times(m):
    path, x1 = GeodesicPath(m), _points(m)
    bad = x1.clone()
    bad.view(8, -1)[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^x1 contains 1 non-finite"):
        path.sample(None, bad, torch.rand(8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^x0 contains 1 non-finite"):
        path.sample(bad, x1, torch.rand(8, dtype=torch.float64))
    t = torch.rand(8, dtype=torch.float64)
    t[2] = float("nan")
    with pytest.raises(ValueError, match=r"^t contains 1 NaN"):
        path.sample(None, x1, t)


@pytest.mark.parametrize("t_bad", [1.5, -0.5])
def test_geodesic_path_does_not_extrapolate(t_bad):
    m = Sphere(2)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\].*do not extrapolate"):
        GeodesicPath(m).sample(None, _points(m), torch.full((8,), t_bad, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        GeodesicPath(m).sample(None, _points(m), t_bad)


@pytest.mark.parametrize(
    "m, off",
    [
        (Sphere(2), lambda x: 1.01 * x),  # non-unit vectors
        (SO3(), lambda x: 1.1 * x),  # scaled rotations
        (FlatTorus(2), lambda x: x.fill_(7.0)),  # an angle outside [0, 2 pi)
        (SE3(), lambda x: x * 1.1),
    ],
    ids=["sphere", "so3", "torus", "se3"],
)
def test_geodesic_path_rejects_points_off_the_manifold_and_says_how_to_fix_it(m, off):
    x1 = off(_points(m).clone())
    with pytest.raises(
        ValueError,
        match=r"^x1: \d+ of 8 points off the manifold; .*project it with "
        r"`manifold\.projx\(x1\)`",
    ):
        GeodesicPath(m).sample(None, x1, torch.rand(8, dtype=torch.float64))


@pytest.mark.parametrize("m", [Sphere(2), SO3(), SE3()], ids=repr)
def test_float32_data_cast_to_float64_is_accepted_and_snapped_onto_the_manifold(m):
    x32 = _points(m, 64, torch.float32)
    x64 = x32.double()
    assert float(m.worst_violation(x64)) > 1e-10  # really off at float64 precision
    s = GeodesicPath(m).sample(None, x64, torch.rand(64, dtype=torch.float64))
    m.check_point(s.x1)  # snapped: on the manifold to float64 precision
    m.check_point(s.x_t)
    torch.testing.assert_close(s.x1, x64, atol=1e-6, rtol=0)  # by no more than the rounding


def test_geodesic_path_rejects_mixed_dtypes_integer_points_and_bad_time_shapes():
    m = Sphere(2)
    x1 = _points(m)
    with pytest.raises(ValueError, match=r"x0 has dtype torch.float32 but x1 has torch.float64; cast"):
        GeodesicPath(m).sample(x1.float(), x1, torch.rand(8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^x1 must be a floating-point tensor, got dtype torch.int64"):
        GeodesicPath(m).sample(None, torch.ones(8, 3, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="t must be a floating-point tensor"):
        GeodesicPath(m).sample(None, x1, torch.ones(8, dtype=torch.long))
    with pytest.raises(ValueError, match="must be a prefix of the batch shape"):
        GeodesicPath(m).sample(None, x1, torch.rand(3, dtype=torch.float64))


def test_per_sample_times_are_a_prefix_of_the_batch_shape():
    # frames (B, N, 4, 4) with t of shape (B,): every residue of a protein at its protein's time
    se3 = SE3()
    x0, x1 = se3.random_base(3, 5, dtype=torch.float64), se3.random_base(3, 5, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    s = GeodesicPath(se3).sample(x0, x1, t)
    assert s.t.shape == (3, 5) and torch.equal(s.t[:, 0], t) and torch.equal(s.t[:, 4], t)
    torch.testing.assert_close(s.x_t[0], x0[0])
    torch.testing.assert_close(s.x_t[2], x1[2])
    assert broadcast_time(0.5, (2, 3), dtype=torch.float32, device=torch.device("cpu")).shape == (2, 3)


def test_validation_can_be_switched_off_for_checked_data():
    m = Sphere(2)
    path = GeodesicPath(m, validate=False)
    x1 = 1.01 * _points(m)  # not checked: the caller promised checked data
    s = path.sample(None, x1, torch.rand(8, dtype=torch.float64))
    assert s.x_t.shape == x1.shape
    with pytest.raises(ValueError, match="prefix"):  # shapes and dtypes are always checked
        path.sample(None, x1, torch.rand(3, dtype=torch.float64))


@pytest.mark.parametrize(
    "sched",
    [LinearScheduler(), PolynomialScheduler(2), CosineConvexScheduler(), ExponentialRateScheduler(3.0)],
    ids=repr,
)
def test_schedulers_check_their_times(sched):
    for method in (sched.__call__, sched.kappa, sched.d_kappa, sched.rate):
        with pytest.raises(ValueError, match=r"t must lie in \[0, 1\], got values in \[1.5, 1.5\]"):
            method(1.5)
        with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
            method(torch.tensor([0.2, -0.5]))
        with pytest.raises(ValueError, match="t contains 1 NaN"):
            method(torch.tensor([0.2, float("nan")]))
        with pytest.raises(ValueError, match="t must be a floating-point tensor"):
            method(torch.tensor([1]))
        with pytest.raises(ValueError, match="t must be a float"):
            method("0.5")
    high = float(sched.kappa(1.0))
    with pytest.raises(ValueError, match="kappa must lie in"):
        sched.inverse(torch.tensor([high + 0.1]))
    torch.testing.assert_close(
        sched.inverse(sched.kappa(torch.tensor([0.0, 0.3, 1.0]))), torch.tensor([0.0, 0.3, 1.0]), atol=1e-5, rtol=0
    )
    assert sched.kappa(torch.tensor(1.5), validate=False).shape == ()  # callers that checked may skip


def test_linear_scheduler_at_1_5_is_an_error_not_1_5():
    with pytest.raises(ValueError):
        LinearScheduler()(1.5)


def test_mixture_path_rejects_nan_times_and_bad_sources():
    path = MixturePath(5, "mask")
    x1 = torch.randint(0, 5, (4, 6), generator=GEN)
    with pytest.raises(ValueError, match="t contains 1 NaN"):
        path.sample(None, x1, torch.tensor([0.1, float("nan"), 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        path.sample(None, x1, torch.tensor([0.1, 1.2, 0.2, 0.3]))
    with pytest.raises(ValueError, match="x0 ids must be in"):
        path.sample(torch.full((4, 6), 9), x1, torch.rand(4))
    with pytest.raises(ValueError, match="x0 must be an integer tensor"):
        path.sample(torch.zeros(4, 6), x1, torch.rand(4))
    # per-sample time over (B, C, L) tokens: t of shape (B,)
    x1 = torch.randint(0, 5, (2, 3, 6), generator=GEN)
    s = path.sample(None, x1, torch.tensor([0.0, 1.0]), generator=GEN)
    assert bool((s.x_t[0] == path.mask_id).all()) and torch.equal(s.x_t[1], x1[1])


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("poison", [float("nan"), float("inf"), float("-inf")])
def test_ctmc_solver_rejects_logits_that_are_not_a_distribution(source, poison):
    path = MixturePath(4, source)

    def posterior(x, t):
        logits = torch.zeros(*x.shape, 4)
        if poison == float("-inf"):
            logits[0, 1] = poison  # a whole row of -inf: no distribution
        else:
            logits[0, 1, 2] = poison
        return logits

    x0 = path.sample_source((2, 5), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="posterior returned logits that are not a distribution"):
        CTMCSolver(path, posterior).sample(x0, steps=4, generator=torch.Generator().manual_seed(1))


def test_losses_reject_empty_batches_and_mixed_dtypes():
    m = Sphere(2)
    s = GeodesicPath(m).sample(None, _points(m)[:0], torch.zeros(0, dtype=torch.float64))
    with pytest.raises(ValueError, match="v_pred is an empty batch"):
        rfm_loss(m, s.dx_t, s)
    s = GeodesicPath(m).sample(None, _points(m), torch.rand(8, dtype=torch.float64))
    with pytest.raises(ValueError, match="v_pred has dtype torch.float32 but sample.dx_t has torch.float64"):
        rfm_loss(m, s.dx_t.float(), s)
    with pytest.raises(ValueError, match="weight of shape"):
        rfm_loss(m, s.dx_t, s, weight=torch.ones(3))
    path = MixturePath(5, "mask")
    x1 = torch.zeros(0, 6, dtype=torch.long)
    with pytest.raises(ValueError, match="x1 is an empty batch"):
        masked_cross_entropy(torch.zeros(0, 6, 5), x1, x1, path)


def test_solvers_and_models_name_integer_and_mixed_dtype_inputs():
    from rfm.models import velocity_mlp

    m = Sphere(2)
    model = velocity_mlp(m, hidden=8, depth=1)
    with pytest.raises(ValueError, match="floating-point"):
        ODESolver(m, model).sample(torch.ones(4, 3, dtype=torch.long), steps=2)
    with pytest.raises(ValueError, match="non-finite"):
        ODESolver(m, model).sample(torch.full((4, 3), float("nan")), steps=2)


def test_checks_read_back_once_and_explain_the_first_failure():
    checks = Checks()
    checks.add(torch.tensor(-1.0), lambda: "never")
    checks.add(torch.tensor(float("nan")), lambda: "second failed")
    checks.add(torch.tensor(2.0), lambda: "third failed")
    with pytest.raises(ValueError, match="^second failed$"):
        checks.run()
    ok = Checks()
    ok.add(torch.tensor(0.0), lambda: "never")
    assert ok.run(torch.tensor(3.5)) == [3.5]
    assert math.isinf(Sphere(2).worst_violation(torch.tensor([[float("inf"), 0.0, 0.0]])))


def test_log_likelihood_accepts_float32_data_cast_to_float64_like_the_path():
    from rfm.models import velocity_mlp

    m = Sphere(2)
    torch.manual_seed(0)
    model = velocity_mlp(m, hidden=8, depth=1).double()
    x32 = _points(m, 16, torch.float32)
    ll = ODESolver(m, model).log_likelihood(x32.double(), steps=4)
    ll_projected = ODESolver(m, model).log_likelihood(m.projx(x32.double()), steps=4)
    torch.testing.assert_close(ll, ll_projected)
    with pytest.raises(ValueError, match=r"x1: .*off the manifold"):
        ODESolver(m, model).log_likelihood(1.01 * x32.double(), steps=4)
    with pytest.raises(ValueError, match=r"x0: .*off the manifold"):  # a source is not data: strict
        ODESolver(m, model).sample(x32.double(), steps=2)


def test_path_sources_are_strict_and_time_messages_count_the_times_given():
    se3 = SE3()
    x1 = se3.random_base(4, 5, dtype=torch.float64)
    x0_rounded = se3.random_base(4, 5, dtype=torch.float32).double()
    with pytest.raises(ValueError, match=r"^x0: .*off the manifold"):
        GeodesicPath(se3).sample(x0_rounded, x1, torch.rand(4, dtype=torch.float64))
    t = torch.tensor([0.1, float("nan"), 0.2, 0.3], dtype=torch.float64)
    with pytest.raises(ValueError, match="^t contains 1 NaN"):  # one per sample, not per residue
        GeodesicPath(se3).sample(None, x1, t)
    path = MixturePath(5, "mask")
    with pytest.raises(ValueError, match="^t contains 1 NaN"):
        path.sample(None, torch.zeros(4, 3, 6, dtype=torch.long), torch.tensor([0.1, float("nan"), 0.2, 0.3]))


def test_validate_false_skips_the_read_back_of_token_paths_and_transformers():
    from dfm.transformer import TokenTransformer

    path = MixturePath(5, "mask", validate=False)
    s = path.sample(None, torch.zeros(2, 6, dtype=torch.long), torch.tensor([2.0, 0.5]))  # not checked: promised
    assert s.x_t.shape == (2, 6)
    model = TokenTransformer(6, 5, width=16, depth=1, heads=2, max_len=8, validate=False)
    assert model(torch.zeros(2, 6, dtype=torch.long), torch.tensor([0.2, 0.4])).shape == (2, 6, 5)
    model.validate = True
    with pytest.raises(ValueError, match="t must lie in"):
        model(torch.zeros(2, 6, dtype=torch.long), torch.tensor([0.2, 1.4]))


def test_rfm_loss_weights_are_per_sample_like_times():
    se3 = SE3()
    s = GeodesicPath(se3).sample(None, se3.random_base(3, 3, dtype=torch.float64), torch.rand(3, dtype=torch.float64))
    v = torch.zeros_like(s.dx_t)
    per = rfm_loss(se3, v, s, reduction="none")
    w = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(rfm_loss(se3, v, s, weight=w, reduction="none"), per * w[:, None])
    with pytest.raises(ValueError, match="weight of shape"):
        rfm_loss(se3, v, s, weight=torch.ones(1, 3, 3, dtype=torch.float64))


def test_scheduler_inverse_accepts_its_own_end_values_and_mask_elbo_needs_kappa_one():
    from dfm import mask_elbo

    s = ExponentialRateScheduler(0.3)
    torch.testing.assert_close(s.inverse(s.kappa(torch.ones(3))), torch.ones(3))
    path = MixturePath(4, "mask", scheduler=ExponentialRateScheduler(2.0))
    with pytest.raises(ValueError, match="mask_elbo needs a scheduler that reaches the data"):
        mask_elbo(lambda x, t: torch.zeros(*x.shape, 4), path, torch.zeros(2, 5, dtype=torch.long))
    inf_logits = lambda x, t: torch.zeros(*x.shape, 4).index_fill(-1, torch.tensor([0]), float("inf"))  # noqa: E731
    with pytest.raises(ValueError, match="not a distribution"):
        mask_elbo(inf_logits, MixturePath(4, "mask"), torch.ones(2, 5, dtype=torch.long))
