"""Input strictness of the rest of the public API: solvers, the simulate loop, discrete losses,
the token transformer and the manifolds' public methods. One test per defect found: each bad
input used to give a raw torch error, a silent NaN, a silent wrong shape or result; now it is a
ValueError naming the argument and the problem."""

import numpy as np
import pytest
import torch

from dfm import CTMCSolver, MixturePath, mask_elbo, masked_cross_entropy, mixture_generalized_kl
from dfm.solver import MixtureJumpProcess
from dfm.transformer import TokenTransformer
from gm import JointProcess, Process, data_end_time_grid, make_time_grid, simulate
from manifolds import SE3, SO3, Euclidean, FlatTorus, Product, Sphere
from rfm import ManifoldFlowProcess, ODESolver, riemannian_divergence
from rfm.models import velocity_mlp

MANIFOLDS = [Sphere(2), FlatTorus(2), SO3(), SE3(), Euclidean(3), Product(Sphere(2), FlatTorus(1))]


def _points(m, *batch, dtype=torch.float64, seed=0):
    return m.random_base(*batch, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def _rotation(x, t):
    """A tangent field on S^2 (rotation about z)."""
    return torch.stack([-x[..., 1], x[..., 0], torch.zeros_like(x[..., 0])], -1)


def _nan_field(x, t):
    return torch.full_like(x, float("nan"))


# ---------------------------------------------------------------------------------- rfm solver
def test_points_and_model_of_different_dtypes_name_both_dtypes():
    m = Sphere(2)
    model32 = velocity_mlp(m, hidden=8, depth=1)
    x64 = _points(m, 4)
    both = r"points of dtype torch.float64 .*parameters are torch.float32.*model.to\(torch.float64\)"
    with pytest.raises(ValueError, match=both):  # was: RuntimeError mat1 and mat2 must have the same dtype
        ODESolver(m, model32).sample(x64, steps=2)
    with pytest.raises(ValueError, match=both):
        ODESolver(m, model32).log_likelihood(x64, steps=2)
    with pytest.raises(ValueError, match=both):
        riemannian_divergence(m, model32, x64, 0.5)
    with pytest.raises(ValueError, match=r"points of dtype torch.float32 .*parameters are torch.float64"):
        ODESolver(m, velocity_mlp(m, hidden=8, depth=1).double()).sample(x64.float(), steps=2)
    # a velocity returned in another floating dtype (e.g. bfloat16 under autocast) is cast: the state keeps its dtype
    out = ODESolver(m, lambda x, t: _rotation(x, t).float()).sample(x64, steps=4)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ODESolver(m, _rotation).sample(x64, steps=4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_non_finite_velocities_raise_instead_of_returning_nan_samples(method):
    m = Sphere(2)
    x0 = _points(m, 4)
    with pytest.raises(ValueError, match=r"non-finite points: 4 of 4 samples are NaN/inf at t=1"):
        ODESolver(m, _nan_field).sample(x0, steps=3, method=method)

    def late_nan(x, t):  # NaN only from t = 0.5 on: the intermediates say when it started
        return _rotation(x, t) * (float("nan") if float(t) >= 0.5 else 1.0)

    with pytest.raises(ValueError, match=r"\(first at t=0\.75\)"):
        ODESolver(m, late_nan).sample(x0, time_grid=(0.0, 0.25, 0.5, 0.75, 1.0), return_intermediates=True)
    with pytest.raises(ValueError, match=r"log_likelihood is not finite for 4 of 4 points"):
        ODESolver(m, _nan_field).log_likelihood(x0, steps=2, method=method)
    # checked data in a loop: validate=False skips both read-backs and returns what the solve gave
    assert not bool(torch.isfinite(ODESolver(m, _nan_field).sample(x0, steps=2, validate=False)).any())


@pytest.mark.parametrize("stepping", ["project", "exp"])
def test_velocity_of_the_wrong_shape_or_type_is_named(stepping):
    m = Sphere(2)
    x0 = _points(m, 4)
    with pytest.raises(ValueError, match=r"velocity has shape \(4, 2\) but the points have shape \(4, 3\)"):
        ODESolver(m, lambda x, t: x[..., :2]).sample(x0, steps=2, stepping=stepping)
    with pytest.raises(ValueError, match=r"velocity has shape \(8, 3\)"):  # was: a broadcast error
        ODESolver(m, lambda x, t: torch.zeros(8, 3, dtype=x.dtype)).sample(x0, steps=2, stepping=stepping)
    with pytest.raises(ValueError, match="velocity must be a floating-point tensor, got NoneType"):
        ODESolver(m, lambda x, t: None).sample(x0, steps=2, stepping=stepping, method="midpoint")
    with pytest.raises(ValueError, match=r"points' shape \(8, 3\), got a tensor of shape \(8, 2\)"):
        ODESolver(m, lambda x, t: x[..., :2]).log_likelihood(x0, steps=2, stepping=stepping)
    # an augmented (points, extra) state needs a (velocity, rate) pair
    with pytest.raises(ValueError, match=r"must return a pair \(velocity, rate\)"):
        simulate(
            ManifoldFlowProcess(m), lambda s, t: torch.zeros_like(s[0]), (x0, torch.zeros(4, dtype=x0.dtype)), steps=2
        )


def test_ode_solver_arguments_and_options():
    m = Sphere(2)
    x0 = _points(m, 4)
    with pytest.raises(ValueError, match="manifold must be an rdfm manifold, got str"):
        ODESolver("sphere", _rotation)
    with pytest.raises(ValueError, match="velocity must be callable, got int"):
        ODESolver(m, 3)
    with pytest.raises(ValueError, match="manifold must be an rdfm manifold"):
        ManifoldFlowProcess("sphere")
    solver = ODESolver(m, _rotation)
    with pytest.raises(ValueError, match="n_probes must be a positive integer, got 0"):  # was ignored for "exact"
        solver.log_likelihood(x0, n_probes=0)
    with pytest.raises(ValueError, match="generator must be a torch.Generator or None, got int"):
        solver.log_likelihood(x0, steps=2, divergence="hutchinson", generator=3)
    with pytest.raises(ValueError, match="time_grid must be a sequence of times"):  # was: TypeError new()
        solver.sample(x0, time_grid="abc")
    with pytest.raises(ValueError, match=r"time_grid must be 1-D"):  # was: silently flattened into 4 times
        solver.sample(x0, time_grid=torch.tensor([[0.0, 0.5], [0.6, 1.0]]))
    with pytest.raises(ValueError, match="x0 must be a torch.Tensor, got list"):
        solver.sample([[1.0, 0.0, 0.0]], steps=2)


def test_riemannian_divergence_checks_its_arguments_and_takes_per_sample_times():
    m = Sphere(2)
    x = _points(m, 3, 5)  # (B, N) points

    def field(z, t):  # a t-dependent field; t has the probe dim in front: (k, B) or ()
        t = t.reshape(t.shape + (1,) * (z.dim() - t.dim()))
        return t * _rotation(z, t) + m.proju(z, torch.ones_like(z))

    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    v, div = riemannian_divergence(m, field, x, t)  # t of shape (B,): a prefix of the batch shape (B, N)
    for b in range(3):
        vb, div_b = riemannian_divergence(m, field, x[b], t[b])
        torch.testing.assert_close(v[b], vb)
        torch.testing.assert_close(div[b], div_b)
    with pytest.raises(ValueError, match="must be a prefix of the batch shape"):
        riemannian_divergence(m, field, x, torch.rand(5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        riemannian_divergence(m, field, x, 1.5)
    with pytest.raises(ValueError, match=r"^x: \d+ of 15 points off the manifold"):
        riemannian_divergence(m, field, 2 * x, 0.5)
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):  # was: jvp's 'Expected primal'
        riemannian_divergence(m, field, x.long(), 0.5)
    with pytest.raises(ValueError, match=r"probes must have shape \(n_probes, \*batch, dim\)"):  # was: broadcast error
        riemannian_divergence(m, field, x, 0.5, probes=torch.ones(1, 3, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="probes has dtype torch.float32 but x has torch.float64"):
        riemannian_divergence(m, field, x, 0.5, probes=torch.ones(1, 3, 5, 2))


# ---------------------------------------------------------------------------------- gm
def test_make_time_grid_rejects_what_is_not_a_grid():
    for grid in ("ab", None, [0.0, None]):
        with pytest.raises(ValueError, match="time_grid must be a sequence of times"):
            make_time_grid(grid)
    with pytest.raises(ValueError, match=r"time_grid must be 1-D .*shape \(2, 2\)"):
        make_time_grid([[0.0, 0.5], [0.7, 1.0]])
    with pytest.raises(ValueError, match="time_grid must hold real times"):
        make_time_grid(torch.tensor([0j, 1j]))
    with pytest.raises(ValueError, match="dtype must be a floating-point torch.dtype, got torch.int64"):
        make_time_grid((0.0, 1.0), 4, dtype=torch.long)  # was: silently the default dtype
    with pytest.raises(ValueError, match="device must be a torch.device"):
        make_time_grid((0.0, 1.0), 4, device="foo")
    with pytest.raises(ValueError, match="repeated times in torch.float16"):  # was: silent zero-width steps
        make_time_grid((0.0, 1.0), 20000, dtype=torch.float16)
    assert make_time_grid((0.0, 1.0), np.int64(4)).numel() == 5  # numpy integers are integers


def test_data_end_time_grid_power_must_be_finite_and_not_collapse_the_grid():
    for power in (float("inf"), float("nan"), "2"):
        with pytest.raises(ValueError, match="power must be a finite number >= 1"):
            data_end_time_grid(4, power)
    with pytest.raises(ValueError, match="power=1000000.0 is too large for steps=4"):  # was: a grid of repeated 1s
        data_end_time_grid(4, 1e6)


class _Add(Process):
    def step(self, x, t, h, model_output):
        return x + h * model_output


def test_simulate_and_joint_process_arguments():
    with pytest.raises(ValueError, match="x_init is an empty tuple"):  # was: IndexError
        simulate(_Add(), lambda x, t: x, (), steps=2)
    with pytest.raises(ValueError, match="model must be callable, got int"):
        simulate(_Add(), 3, torch.ones(3), steps=2)
    with pytest.raises(ValueError, match="processes must be a sequence of gm.Process, got int"):  # was: TypeError len()
        JointProcess(3)
    assert len(JointProcess(p for p in (_Add(), _Add())).processes) == 2  # any iterable
    with pytest.raises(ValueError, match=r"processes\[0\] \(ManifoldFlowProcess\) takes 4 model evaluations"):
        JointProcess([ManifoldFlowProcess(Sphere(2), "rk4"), _Add()])  # was: silently stepped with Euler
    JointProcess([ManifoldFlowProcess(Sphere(2), "euler"), _Add()])
    with pytest.raises(ValueError, match="x must be a tuple of 2 components, got tuple of length 1"):
        JointProcess([_Add(), _Add()]).finalize((torch.ones(2),), torch.tensor(1.0))  # was: zip-truncated


# ---------------------------------------------------------------------------------- dfm losses
def _batch(path, seed=0):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randint(0, path.vocab_size, (4, 6), generator=g)
    t = torch.rand(4, generator=g)
    return x1, path.sample(None, x1, t, generator=g).x_t, t, torch.randn(4, 6, path.vocab_size, generator=g)


@pytest.mark.parametrize("loss", ["ce", "kl"])
def test_discrete_losses_check_token_types_ranges_and_shapes(loss):
    path = MixturePath(5, "mask")
    x1, x_t, t, logits = _batch(path)

    def call(logits=logits, x1=x1, x_t=x_t, path=path, **kw):
        if loss == "ce":
            return masked_cross_entropy(logits, x1, x_t, path, **kw)
        return mixture_generalized_kl(logits, x1, x_t, t, path, **kw)

    call()
    with pytest.raises(ValueError, match="x1 must be an integer tensor of token ids, got torch.float32"):
        call(x1=x1.float())  # was: gather's dtype error
    with pytest.raises(ValueError, match=r"x1 ids must be in \[0, 5\), got range \[5, 9\]"):
        call(x1=x1 + 5)  # was: index out of bounds (a device assert on CUDA)
    with pytest.raises(ValueError, match=r"x_t ids must be in \[0, 6\), got range \[-\d+, -\d+\]"):
        call(x_t=x_t - 10)
    with pytest.raises(ValueError, match=r"x_t ids must be in \[0, 6\)"):
        call(x_t=x_t + 10)  # was: silently read as masked positions
    with pytest.raises(ValueError, match=r"x_t must have the shape of x1 \(4, 6\), got \(1, 6\)"):
        call(x_t=x_t[:1])  # was: silently broadcast
    with pytest.raises(ValueError, match="x_t must be an integer tensor"):
        call(x_t=x_t.float())
    with pytest.raises(ValueError, match="path must be a dfm.MixturePath, got str"):
        call(path="mask")
    with pytest.raises(ValueError, match=r"x_t ids must be in \[0, 5\)"):  # the uniform source has no mask id
        call(x_t=torch.full_like(x1, 5), path=MixturePath(5, "uniform"))
    call(validate=False)  # tokens checked once (e.g. by MixturePath.sample): no host read-back


def test_generalized_kl_times_are_per_sample_and_checked():
    path = MixturePath(5, "mask")
    x1, x_t, t, logits = _batch(path)
    with pytest.raises(ValueError, match=r"t of shape \(3,\) must be a prefix of the batch shape \(4,\)"):
        mixture_generalized_kl(logits, x1, x_t, t[:3], path)  # was: expand's RuntimeError
    with pytest.raises(ValueError, match="t must be a floating-point tensor"):
        mixture_generalized_kl(logits, x1, x_t, torch.ones(4, dtype=torch.long), path)  # was: silently cast
    with pytest.raises(ValueError, match="t contains 1 NaN"):
        mixture_generalized_kl(logits, x1, x_t, torch.tensor([0.1, float("nan"), 0.2, 0.3]), path)
    # (B, C, L) tokens with t of shape (B,): each sample's C sequences at its own time
    x1b, x_tb, logitsb = x1.reshape(2, 2, 6), x_t.reshape(2, 2, 6), logits.reshape(2, 2, 6, 5)
    tb = torch.tensor([0.2, 0.7])
    per_seq = torch.stack(
        [
            mixture_generalized_kl(logitsb[b, c][None], x1b[b, c][None], x_tb[b, c][None], tb[b : b + 1], path)
            for b in range(2)
            for c in range(2)
        ]
    )
    torch.testing.assert_close(mixture_generalized_kl(logitsb, x1b, x_tb, tb, path), per_seq.mean())


def test_mask_elbo_options_and_nan_posteriors():
    path = MixturePath(5, "mask")
    x1 = _batch(path)[0]
    zeros = lambda x, t: torch.zeros(*x.shape, 5)  # noqa: E731
    for n_chars in (0, -3, 2.7, "a"):
        with pytest.raises(ValueError, match="n_chars must be a positive integer"):  # was: ZeroDivisionError / nonsense
            mask_elbo(zeros, path, x1, n_chars=n_chars)
    with pytest.raises(ValueError, match="generator must be a torch.Generator or None, got int"):
        mask_elbo(zeros, path, x1, generator=3)
    with pytest.raises(ValueError, match="path must be a dfm.MixturePath, got str"):
        mask_elbo(zeros, "mask", x1)
    with pytest.raises(ValueError, match="posterior must be callable"):
        mask_elbo(None, path, x1)
    with pytest.raises(
        ValueError, match=r"posterior returned logits that are not a distribution .* [1-4] of 4 sequences"
    ):
        mask_elbo(lambda x, t: torch.full((*x.shape, 5), float("nan")), path, x1)  # was: an all-NaN estimate


# ---------------------------------------------------------------------------------- dfm solver
def test_ctmc_solver_arguments_and_posterior_outputs():
    path = MixturePath(5, "mask")
    x0 = path.sample_source((4, 6))
    zeros = lambda x, t: torch.zeros(*x.shape, 5)  # noqa: E731
    solver = CTMCSolver(path, zeros)
    with pytest.raises(ValueError, match="time_grid must be a sequence of times"):  # was: TypeError new()
        solver.sample(x0, time_grid="ab")
    for corrector in (float("inf"), True, "a"):
        with pytest.raises(ValueError, match="corrector must be a finite nonnegative float"):
            solver.sample(x0, steps=4, corrector=corrector)
    with pytest.raises(ValueError, match="corrector strength must be a nonnegative number, got 'a'"):
        solver.sample(x0, steps=4, corrector=lambda t: "a")
    with pytest.raises(ValueError, match="corrector strength must be a finite nonnegative number, got inf"):
        solver.sample(x0, steps=4, corrector=lambda t: float("inf"))
    with pytest.raises(ValueError, match="generator must be a torch.Generator or None, got int"):
        solver.sample(x0, steps=2, generator=3)
    with pytest.raises(ValueError, match="posterior must return floating-point logits, got dtype torch.int64"):
        CTMCSolver(path, lambda x, t: torch.zeros(*x.shape, 5, dtype=torch.long)).sample(x0, steps=2)  # was: accepted
    with pytest.raises(ValueError, match="posterior must return floating-point logits, got NoneType"):
        CTMCSolver(path, lambda x, t: None).sample(x0, steps=2)  # was: AttributeError
    with pytest.raises(ValueError, match="path must be a dfm.MixturePath, got str"):
        CTMCSolver("mask", zeros)
    with pytest.raises(ValueError, match="posterior must be callable, got int"):
        CTMCSolver(path, 3)
    with pytest.raises(ValueError, match="path must be a dfm.MixturePath, got str"):
        MixtureJumpProcess("mask")


# ---------------------------------------------------------------------------------- transformer
def _transformer():
    torch.manual_seed(0)
    m = TokenTransformer(6, 5, width=16, depth=1, heads=2, max_len=16).double()
    for block in m.blocks:  # adaLN-Zero starts t-independent: give the modulation some weight
        torch.nn.init.normal_(block.modulation.weight, std=0.05)
    return m.eval()


def test_transformer_times_follow_the_per_sample_prefix_rule():
    m = _transformer()
    tokens = torch.randint(0, 6, (2, 3, 7), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.1, 0.9])
    out = m(tokens, t)  # t of shape (B,) with tokens (B, C, L): sample b's C sequences at t[b]
    for b in range(2):
        torch.testing.assert_close(out[b], m(tokens[b], t[b]))  # was: t[c] (trailing alignment)
    with pytest.raises(ValueError, match=r"t of shape \(3,\) must be a prefix of the batch shape \(2, 3\)"):
        m(tokens, torch.rand(3))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        m(tokens, 1.5)  # was: silently extrapolated
    with pytest.raises(ValueError, match="t contains 1 NaN"):
        m(tokens, torch.tensor([0.5, float("nan")]))  # was: NaN logits
    with pytest.raises(ValueError, match="t must be a floating-point tensor"):
        m(tokens, torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match="t must be a float or a floating-point tensor, got str"):
        m(tokens, "0.5")


def test_transformer_tokens_and_constructor_arguments():
    m = _transformer()
    with pytest.raises(ValueError, match="tokens must be integer ids .*, got list"):  # was: AttributeError
        m([[1, 2]], 0.5)
    with pytest.raises(ValueError, match=r"tokens must hold at least one position, got shape \(4, 0\)"):
        m(torch.zeros(4, 0, dtype=torch.long), 0.5)  # was: reshape's RuntimeError
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 6\), got range \[-1, -1\]"):
        m(torch.full((1, 3), -1), 0.5)
    with pytest.raises(ValueError, match="padding_mask must be a bool tensor"):
        m(torch.zeros(1, 3, dtype=torch.long), 0.5, padding_mask=torch.zeros(1, 3, dtype=torch.long))
    for kwargs, name in (({"heads": 0}, "heads"), ({"depth": 0}, "depth"), ({"max_len": 0}, "max_len")):
        with pytest.raises(
            ValueError, match=f"{name} must be a positive integer"
        ):  # was: ZeroDivisionError or accepted
            TokenTransformer(6, 5, **{"width": 16, "depth": 1, "heads": 2, **kwargs})
    with pytest.raises(ValueError, match="vocab_size must be a positive integer, got 0"):
        TokenTransformer(0, 5, width=16, depth=1, heads=2)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        TokenTransformer(6, 5, width=16, depth=1, heads=2, dropout=1.5)


# ---------------------------------------------------------------------------------- manifolds
@pytest.mark.parametrize("m", MANIFOLDS, ids=repr)
def test_random_base_checks_its_arguments(m):
    with pytest.raises(ValueError, match=r"batch_shape must be nonnegative integers, got \(-1,\)"):
        m.random_base(-1)  # was: negative dimension RuntimeError
    with pytest.raises(ValueError, match=r"batch_shape must be nonnegative integers, got \(2.5,\)"):
        m.random_base(2.5)
    with pytest.raises(ValueError, match="dtype must be a floating-point torch.dtype, got torch.int64"):
        m.random_base(2, dtype=torch.long)  # was: "normal_kernel_cpu" not implemented for 'Long'
    with pytest.raises(ValueError, match="generator must be a torch.Generator or None, got int"):
        m.random_base(2, generator=3)
    assert m.random_base((2, 3)).shape == (2, 3, *m.point_shape)  # a shape tuple, as torch.randn takes it


@pytest.mark.parametrize("m", MANIFOLDS, ids=repr)
def test_public_methods_name_integer_points_wrong_shapes_and_mixed_dtypes(m):
    x, y = _points(m, 4), _points(m, 4, seed=1)
    bad_shape = torch.ones(4, 7, dtype=torch.float64)
    for method in (m.base_logprob, m.tangent_basis):
        with pytest.raises(ValueError, match="must be a floating-point tensor"):
            method(x.long())  # was: integer results (base_logprob truncated to int) or raw errors
        with pytest.raises(ValueError, match=r"trailing (shape|dim)"):
            method(bad_shape)  # was: a silent result of the wrong batch shape on some manifolds
    for method in (m.dist, m.logmap):
        with pytest.raises(ValueError, match="y has dtype torch.float32 but x has torch.float64"):
            method(x, y.float())  # was: 'expected scalar type Double but found Float' on SO(3)/SE(3)
    with pytest.raises(ValueError, match="u has dtype torch.float32 but x has torch.float64"):
        m.expmap(x, m.logmap(x, y).float())
    with pytest.raises(ValueError, match="u must be a floating-point tensor"):
        m.check_vector(x, x.long())  # was: torch.finfo() TypeError
    with pytest.raises(ValueError, match="u must be a torch.Tensor, got list"):
        m.check_vector(x, [1.0])


def test_so3_projections_name_integer_and_mixed_dtype_matrices():
    so3 = SO3()
    x = _points(so3, 4)
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        so3.projx(x.long())  # was: linalg.svd's error
    with pytest.raises(ValueError, match="u has dtype torch.float32 but x has torch.float64"):
        so3.proju(x, x.float())
    with pytest.raises(ValueError, match="v has dtype torch.float32 but x has torch.float64"):
        SE3().transp(_points(SE3(), 4), _points(SE3(), 4, seed=1), _points(SE3(), 4, seed=2).float())


@pytest.mark.parametrize("m", MANIFOLDS, ids=repr)
def test_geodesic_times_follow_the_per_sample_prefix_rule(m):
    x, y = _points(m, 3, 3), _points(m, 3, 3, seed=1)  # batch (B, N) with B == N: trailing alignment was silent
    s = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    point, velocity = m.geodesic_between(x, y, s)
    u = m.logmap(x, y)
    point_g, velocity_g = m.geodesic(x, u, s)
    for b in range(3):
        ref_point, ref_velocity = m.geodesic_between(x[b], y[b], s[b])
        torch.testing.assert_close(point[b], ref_point)
        torch.testing.assert_close(velocity[b], ref_velocity)
        torch.testing.assert_close(point_g[b], m.geodesic(x[b], u[b], s[b])[0])
    with pytest.raises(ValueError, match=r"s of shape \(2,\) must be a prefix of the batch shape \(3, 3\)"):
        m.geodesic_between(x, y, s[:2])  # was: a broadcast RuntimeError
    with pytest.raises(ValueError, match="s must be a floating-point tensor"):
        m.geodesic(x, u, torch.ones(3, dtype=torch.long))
