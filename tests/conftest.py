import os

# geomstats picks its backend at import time; the oracle tests use the pytorch one.
os.environ.setdefault("GEOMSTATS_BACKEND", "pytorch")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("rdfm", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("rdfm")


import pytest  # noqa: E402


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
