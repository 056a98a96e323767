"""Quality per carrier and destination group: ASR, PDD, ACD and short calls, against peers.

Health is for faults (a dead trunk, 503s, timeouts): it takes a target out
everywhere. Quality is for choice: a carrier that is up but completes few calls
to one destination (busies that are not, answers that hang up at once) goes to
the back of the plans *for that destination only*. Pure: records and ``now``
in, verdicts and :class:`QualityChange` events out.

What counts. Only the attempts health does not count as faults feed quality:
those that got a final answer of class ``success`` or ``destination_final``
(a 486, a 404, a 200). Timeouts, unreachable targets, 5xx, 401/403 are health's
business and never make a carrier's quality worse (nor better).

- A *seizure* is such an attempt; ASR is the answered ones over all, of the calls
  that ended in the window (an answered call counts when it is over).
- PDD is the mean time from our INVITE to the carrier's first 100/18x.
- ACD is the mean length of the answered calls that ended in the window, on the
  carrier that answered; *short calls* are those shorter than ``short_call`` s.

A figure counts only with enough samples (``min_asr_samples``, ...): 30
seizures for ASR and PDD, 10 answered calls for ACD and short calls by default.

Groups. A number's group is the longest of the configured group prefixes it
starts with (``quality.groups`` and the prefixes of the ``routes:`` rules), else
its first ``group_digits`` digits, else ``*`` (one group for every number).

Demotion. In a group, each carrier is compared with its *peers*: the other
carriers of the group, their samples pooled. It is demoted for the group when,
with enough samples on both sides, one of these holds (``r`` = ``well_below``):

- its ASR is below ``r`` times the peers' ASR;
- its share of calls that are *not* short is below ``r`` times the peers';
- its ACD is below ``r`` times the peers' ACD;
- its PDD is above the peers' divided by ``r``, and longer by ``pdd_margin`` s;
- or an absolute bound is crossed (``min_asr``, ``max_short_share``, ``min_acd``,
  ``max_pdd``; off unless set), which needs no peers.

A demoted carrier is restored once it is halfway back: with ``r`` = (1 +
``well_below``) / 2 in the tests above (0.75 by default), so a figure that
hovers at the threshold does not flip the plans call after call. Without enough
samples (aged out of the window) it is restored, to be judged afresh.

A group's verdicts are worked out again on a call record of that group, at most
once per ``evaluate_every`` second (the samples go in with every record): at a
high call rate, the figures and their text are not made again for each call. A
demoted carrier still gets the calls the others fail over; when its samples
age out of the window it is judged on what is left, so it is re-tested after
at most a window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .health import OutcomeClass
from .proxy import CallRecord

ALL = "*"  # the group of every number when no prefix group matches
MAX_KEYS = 50_000  # (carrier, group) pairs tracked; more are counted, not kept
_COUNTED = frozenset({OutcomeClass.SUCCESS, OutcomeClass.DESTINATION_FINAL})


@dataclass(frozen=True, slots=True)
class QualitySettings:
    window: float = 600.0  # seconds of samples
    min_asr_samples: int = 30
    min_pdd_samples: int = 30
    min_acd_samples: int = 10  # answered calls, for ACD and the short-call share
    short_call: float = 6.0  # an answered call shorter than this is "very short"
    well_below: float = 0.5  # the share of the peers' figure under which a carrier is demoted
    pdd_margin: float = 1.0  # seconds a PDD must also exceed the peers' by
    min_asr: float | None = None  # absolute bounds, with no peers needed; None: off
    max_short_share: float | None = None
    min_acd: float | None = None
    max_pdd: float | None = None
    groups: tuple[str, ...] = ()  # destination prefix groups (digits)
    group_digits: int = 0  # else the number's first digits; 0: one group, "*"
    cap: int = 5_000  # samples kept per (carrier, group) and kind
    evaluate_every: float = 1.0  # seconds: a group's verdicts are worked out at most this often


@dataclass(frozen=True, slots=True)
class QualityFigures:
    """One carrier's figures in one group; a figure is None without enough samples."""

    carrier: str
    group: str
    seizures: int
    answered: int
    asr: float | None
    pdd: float | None
    pdd_samples: int
    ended: int  # answered calls that ended in the window
    acd: float | None
    short_share: float | None

    def summary(self, settings: QualitySettings) -> str:
        parts = []
        if self.asr is not None:
            parts.append(f"ASR {_pct(self.asr)} over {self.seizures} calls")
        if self.short_share is not None and self.short_share > 0:
            parts.append(f"{_pct(self.short_share)} under {settings.short_call:g} s")
        if not parts:
            return f"quality: {self.seizures} calls, {settings.min_asr_samples} needed to judge"
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class QualityChange:
    """A carrier demoted for a group, or back in its cost rank there; ``at``: core clock."""

    carrier: str
    group: str
    demoted: bool
    reason: str
    at: float


