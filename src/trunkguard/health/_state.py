"""Target states and every legal move between them.

Invariants, in plain words:

- A target is in exactly one state. UP and PROBING (for its trial calls) take
  calls; SUSPECT, DOWN, DRAINED and FORCED_DOWN take none.
- Only the rows of TRANSITIONS move a target. An input a state does not list
  is ignored (a probe result for a DRAINED target, say) and changes nothing.
- DOWN is left only through PROBING, and PROBING reaches UP only after good
  probes and trial calls: a carrier never comes back on one lucky OPTIONS.
- DRAINED and FORCED_DOWN are the operator's: health input does not move
  them; RESTORE (or, for FORCED_DOWN, its revert time) does, to UP, or to
  PROBING when the target was out for its health before the operator took it.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    UP = "UP"
    SUSPECT = "SUSPECT"
    DOWN = "DOWN"
    PROBING = "PROBING"
    DRAINED = "DRAINED"
    FORCED_DOWN = "FORCED_DOWN"


class Input(StrEnum):
    TRIP = "trip"  # N faults in a row, failure ratio, K failed probes, port unreachable
    SILENT = "silent"  # several INVITEs unanswered past the adaptive timer
    ANSWERED = "answered"  # a SUSPECT target answered after all
    SILENCE_CONFIRMED = "silence confirmed"  # still no answer a full invite_timeout later
    HOLD_DOWN_OVER = "hold-down over"
    PROBE_FAILED = "probe failed"
    RECOVERED = "recovered"  # good probes, then good trial calls
    TRIAL_FAILED = "trial failed"
    DRAIN = "drain"
    FORCE_DOWN = "force down"
    RESTORE = "restore"
    RESTORE_PROBING = "restore, was out"  # restore of a target that was out before the operator


S, In = State, Input

TRANSITIONS: dict[tuple[State, Input], State] = {
    (S.UP, In.TRIP): S.DOWN,
    (S.UP, In.SILENT): S.SUSPECT,
    (S.SUSPECT, In.TRIP): S.DOWN,
    (S.SUSPECT, In.ANSWERED): S.UP,
    (S.SUSPECT, In.SILENCE_CONFIRMED): S.DOWN,
    (S.DOWN, In.HOLD_DOWN_OVER): S.PROBING,
    (S.PROBING, In.PROBE_FAILED): S.DOWN,
    (S.PROBING, In.TRIAL_FAILED): S.DOWN,
    (S.PROBING, In.TRIP): S.DOWN,
    (S.PROBING, In.RECOVERED): S.UP,
    **{(s, In.DRAIN): S.DRAINED for s in (S.UP, S.SUSPECT, S.DOWN, S.PROBING, S.FORCED_DOWN)},
    **{(s, In.FORCE_DOWN): S.FORCED_DOWN for s in (S.UP, S.SUSPECT, S.DOWN, S.PROBING)},
    (S.DRAINED, In.RESTORE): S.UP,
    (S.FORCED_DOWN, In.RESTORE): S.UP,
    (S.DRAINED, In.RESTORE_PROBING): S.PROBING,
    (S.FORCED_DOWN, In.RESTORE_PROBING): S.PROBING,
}


def transition_table() -> str:
    """The table as text, one legal move per line (``trunkguard states`` prints it)."""
    width = max(len(i.value) for i in Input)
    return "\n".join(
        f"{s.value:<12} --{i.value:-<{width}}--> {n.value}" for (s, i), n in TRANSITIONS.items()
    )
