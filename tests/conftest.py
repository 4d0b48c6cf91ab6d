import os

# geomstats picks its backend at import time; the oracle tests use the pytorch one.
os.environ.setdefault("GEOMSTATS_BACKEND", "pytorch")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("rdfm", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("rdfm")