def _pct(share: float) -> str:
    return f"{share * 100:.0f} %"


@dataclass(slots=True)
class _Series:
    # (ended, answered, pdd) per seizure; (ended, seconds) per answered call that ended
    seizures: deque[tuple[float, bool, float | None]] = field(default_factory=deque)
    calls: deque[tuple[float, float]] = field(default_factory=deque)
    answered: int = 0
    pdd_sum: float = 0.0
    pdd_n: int = 0
    seconds: float = 0.0
    short: int = 0

    def add_seizure(self, ended: float, answered: bool, pdd: float | None, cap: int) -> None:
        self.seizures.append((ended, answered, pdd))
        self.answered += answered
        if pdd is not None:
            self.pdd_sum += pdd
            self.pdd_n += 1
        if len(self.seizures) > cap:
            self._drop_seizure()

    def add_call(self, ended: float, seconds: float, short: float, cap: int) -> None:
        self.calls.append((ended, seconds))
        self.seconds += seconds
        self.short += seconds < short
        if len(self.calls) > cap:
            self._drop_call(short)

    def _drop_seizure(self) -> None:
        _, answered, pdd = self.seizures.popleft()
        self.answered -= answered
        if pdd is not None:
            self.pdd_sum -= pdd
            self.pdd_n -= 1
        if not self.seizures:
            self.pdd_sum = 0.0

    def _drop_call(self, short: float) -> None:
        _, seconds = self.calls.popleft()
        self.seconds -= seconds
        self.short -= seconds < short
        if not self.calls:
            self.seconds = 0.0

    def trim(self, start: float, short: float) -> None:
        while self.seizures and self.seizures[0][0] < start:
            self._drop_seizure()
        while self.calls and self.calls[0][0] < start:
            self._drop_call(short)


