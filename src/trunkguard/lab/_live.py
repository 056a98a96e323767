"""The lab's live view in the terminal: what each carrier gets, its state, the calls."""

from __future__ import annotations

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ._caller import CallGenerator
from ._carrier import SimCarrier
from ._scenarios import Scenario

STYLE = {"UP": "green", "DOWN": "bold red", "SUSPECT": "yellow", "PROBING": "cyan"}


class LiveView:
    def __init__(self, scenario: Scenario, live: Live | None) -> None:
        self.scenario = scenario
        self.live = live
        self._ticks = 0

    def tick(
        self,
        t: float,
        sims: dict[str, SimCarrier],
        states: dict[str, str],
        generator: CallGenerator,
    ) -> None:
        self._ticks += 1
        if self.live is None or self._ticks % 5:
            return  # about 4 refreshes a second
        self.live.update(self.render(t, sims, states, generator))

    def render(
        self,
        t: float,
        sims: dict[str, SimCarrier],
        states: dict[str, str],
        generator: CallGenerator,
    ) -> Group:
        s = self.scenario
        phase = "before the fault"
        if t >= s.fault_at:
            phase = f"FAULT on {', '.join(s.faulted)}: {s.fault.name}"
        if s.recover_at is not None and t >= s.recover_at:
            phase = "after recovery"
        head = Text.assemble(
            (f"{s.name}", "bold"), f"  {t:5.1f} / {s.duration:.0f} s  ", (phase, "magenta")
        )
        table = Table(box=None, pad_edge=False)
        for col in ("carrier", "simulated as", "router says", "INVITEs received", "answered"):
            table.add_column(col)
        snap = generator.snapshot()
        by_carrier = snap.get("by_carrier", {})
        assert isinstance(by_carrier, dict)
        for name, sim in sims.items():
            counters = sim.counters()
            state = states.get(name, "UP")
            mode = str(counters.get("mode", "?"))
            registrar = counters.get("registrar")
            if isinstance(registrar, dict):
                left = registrar.get("expires_in_s")
                mode += ", unregistered" if left is None else f", registered ({left:.0f} s left)"
            table.add_row(
                name,
                mode,
                Text(state, style=STYLE.get(state, "")),
                str(counters.get("invites", 0)),
                str(by_carrier.get(name, 0)),
            )
        finals = snap.get("finals", {})
        assert isinstance(finals, dict)
        hung = snap.get("hung", 0)
        not_set_up = sum(int(v) for k, v in finals.items() if not str(k).startswith("2"))
        not_set_up += hung if isinstance(hung, int) else 0
        failed = snap.get("failed", 0)
        cut = max(0, (failed if isinstance(failed, int) else 0) - not_set_up)
        calls = Text(
            f"calls started {snap.get('started', 0)}  answered {snap.get('answered', 0)}  "
            f"failed to set up {not_set_up}  in progress {snap.get('in_progress', 0)}"
            + (f"  (cut when their carrier died: {cut})" if cut else "")
        )
        note = Text(
            "a is the cheapest carrier and takes the calls until it fails; watch them move "
            "to b within the same call attempt, and a's state change.",
            style="dim",
        )
        return Group(head, table, calls, note)
