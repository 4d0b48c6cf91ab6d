import os
from pathlib import Path

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
    from gm.paths import data_dir
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


@pytest.fixture
def host_reads():
    """Counts host read-backs outside torch for the rest of the test (``gm.profiling``): its
    ``count`` may be reset, ``where`` says where each read was."""
    from gm.profiling import count_host_reads

    with count_host_reads(cuda=False) as found:
        yield _Counter(found)


class _Counter:
    """A resettable view of :class:`gm.profiling.HostReads`."""

    def __init__(self, found):
        self._found, self._offset = found, 0

    @property
    def count(self) -> int:
        return self._found.reads - self._offset

    @count.setter
    def count(self, value: int) -> None:
        self._offset = self._found.reads - value

    @property
    def where(self) -> list[str]:
        return self._found.where


def graph_breaks(fn, *args, **kwargs) -> list[str]:
    """The torch.compile graph breaks of ``fn(*args, **kwargs)`` (``torch._dynamo.explain``), one
    line each with the reason and the user frame: ``[]`` means ``fullgraph=True`` compiles it."""
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args, **kwargs)
    return [
        f"{str(b.reason).splitlines()[0]} at {b.user_stack[-1] if b.user_stack else '?'}"
        for b in explained.break_reasons
    ]


# ------------------------------------------------------------------------------------------------
# structure-model commands (tests/test_protein_commands.py, tests/test_install.py)

# a tiny network and crops that fit the 44-residue chains; --steps 2 keeps each run to seconds
TINY_STRUCTURE_RUN = [
    "--node-dim", "16", "--pair-dim", "8", "--blocks", "1", "--heads", "2", "--head-dim", "4",
    "--batch", "2", "--min-crop", "40", "--max-crop", "44", "--val-crops", "2", "--warmup-steps", "1",
    "--steps", "2", "--threads", "1", "--no-progress",
]  # fmt: skip


def write_ideal_pdbs(folder: Path, count: int = 8, length: int = 44) -> list[Path]:
    """``count`` PDB files of ideal chains with random, distinct sequences (one cluster each)."""
    from proteins.frames import ideal_chain
    from proteins.pdb import write_pdb
    from proteins.residues import AMINO_ACIDS, THREE_LETTER_CODES

    g = torch.Generator().manual_seed(0)
    paths = []
    for k in range(count):
        phi = (-60.0 + 20 * torch.randn(length, generator=g, dtype=torch.float64)).deg2rad()
        psi = (-45.0 + 20 * torch.randn(length, generator=g, dtype=torch.float64)).deg2rad()
        residues = torch.randint(20, (length,), generator=g)
        paths.append(
            write_pdb(
                folder / f"chain{k}.pdb",
                ideal_chain(phi, psi).float(),
                residue_names=[THREE_LETTER_CODES[AMINO_ACIDS.index(AMINO_ACIDS[int(r)])] for r in residues],
            )
        )
    return paths
