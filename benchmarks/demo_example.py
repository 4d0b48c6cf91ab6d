"""The README's Riemannian flow matching example, shipped with the package.

``python -m benchmarks demo`` executes :data:`EXAMPLE_CODE`, so the demo needs no repository
files (an installed package has no README.md). The README shows the same code byte for byte, in
the python block after its ``<!-- demo`` marker; ``tests/test_install.py`` checks that the two
are identical, so edit both together.
"""

from __future__ import annotations

#: The code of the README's rfm example: trains a 256 x 4 MLP flow on the volcano training
#: split for :data:`EXAMPLE_STEPS` steps (float32, fixed seed, so it prints the same number on
#: every machine up to float rounding) and prints the exact test NLL.
EXAMPLE_CODE = """\
import torch
from manifolds import Sphere
from rfm import GeodesicPath, ODESolver, rfm_loss
from rfm.models import velocity_mlp
from benchmarks.earth_data import load_earth
from benchmarks.splits import split_indices

torch.manual_seed(0)
sphere, data = Sphere(2), load_earth("volcano")           # 827 eruptions as unit vectors
train, val, test = (data[i] for i in split_indices(len(data), seed=0))
model, path = velocity_mlp(sphere, hidden=256, depth=4), GeodesicPath(sphere)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for step in range(1500):
    s = path.sample(None, train[torch.randint(len(train), (256,))], torch.rand(256))
    loss = rfm_loss(sphere, model(s.x_t, s.t), s)          # ||v(x_t, t) - dx_t||_g^2
    opt.zero_grad(); loss.backward(); opt.step()
nll = -ODESolver(sphere, model).log_likelihood(test).mean()  # exact, rk4, 32 equal steps
print(f"volcano test NLL after {step + 1} steps: {nll:.3f} nats")
"""

#: The training-step count written in :data:`EXAMPLE_CODE` (as ``range(EXAMPLE_STEPS)``).
EXAMPLE_STEPS = 1500

#: Rough wall time of :data:`EXAMPLE_CODE` on one CPU core, in seconds (13 s measured on a
#: shared 2-core VM), for the demo's announcement of what it is about to do.
EXAMPLE_SECONDS = 15

__all__ = ["EXAMPLE_CODE", "EXAMPLE_SECONDS", "EXAMPLE_STEPS"]
