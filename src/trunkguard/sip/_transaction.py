"""Client and server transactions, INVITE and non-INVITE (RFC 3261 §17, RFC 6026).

Invariants, in plain words:

- A transaction is sans-IO. It is driven by ``start``/``receive``/``respond``/
  ``handle_timer`` with an explicit ``now`` and answers with a list of events:
  bytes to send to its peer, responses for the transaction user, time-outs,
  transport failures, termination. It owns its timers as data
  (``deadline()``); the caller keeps one timer armed for the earliest one.
- Every legal move is a row of the transition table of its class: ``(state,
  input) -> (next state, actions)``. Network input that the table does not
  list is absorbed silently (late and duplicate datagrams are normal);
  transaction-user input it does not list raises :class:`TransactionError`.
- Over a reliable transport nothing is retransmitted: Timers A, E, G are
  never armed and D, I, K are zero (§17.1.1.2, §17.1.2.2, §17.2.1).
- RFC 6026: a 2xx ends neither INVITE transaction at once; they wait in
  ACCEPTED (Timers L and M) so retransmitted 2xx still reach the caller and
  retransmitted INVITEs are absorbed.
- The states of ``ABSORBING`` (COMPLETED, CONFIRMED, ACCEPTED) only answer
  retransmissions until one timer ends them. What they still send is small
  (:attr:`Transaction.last_sent`, :attr:`ClientInvite.ack`): a user that keeps
  many such transactions may replace each by a record of that, and drop the
  rest (the proxy does, see ``proxy/_finished.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from ._errors import TransactionError
from ._message import Request, Response


@dataclass(frozen=True, slots=True)
class TimerConfig:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def timeout(self) -> float:  # Timers B, F, H, J, L, M
        return 64 * self.t1


# -- events -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    """Bytes to send to the transaction's peer."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Deliver:
    """A response for the transaction user (client transactions)."""

    response: Response


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer B or F (no final response) or H (no ACK) fired."""

    timer: str


@dataclass(frozen=True, slots=True)
class TransportFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class Terminated:
    pass


Event = Send | Deliver | TimedOut | TransportFailed | Terminated

# -- states and inputs ------------------------------------------------------------
CALLING = "CALLING"
TRYING = "TRYING"
PROCEEDING = "PROCEEDING"
COMPLETED = "COMPLETED"
CONFIRMED = "CONFIRMED"
ACCEPTED = "ACCEPTED"
TERMINATED = "TERMINATED"

R1XX = "1xx"
R2XX = "2xx"
RFINAL = "300-699"
REQUEST = "request retransmission"
ACK = "ACK"
TU_1XX = "TU 1xx"
TU_2XX = "TU 2xx"
TU_FINAL = "TU 300-699"
ABANDON = "TU abandon"
TRANSPORT_ERROR = "transport error"

Row = tuple[str, tuple[str, ...]]
Table = dict[tuple[str, str], Row]


class Transaction:
    """Shared engine: reads the class's TABLE, runs the named actions."""

    TABLE: ClassVar[Table]
    NETWORK_INPUTS: ClassVar[frozenset[str]]
    INITIAL: ClassVar[str]
    # State -> the timer that ends it, for the states that only absorb retransmissions.
    ABSORBING: ClassVar[dict[str, str]]

    def __init__(self, reliable: bool, timers: TimerConfig) -> None:
        self.state = self.INITIAL
        self.reliable = reliable
        self.cfg = timers
        self.timers: dict[str, float] = {}
        self._intervals: dict[str, float] = {}
        self._last: bytes | None = None
        self._events: list[Event] = []
        self._now = 0.0
        self._message: Response | None = None

    @property
    def last_sent(self) -> bytes | None:
        """The request (client) or the last response (server) a retransmission repeats."""
        return self._last

    def absorbing(self) -> tuple[str, float] | None:
        """(timer, its deadline) while the transaction only absorbs retransmissions, else None."""
        name = self.ABSORBING.get(self.state)
        if name is None:
            return None
        when = self.timers.get(name)
        return None if when is None else (name, when)

    # -- timers ------------------------------------------------------------------
    def deadline(self) -> float | None:
        return min(self.timers.values()) if self.timers else None

    def handle_timer(self, now: float) -> list[Event]:
        out: list[Event] = []
        while self.timers:
            name, when = min(self.timers.items(), key=lambda kv: kv[1])
            if when > now:
                break
            del self.timers[name]
            out += self._input("timer " + name, now)
        return out

    def _arm(self, name: str, delay: float) -> None:
        self.timers[name] = self._now + delay

    # -- table engine ------------------------------------------------------------
    def _input(self, what: str, now: float, message: Response | None = None) -> list[Event]:
        row = self.TABLE.get((self.state, what))
        if row is None:
            if what in self.NETWORK_INPUTS or what.startswith("timer "):
                return []
            raise TransactionError(f"{type(self).__name__}: {what!r} not allowed in {self.state}")
        next_state, actions = row
        entering = next_state == TERMINATED and self.state != TERMINATED
        self._events = []
        self._now = now
        self._message = message
        self.state = next_state
        for action in actions:
            getattr(self, "_a_" + action)()
        # Terminated is reported once, on entry: a row that stays in TERMINATED
        # (ClientInvite's late abandon) must not announce it again.
        if entering:
            self.timers.clear()
            self._events.append(Terminated())
        events, self._events, self._message = self._events, [], None
        return events

    # -- actions shared by all four machines ----------------------------------------
    def _a_deliver(self) -> None:
        assert self._message is not None
        self._events.append(Deliver(self._message))

    def _a_resend(self) -> None:
        if self._last is not None:
            self._events.append(Send(self._last))

    def _a_timeout_b(self) -> None:
        self._events.append(TimedOut("B"))

    def _a_timeout_f(self) -> None:
        self._events.append(TimedOut("F"))

    def _a_timeout_h(self) -> None:
        self._events.append(TimedOut("H"))

    def _a_transport_failed(self) -> None:
        self._events.append(TransportFailed("transport error"))

    def _retransmit(self, name: str, cap: float | None) -> None:
        # Double the interval (capped at T2 for E and G) and resend.
        interval = self._intervals[name] * 2
        if cap is not None:
            interval = min(interval, cap)
        self._intervals[name] = interval
        self._arm(name, interval)
        self._a_resend()

    def _arm_retransmit(self, name: str) -> None:
        if not self.reliable:
            self._intervals[name] = self.cfg.t1
            self._arm(name, self.cfg.t1)

    def _stop(self, *names: str) -> None:
        for name in names:
            self.timers.pop(name, None)

    @classmethod
    def transition_table(cls) -> str:
        """The table as text, one legal move per line (``trunkguard`` prints it in docs)."""
        rows = [
            f"{s:<11} + {i:<22} -> {n:<11} {', '.join(a)}" for (s, i), (n, a) in cls.TABLE.items()
        ]
        return "\n".join(rows)


