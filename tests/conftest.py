"""Suite-wide settings: reproducible Hypothesis runs.

Hypothesis. CI runs on 2 shared cores, often with other work on them. The ``ci`` profile
(the default; ``HYPOTHESIS_PROFILE=dev`` for random exploration) turns off what only
measures the machine's speed: the per-example deadline and the "input generation is slow"
health check. Every other health check stays on, because those point at a bad strategy.
Runs are derandomized with no example database, so a clone fails or passes the same way
each time and a failure shows its example.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
    print_blob=True,
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