class QualityTracker:
    """Feed it the core's records (:meth:`feed`); the planner reads :meth:`judge`."""

    def __init__(self, settings: QualitySettings | None = None) -> None:
        self.settings = settings or QualitySettings()
        s = self.settings
        if s.window <= 0 or s.cap <= 0 or not 0 < s.well_below < 1:
            raise ValueError("window and cap must be positive, well_below between 0 and 1")
        self._groups = frozenset(g for g in s.groups if g)
        self._longest = max((len(g) for g in self._groups), default=0)
        self._series: dict[str, dict[str, _Series]] = {}  # group -> carrier -> samples
        self._verdicts: dict[tuple[str, str], tuple[bool, str]] = {}
        self._evaluated: dict[str, float] = {}  # group -> when its verdicts were worked out
        self.dropped = 0  # samples of (carrier, group) pairs past MAX_KEYS
        self._keys = 0

    # -- groups ------------------------------------------------------------------------
    def group_of(self, number: str) -> str:
        for end in range(min(len(number), self._longest), 0, -1):
            if number[:end] in self._groups:
                return number[:end]
        digits = self.settings.group_digits
        if digits and len(number) >= digits and number[:digits].isdigit():
            return number[:digits]
        return ALL

    # -- input -------------------------------------------------------------------------
    def feed(self, event: object) -> list[QualityChange]:
        """A ``Runtime`` listener's input: takes call records, ignores every other event."""
        if not isinstance(event, CallRecord):
            return []
        return self.call(event)

    def call(self, record: CallRecord) -> list[QualityChange]:
        s = self.settings
        group = self.group_of(record.number)
        touched = False
        for attempt in record.attempts:
            verdict = attempt.verdict
            if attempt.kind != "response" or verdict is None or verdict.klass not in _COUNTED:
                continue
            series = self._of(attempt.carrier or attempt.target, group)
            if series is None:
                continue
            answered = verdict.klass is OutcomeClass.SUCCESS
            # At the call's end, not the attempt's: an answered call's record comes when
            # it is over, and its seizure must not be older than the window already.
            series.add_seizure(record.ended, answered, attempt.post_dial_delay, s.cap)
            touched = True
        carrier = record.carrier
        if record.answered is not None and carrier is not None:
            series = self._of(carrier, group)
            if series is not None:
                seconds = max(record.ended - record.answered, 0.0)
                series.add_call(record.ended, seconds, s.short_call, s.cap)
                touched = True
        if not touched:
            return []
        last = self._evaluated.get(group)
        if last is not None and 0 <= record.ended - last < s.evaluate_every:
            return []  # the samples are in; the verdicts wait for the next record after that
        return self.evaluate(group, record.ended)

    def _of(self, carrier: str, group: str) -> _Series | None:
        carriers = self._series.setdefault(group, {})
        series = carriers.get(carrier)
        if series is None:
            if self._keys >= MAX_KEYS:
                self.dropped += 1
                return None
            series = carriers[carrier] = _Series()
            self._keys += 1
        return series

    def forget(self, carrier: str) -> None:
        """A carrier left the config: its samples and verdicts go."""
        for carriers in self._series.values():
            if carriers.pop(carrier, None) is not None:
                self._keys -= 1
        for key in [k for k in self._verdicts if k[0] == carrier]:
            del self._verdicts[key]

    # -- reading -----------------------------------------------------------------------
    def figures(self, carrier: str, group: str, now: float) -> QualityFigures:
        series = self._series.get(group, {}).get(carrier)
        if series is None:
            return QualityFigures(carrier, group, 0, 0, None, None, 0, 0, None, None)
        s = self.settings
        series.trim(now - s.window, s.short_call)
        return self._figures(carrier, group, series)

    def _figures(self, carrier: str, group: str, x: _Series) -> QualityFigures:
        s = self.settings
        n, ended = len(x.seizures), len(x.calls)
        return QualityFigures(
            carrier=carrier,
            group=group,
            seizures=n,
            answered=x.answered,
            asr=x.answered / n if n >= s.min_asr_samples else None,
            pdd=x.pdd_sum / x.pdd_n if x.pdd_n >= s.min_pdd_samples else None,
            pdd_samples=x.pdd_n,
            ended=ended,
            acd=x.seconds / ended if ended >= s.min_acd_samples else None,
            short_share=x.short / ended if ended >= s.min_acd_samples else None,
        )

    def judge(self, carrier: str, group: str, now: float) -> tuple[bool, str | None]:
        """For a plan: is ``carrier`` demoted for ``group``, and the figures that say so.

        The verdict of the group's last evaluation (one dict lookup: plans are hot).
        """
        del now
        found = self._verdicts.get((carrier, group))
        if found is None:
            return False, None
        return found

    def snapshot(self, group: str | None, now: float) -> dict[str, dict[str, object]]:
        """Group -> carrier -> figures and verdict, JSON-able (``group``: that one only)."""
        out: dict[str, dict[str, object]] = {}
        for g, carriers in self._series.items():
            if group is not None and g != group:
                continue
            view: dict[str, object] = {}
            for carrier in carriers:
                f = self.figures(carrier, g, now)
                down, text = self.judge(carrier, g, now)
                view[carrier] = {
                    "demoted": down,
                    "why": text,
                    "seizures": f.seizures,
                    "answered": f.answered,
                    "asr": f.asr,
                    "pdd_s": f.pdd,
                    "ended": f.ended,
                    "acd_s": f.acd,
                    "short_share": f.short_share,
                }
            out[g] = view
        return out

    def demoted(self) -> list[tuple[str, str, str]]:
        """Every (carrier, group, why) demoted now."""
        return [(c, g, why) for (c, g), (down, why) in self._verdicts.items() if down]

    # -- verdicts ----------------------------------------------------------------------
    def evaluate(self, group: str, now: float) -> list[QualityChange]:
        """Work the group's verdicts out again; the carriers whose verdict changed."""
        s = self.settings
        carriers = self._series.get(group)
        if not carriers:
            return []
        self._evaluated[group] = now
        start = now - s.window
        for series in carriers.values():
            series.trim(start, s.short_call)
        total = _Series()
        for series in carriers.values():
            total.answered += series.answered
            total.pdd_sum += series.pdd_sum
            total.pdd_n += series.pdd_n
            total.seconds += series.seconds
            total.short += series.short
        n_all = sum(len(x.seizures) for x in carriers.values())
        ended_all = sum(len(x.calls) for x in carriers.values())
        changes: list[QualityChange] = []
        for carrier, x in carriers.items():
            mine = self._figures(carrier, group, x)
            peers = self._peers(total, x, n_all - len(x.seizures), ended_all - len(x.calls))
            before = self._verdicts.get((carrier, group))
            reasons = self._reasons(mine, peers, before is not None and before[0])
            down = bool(reasons)
            text = "; ".join(reasons) if down else mine.summary(s)
            self._verdicts[(carrier, group)] = (down, text)
            if (before is not None and before[0]) != down:
                changes.append(QualityChange(carrier, group, down, text, now))
        return changes

    def _peers(self, total: _Series, x: _Series, n: int, ended: int) -> QualityFigures:
        s = self.settings
        answered = total.answered - x.answered
        pdd_n = total.pdd_n - x.pdd_n
        seconds = total.seconds - x.seconds
        short = total.short - x.short
        return QualityFigures(
            carrier="peers",
            group="",
            seizures=n,
            answered=answered,
            asr=answered / n if n >= s.min_asr_samples else None,
            pdd=(total.pdd_sum - x.pdd_sum) / pdd_n if pdd_n >= s.min_pdd_samples else None,
            pdd_samples=pdd_n,
            ended=ended,
            acd=seconds / ended if ended >= s.min_acd_samples else None,
            short_share=short / ended if ended >= s.min_acd_samples else None,
        )

    def _reasons(self, mine: QualityFigures, peers: QualityFigures, demoted: bool) -> list[str]:
        """Why ``mine`` is well below its peers, if it is. A carrier demoted already must
        come halfway back to its peers to be restored (``r`` is then (1 + well_below) / 2),
        so a figure that hovers at the threshold does not flip the plans with every call."""
        s = self.settings
        r = (1 + s.well_below) / 2 if demoted else s.well_below
        out: list[str] = []
        calls = f"over {mine.seizures} calls"
        if mine.asr is not None:
            if peers.asr is not None and mine.asr < r * peers.asr:
                out.append(f"ASR {_pct(mine.asr)} {calls} (peers {_pct(peers.asr)})")
            elif s.min_asr is not None and mine.asr < s.min_asr:
                out.append(f"ASR {_pct(mine.asr)} {calls} (floor {_pct(s.min_asr)})")
        if mine.short_share is not None:
            short = f"{_pct(mine.short_share)} of {mine.ended} answered calls under "
            short += f"{s.short_call:g} s"
            if peers.short_share is not None and (1 - mine.short_share) < r * (
                1 - peers.short_share
            ):
                out.append(f"{short} (peers {_pct(peers.short_share)})")
            elif s.max_short_share is not None and mine.short_share > s.max_short_share:
                out.append(f"{short} (ceiling {_pct(s.max_short_share)})")
        if mine.acd is not None:
            acd = f"ACD {mine.acd:.1f} s over {mine.ended} answered calls"
            if peers.acd is not None and mine.acd < r * peers.acd:
                out.append(f"{acd} (peers {peers.acd:.1f} s)")
            elif s.min_acd is not None and mine.acd < s.min_acd:
                out.append(f"{acd} (floor {s.min_acd:g} s)")
        if mine.pdd is not None:
            pdd = f"PDD {mine.pdd:.2f} s over {mine.pdd_samples} calls"
            if (
                peers.pdd is not None
                and mine.pdd > peers.pdd / r
                and mine.pdd - peers.pdd >= s.pdd_margin
            ):
                out.append(f"{pdd} (peers {peers.pdd:.2f} s)")
            elif s.max_pdd is not None and mine.pdd > s.max_pdd:
                out.append(f"{pdd} (ceiling {s.max_pdd:g} s)")
        return out