class ClientInvite(Transaction):
    """INVITE client transaction (RFC 3261 §17.1.1, Figure 5; RFC 6026 Figure 5)."""

    INITIAL = CALLING
    NETWORK_INPUTS = frozenset({R1XX, R2XX, RFINAL, TRANSPORT_ERROR})
    TABLE: ClassVar[Table] = {
        (CALLING, "timer A"): (CALLING, ("retransmit_a",)),
        (CALLING, "timer B"): (TERMINATED, ("timeout_b",)),
        (CALLING, R1XX): (PROCEEDING, ("stop_a_b", "deliver")),
        (CALLING, R2XX): (ACCEPTED, ("stop_a_b", "deliver", "arm_m")),
        (CALLING, RFINAL): (COMPLETED, ("stop_a_b", "deliver", "send_ack", "arm_d")),
        (CALLING, TRANSPORT_ERROR): (TERMINATED, ("transport_failed",)),
        (CALLING, ABANDON): (CALLING, ("stop_a",)),
        (PROCEEDING, R1XX): (PROCEEDING, ("deliver",)),
        (PROCEEDING, R2XX): (ACCEPTED, ("deliver", "arm_m")),
        (PROCEEDING, RFINAL): (COMPLETED, ("deliver", "send_ack", "arm_d")),
        (PROCEEDING, TRANSPORT_ERROR): (TERMINATED, ("transport_failed",)),
        (PROCEEDING, ABANDON): (PROCEEDING, ()),
        (COMPLETED, RFINAL): (COMPLETED, ("send_ack",)),
        (COMPLETED, "timer D"): (TERMINATED, ()),
        (COMPLETED, ABANDON): (COMPLETED, ()),
        (ACCEPTED, R2XX): (ACCEPTED, ("deliver",)),
        (ACCEPTED, "timer M"): (TERMINATED, ()),
        (ACCEPTED, ABANDON): (ACCEPTED, ()),
        (TERMINATED, ABANDON): (TERMINATED, ()),
    }
    ABSORBING: ClassVar[dict[str, str]] = {COMPLETED: "D", ACCEPTED: "M"}

    def __init__(
        self,
        request: bytes,
        make_ack: Callable[[Response], bytes],
        *,
        reliable: bool,
        timers: TimerConfig,
    ) -> None:
        super().__init__(reliable, timers)
        self._last = request
        self._make_ack = make_ack
        self._ack: bytes | None = None

    @property
    def ack(self) -> bytes | None:
        """The ACK of the non-2xx final (COMPLETED): sent again for each retransmission of it."""
        return self._ack

    def start(self, now: float) -> list[Event]:
        self._now = now
        self._arm_retransmit("A")
        self._arm("B", self.cfg.timeout)
        return [Send(self._last)] if self._last is not None else []

    def receive(self, response: Response, now: float) -> list[Event]:
        status = response.status
        what = R1XX if status < 200 else R2XX if status < 300 else RFINAL
        return self._input(what, now, response)

    def transport_error(self, now: float) -> list[Event]:
        return self._input(TRANSPORT_ERROR, now)

    def abandon(self, now: float) -> list[Event]:
        """Stop retransmitting (the proxy gave up on this branch); late responses still arrive."""
        return self._input(ABANDON, now)

    def _a_retransmit_a(self) -> None:
        self._retransmit("A", None)

    def _a_stop_a(self) -> None:
        self._stop("A")

    def _a_stop_a_b(self) -> None:
        self._stop("A", "B")

    def _a_arm_m(self) -> None:
        self._arm("M", self.cfg.timeout)

    def _a_arm_d(self) -> None:
        # Timer D: at least 32 s over UDP to absorb retransmitted finals, zero over TCP.
        self._arm("D", 0.0 if self.reliable else 32.0)

    def _a_send_ack(self) -> None:
        if self._ack is None:
            assert self._message is not None
            self._ack = self._make_ack(self._message)
        self._events.append(Send(self._ack))


