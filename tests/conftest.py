import os
import sys

# geomstats picks its backend at import time; the oracle tests use the pytorch one.
os.environ.setdefault("GEOMSTATS_BACKEND", "pytorch")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("rdfm", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("rdfm")


import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def small_structure_set(tmp_path_factory):
    """A small real structure dataset (.npz): ten cytochromes, two trypsins and two
    dehydrogenases from the data folder's proteins/theseus, so three families (three clusters at
    least) and chains long enough for 40-residue crops. Skips without that data."""
    from benchmarks.paths import data_dir
    from proteins.data import build_structure_dataset, iter_folder_structures

    theseus = data_dir() / "proteins" / "theseus"
    if not theseus.is_dir():
        pytest.skip("needs proteins/theseus (set RDFM_DATA_DIR)")
    files = []
    for family, count in (("cytochromes", 10), ("trypsins", 2), ("ldh", 2)):
        files += sorted((theseus / family).glob("*.pdb*"))[:count]
    folder = tmp_path_factory.mktemp("structures")
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    out = folder / "small.npz"
    report = build_structure_dataset(iter_folder_structures(folder), out)
    assert report.clusters >= 3
    return out


_TORCH_DIR = os.path.dirname(torch.__file__)


class HostReads:
    """Counts the ways a tensor's value reaches the host (``.item()``, ``.tolist()``,
    ``float``/``int``/``bool`` of a tensor) in code outside torch while active: on a GPU each one
    waits for the queued work, so a training or sampling step should make none. CPU stand-in for
    ``torch.cuda.set_sync_debug_mode``. Reads inside torch are not counted: on the CPU its
    optimisers read their CPU-side step counters, which are no device synchronisation on a GPU
    either."""

    METHODS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")

    def __init__(self, monkeypatch):
        self.count = 0
        self.where: list[str] = []
        for name in self.METHODS:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, _name=name, **kwargs):
                caller = sys._getframe(1)
                if not caller.f_code.co_filename.startswith(_TORCH_DIR):
                    self.count += 1
                    self.where.append(f"{_name} at {caller.f_code.co_filename}:{caller.f_lineno}")
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.fixture
def host_reads(monkeypatch):
    """A :class:`HostReads` counter active for the test (its ``count`` may be reset)."""
    return HostReads(monkeypatch)


def graph_breaks(fn, *args, **kwargs) -> list[str]:
    """The torch.compile graph breaks of ``fn(*args, **kwargs)`` (``torch._dynamo.explain``), one
    line each with the reason and the user frame: ``[]`` means ``fullgraph=True`` compiles it."""
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args, **kwargs)
    return [f"{str(b.reason).splitlines()[0]} at {b.user_stack[-1] if b.user_stack else '?'}"
            for b in explained.break_reasons]