class KnownQuality:
    """Verdicts read from elsewhere (the live router's API), for ``trunkguard route``."""

    def __init__(
        self, tracker: QualityTracker, verdicts: dict[tuple[str, str], tuple[bool, str]]
    ) -> None:
        self._tracker = tracker
        self._verdicts = verdicts

    def group_of(self, number: str) -> str:
        return self._tracker.group_of(number)

    def judge(self, carrier: str, group: str, now: float) -> tuple[bool, str | None]:
        del now
        return self._verdicts.get((carrier, group), (False, None))


class RecordedQuality:
    """The demotions as the event log last recorded them, for ``trunkguard route``.

    ``notices``: (carrier, state, detail) of the log's ``quality`` notices, oldest first;
    a detail reads ``for GROUP: why``.
    """

    def __init__(self, tracker: QualityTracker, notices: list[tuple[str, str, str, str]]) -> None:
        self._tracker = tracker
        self._verdicts: dict[tuple[str, str], tuple[bool, str]] = {}
        for carrier, state, detail, when in notices:
            head, sep, why = detail.partition(": ")
            if not sep or not head.startswith("for "):
                continue
            group = head[4:]
            self._verdicts[(carrier, group)] = (state == "demoted", f"{why} (as of {when})")

    def group_of(self, number: str) -> str:
        return self._tracker.group_of(number)

    def judge(self, carrier: str, group: str, now: float) -> tuple[bool, str | None]:
        del now
        found = self._verdicts.get((carrier, group))
        if found is None or not found[0]:
            return False, None
        return found