class ClientNonInvite(Transaction):
    """Non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6)."""

    INITIAL = TRYING
    NETWORK_INPUTS = frozenset({R1XX, R2XX, RFINAL, TRANSPORT_ERROR})
    TABLE: ClassVar[Table] = {
        (TRYING, "timer E"): (TRYING, ("retransmit_e",)),
        (TRYING, "timer F"): (TERMINATED, ("timeout_f",)),
        (TRYING, R1XX): (PROCEEDING, ("deliver",)),
        (TRYING, R2XX): (COMPLETED, ("stop_e_f", "deliver", "arm_k")),
        (TRYING, RFINAL): (COMPLETED, ("stop_e_f", "deliver", "arm_k")),
        (TRYING, TRANSPORT_ERROR): (TERMINATED, ("transport_failed",)),
        (PROCEEDING, "timer E"): (PROCEEDING, ("retransmit_e_t2",)),
        (PROCEEDING, "timer F"): (TERMINATED, ("timeout_f",)),
        (PROCEEDING, R1XX): (PROCEEDING, ("deliver",)),
        (PROCEEDING, R2XX): (COMPLETED, ("stop_e_f", "deliver", "arm_k")),
        (PROCEEDING, RFINAL): (COMPLETED, ("stop_e_f", "deliver", "arm_k")),
        (PROCEEDING, TRANSPORT_ERROR): (TERMINATED, ("transport_failed",)),
        (COMPLETED, "timer K"): (TERMINATED, ()),
    }
    ABSORBING: ClassVar[dict[str, str]] = {COMPLETED: "K"}

    def __init__(self, request: bytes, *, reliable: bool, timers: TimerConfig) -> None:
        super().__init__(reliable, timers)
        self._last = request

    def start(self, now: float) -> list[Event]:
        self._now = now
        self._arm_retransmit("E")
        self._arm("F", self.cfg.timeout)
        return [Send(self._last)] if self._last is not None else []

    def receive(self, response: Response, now: float) -> list[Event]:
        status = response.status
        what = R1XX if status < 200 else R2XX if status < 300 else RFINAL
        return self._input(what, now, response)

    def transport_error(self, now: float) -> list[Event]:
        return self._input(TRANSPORT_ERROR, now)

    def _a_retransmit_e(self) -> None:
        self._retransmit("E", self.cfg.t2)

    def _a_stop_e_f(self) -> None:
        self._stop("E", "F")

    def _a_arm_k(self) -> None:
        self._arm("K", 0.0 if self.reliable else self.cfg.t4)

    def _a_retransmit_e_t2(self) -> None:
        # In PROCEEDING the interval is T2 (§17.1.2.2).
        self._intervals["E"] = self.cfg.t2
        self._arm("E", self.cfg.t2)
        self._a_resend()


class _Server(Transaction):
    def __init__(self, request: Request, *, reliable: bool, timers: TimerConfig) -> None:
        super().__init__(reliable, timers)
        self.request = request
        self._out: bytes | None = None

    def receive_request(self, now: float) -> list[Event]:
        """A retransmission of the request: resend the last response, if any."""
        return self._input(REQUEST, now)

    def respond(self, status: int, data: bytes, now: float) -> list[Event]:
        """Send a response built by the transaction user."""
        what = TU_1XX if status < 200 else TU_2XX if status < 300 else TU_FINAL
        self._out = data
        return self._input(what, now)

    def transport_error(self, now: float) -> list[Event]:
        return self._input(TRANSPORT_ERROR, now)

    def _a_send(self) -> None:
        assert self._out is not None
        self._last = self._out
        self._events.append(Send(self._out))


