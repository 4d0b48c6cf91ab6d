"""Classifier-free guidance: on class-conditional mixtures (R^2 with exact fields, the sphere
with a model trained with label dropout, tokens with an exact posterior) the fraction of
samples a Bayes classifier assigns to the requested class rises with w, and w = 1 is the
conditional model."""

import math

import pytest
import torch

from dfm import CTMCSolver, GuidedPosterior, MixturePath
from gm import LinearScheduler
from gm.guidance import NULL_LABEL, drop_labels, guided_log_probs, guided_velocity
from manifolds import Euclidean, Sphere
from rfm import GaussianMixture, GuidedVelocity, ODESolver, RFMObjective, marginal_fields
from rfm.models import velocity_mlp

WEIGHTS = (0.0, 1.0, 2.0, 4.0)


def test_euclidean_exact_fields():
    # two overlapping classes; the unconditional model is the mixture's field
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    covs = torch.eye(2, dtype=torch.float64).expand(2, 2, 2) * 0.6
    mixture = GaussianMixture(means, covs)
    classes = [GaussianMixture(means[c : c + 1], covs[c : c + 1]) for c in range(2)]
    sched = LinearScheduler()

    def model(x, t, label):
        fields = torch.stack([marginal_fields(m, sched, x, t).velocity for m in (*classes, mixture)])
        index = torch.where(label == NULL_LABEL, 2, label)
        return fields[index, torch.arange(len(x))]

    x0 = torch.randn(3000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.tensor(0.4, dtype=torch.float64)
    torch.testing.assert_close(GuidedVelocity(model, 1, 1.0)(x, t), model(x, t, torch.ones(5, dtype=torch.long)))
    torch.testing.assert_close(
        GuidedVelocity(model, 1, 2.5)(x, t),
        -1.5 * model(x, t, torch.full((5,), NULL_LABEL)) + 2.5 * model(x, t, torch.ones(5, dtype=torch.long)),
    )
    fractions = []
    for w in WEIGHTS:
        samples = ODESolver(Euclidean(2), GuidedVelocity(model, 1, w)).sample(x0, steps=64, method="rk4")
        log_post = torch.stack([c.log_prob(samples) for c in classes], -1)  # equal priors
        fractions.append(float((log_post.argmax(-1) == 1).double().mean()))
    assert fractions[0] == pytest.approx(0.5, abs=0.04)  # w = 0: the unconditional mixture
    assert fractions[1] == pytest.approx(
        float(torch.distributions.Normal(0, math.sqrt(0.6)).cdf(torch.tensor(1.0))), abs=0.03
    )  # w = 1: class 1's own share right of 0
    assert all(a < b for a, b in zip(fractions, fractions[1:])), fractions


def test_sphere_model_trained_with_label_dropout():
    torch.manual_seed(0)
    sphere = Sphere(2)
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    labels = torch.randint(0, 2, (4096,), generator=g)
    data = sphere.projx(centres[labels] + 0.45 * torch.randn(4096, 3, generator=g))
    model = velocity_mlp(sphere, hidden=64, depth=3, num_classes=2, null_label=True)
    objective = RFMObjective(sphere, label_dropout=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(500):
        idx = torch.randint(0, 4096, (256,), generator=g)
        loss = objective(model, data[idx], labels=labels[idx], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x0 = sphere.random_base(2000, generator=torch.Generator().manual_seed(2))
    fractions = []
    with torch.no_grad():
        for w in WEIGHTS:
            samples = ODESolver(sphere, GuidedVelocity(model, 1, w)).sample(x0, steps=32)
            nearest = (samples @ centres.T).argmax(-1)  # Bayes for equal, equally spread classes
            fractions.append(float((nearest == 1).float().mean()))
    assert 0.35 < fractions[0] < 0.65, fractions
    assert all(a < b for a, b in zip(fractions, fractions[1:])), fractions
    assert fractions[-1] > 0.9, fractions


def test_tokens_exact_posterior():
    vocab, length = 4, 6
    class_probs = torch.tensor([[0.55, 0.25, 0.15, 0.05], [0.10, 0.20, 0.30, 0.40]], dtype=torch.float64)
    path = MixturePath(vocab, "mask")

    def model(x, t, label):
        known = x != path.mask_id
        tokens = torch.where(known, x, 0)
        loglik = torch.stack([(torch.log(class_probs[c])[tokens] * known).sum(-1) for c in range(2)], -1)
        post_class = torch.softmax(loglik, -1)  # p(c | unmasked tokens), equal priors
        unconditional = torch.log(post_class @ class_probs)[:, None, :].expand(-1, x.shape[1], -1)
        conditional = torch.log(class_probs[label.clamp(min=0)])[:, None, :].expand(-1, x.shape[1], -1)
        return torch.where((label == NULL_LABEL)[:, None, None], unconditional, conditional).float()

    x0 = path.sample_source((4000, length))
    fractions = []
    for w in WEIGHTS:
        solver = CTMCSolver(path, GuidedPosterior(model, 1, w))
        x1 = solver.sample(
            x0, steps=length * 4, generator=torch.Generator().manual_seed(0), dtype_categorical=torch.float64
        )
        score = (torch.log(class_probs[1])[x1] - torch.log(class_probs[0])[x1]).sum(-1)
        fractions.append(float((score > 0).double().mean()))
    # w = 1: exactly the class-1 model; the Bayes accuracy of independent length-6 draws from it
    exact = torch.distributions.Categorical(probs=class_probs[1])
    draws = exact.sample(
        (200000, length),
    )
    ref = float(((torch.log(class_probs[1])[draws] - torch.log(class_probs[0])[draws]).sum(-1) > 0).double().mean())
    assert fractions[1] == pytest.approx(ref, abs=0.03)
    assert fractions[0] == pytest.approx(0.5, abs=0.1)  # w = 0: the mixture (not symmetric: ~ half)
    assert all(a < b for a, b in zip(fractions, fractions[1:])), fractions


def test_guidance_errors_and_helpers():
    with pytest.raises(ValueError, match="w must be a finite number >= 0"):
        GuidedVelocity(lambda x, t, y: x, 0, -0.5)
    with pytest.raises(ValueError, match="w must be a finite number >= 0"):
        GuidedPosterior(lambda x, t, y: x, 0, float("nan"))
    with pytest.raises(ValueError, match="p must be a probability"):
        drop_labels(torch.zeros(3, dtype=torch.long), 1.5)
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        drop_labels(torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match="label_dropout must be a probability"):
        RFMObjective(Sphere(2), label_dropout=-0.1)
    with pytest.raises(ValueError, match="null_label needs a class-conditional model"):
        velocity_mlp(Sphere(2), hidden=8, depth=1, null_label=True)
    with pytest.raises(ValueError, match=r"label values must be in \[0, 2\)"):
        velocity_mlp(Sphere(2), hidden=8, depth=1, num_classes=2)(torch.tensor([[0.0, 0, 1]]), 0.5, torch.tensor([-1]))
    dropped = drop_labels(torch.zeros(10000, dtype=torch.long), 0.3, torch.Generator().manual_seed(0))
    assert abs(float((dropped == NULL_LABEL).float().mean()) - 0.3) < 0.02
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    torch.testing.assert_close(guided_velocity(a, b, 0.0), b)
    torch.testing.assert_close(guided_log_probs(a, b, 1.0), torch.log_softmax(a, -1))
    torch.testing.assert_close(guided_log_probs(a, b, 2.0).exp().sum(-1), torch.ones(3))


def test_token_transformer_trained_with_label_dropout():
    from dfm import masked_cross_entropy
    from dfm.transformer import TokenTransformer

    vocab, length = 4, 6
    class_probs = torch.tensor([[0.55, 0.25, 0.15, 0.05], [0.10, 0.20, 0.30, 0.40]])
    path = MixturePath(vocab, "mask")
    torch.manual_seed(0)
    model = TokenTransformer(
        vocab + 1,
        vocab,
        width=32,
        depth=2,
        heads=2,
        max_len=length,
        time_conditioning=False,
        num_classes=2,
        null_label=True,
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        labels = torch.randint(0, 2, (256,), generator=g)
        x1 = torch.multinomial(class_probs[labels], length, replacement=True, generator=g)
        t = torch.rand(256, generator=g)
        x_t = path.sample(None, x1, t, generator=g).x_t
        logits = model(x_t, label=drop_labels(labels, 0.2, g))
        loss = masked_cross_entropy(logits, x1, x_t, path)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x0 = path.sample_source((2000, length))
    fractions = []
    with torch.no_grad():
        for w in WEIGHTS:
            x1 = CTMCSolver(path, GuidedPosterior(model, 1, w)).sample(
                x0, steps=12, generator=torch.Generator().manual_seed(1)
            )
            score = (torch.log(class_probs[1])[x1] - torch.log(class_probs[0])[x1]).sum(-1)
            fractions.append(float((score > 0).float().mean()))
    assert 0.35 < fractions[0] < 0.65, fractions
    assert all(a < b for a, b in zip(fractions, fractions[1:])), fractions
    with pytest.raises(ValueError, match="label is required"):
        model(x0)
    with pytest.raises(ValueError, match="label given, but the model is unconditional"):
        TokenTransformer(vocab + 1, vocab, width=8, depth=1, heads=1, time_conditioning=False)(x0, label=0)
