"""Testing the switch on purpose: simulated carriers, a call generator, scenarios, drills."""

from ._cli import main as lab_main
from ._drill import DrillError, DrillResult, run_drill, write_drill_report
from ._scenarios import SCENARIOS, Scenario

__all__ = [
    "SCENARIOS",
    "DrillError",
    "DrillResult",
    "Scenario",
    "lab_main",
    "run_drill",
    "write_drill_report",
]