class ServerInvite(_Server):
    """INVITE server transaction (RFC 3261 §17.2.1, Figure 7; RFC 6026 Figure 7)."""

    INITIAL = PROCEEDING
    NETWORK_INPUTS = frozenset({REQUEST, ACK, TRANSPORT_ERROR})
    TABLE: ClassVar[Table] = {
        (PROCEEDING, REQUEST): (PROCEEDING, ("resend",)),
        (PROCEEDING, TU_1XX): (PROCEEDING, ("send",)),
        (PROCEEDING, TU_2XX): (ACCEPTED, ("send", "arm_l")),
        (PROCEEDING, TU_FINAL): (COMPLETED, ("send", "arm_g", "arm_h")),
        (PROCEEDING, TRANSPORT_ERROR): (TERMINATED, ("transport_failed",)),
        (COMPLETED, REQUEST): (COMPLETED, ("resend",)),
        (COMPLETED, ACK): (CONFIRMED, ("stop_g_h", "arm_i")),
        (COMPLETED, "timer G"): (COMPLETED, ("retransmit_g",)),
        (COMPLETED, "timer H"): (TERMINATED, ("timeout_h",)),
        (COMPLETED, TRANSPORT_ERROR): (TERMINATED, ("transport_failed",)),
        (CONFIRMED, "timer I"): (TERMINATED, ()),
        (ACCEPTED, TU_2XX): (ACCEPTED, ("send",)),
        (ACCEPTED, "timer L"): (TERMINATED, ()),
    }
    # COMPLETED also retransmits on Timer G until the ACK; Timer H ends it.
    ABSORBING: ClassVar[dict[str, str]] = {ACCEPTED: "L", COMPLETED: "H", CONFIRMED: "I"}

    def receive_ack(self, now: float) -> list[Event]:
        return self._input(ACK, now)

    @property
    def retransmit_interval(self) -> float | None:
        """Timer G's current interval, while it runs (COMPLETED over UDP)."""
        return self._intervals.get("G") if "G" in self.timers else None

    def _a_arm_l(self) -> None:
        self._arm("L", self.cfg.timeout)

    def _a_arm_g(self) -> None:
        self._arm_retransmit("G")

    def _a_arm_h(self) -> None:
        self._arm("H", self.cfg.timeout)

    def _a_stop_g_h(self) -> None:
        self._stop("G", "H")

    def _a_arm_i(self) -> None:
        self._arm("I", 0.0 if self.reliable else self.cfg.t4)

    def _a_retransmit_g(self) -> None:
        self._retransmit("G", self.cfg.t2)


class ServerNonInvite(_Server):
    """Non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8)."""

    INITIAL = TRYING
    NETWORK_INPUTS = frozenset({REQUEST, TRANSPORT_ERROR})
    TABLE: ClassVar[Table] = {
        (TRYING, REQUEST): (TRYING, ()),
        (TRYING, TU_1XX): (PROCEEDING, ("send",)),
        (TRYING, TU_2XX): (COMPLETED, ("send", "arm_j")),
        (TRYING, TU_FINAL): (COMPLETED, ("send", "arm_j")),
        (TRYING, TRANSPORT_ERROR): (TERMINATED, ("transport_failed",)),
        (PROCEEDING, REQUEST): (PROCEEDING, ("resend",)),
        (PROCEEDING, TU_1XX): (PROCEEDING, ("send",)),
        (PROCEEDING, TU_2XX): (COMPLETED, ("send", "arm_j")),
        (PROCEEDING, TU_FINAL): (COMPLETED, ("send", "arm_j")),
        (PROCEEDING, TRANSPORT_ERROR): (TERMINATED, ("transport_failed",)),
        (COMPLETED, REQUEST): (COMPLETED, ("resend",)),
        (COMPLETED, "timer J"): (TERMINATED, ()),
        (COMPLETED, TRANSPORT_ERROR): (TERMINATED, ()),
    }
    ABSORBING: ClassVar[dict[str, str]] = {COMPLETED: "J"}

    def _a_arm_j(self) -> None:
        self._arm("J", 0.0 if self.reliable else self.cfg.timeout)


ALL_TRANSACTIONS: tuple[type[Transaction], ...] = (
    ClientInvite,
    ClientNonInvite,
    ServerInvite,
    ServerNonInvite,
)
