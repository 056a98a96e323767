"""Overload control: refuse new calls early and cheaply, keep everything else flowing.

Two halves, both pure:

- :class:`OverloadControl` turns samples of the router's own load, taken by
  the adapter every tick (bytes waiting in its receive queues, the kernel's
  drops, the event loop's lag, the share of time spent handling input, the
  process's resident memory), into the share of new calls to refuse. Once a
  signal says overloaded, the share is steered so that the receive queue
  stays at half its mark: never dry (the router stays busy, goodput) and
  never long (admitted calls stay quick and complete). Kernel drops or loop
  lag raise it fast (the loss-based algorithm of RFC 7339, run on ourselves).
- A first-line look at a raw datagram, without parsing it: an out-of-dialog
  INVITE that is to be refused gets a stateless ``503`` built from its raw
  header lines (:func:`quick_invite`, :func:`shed_response`), and the ACK for
  such a 503 is known by its To tag. Refusing a call then costs about 15 µs
  in the core, where a parse and a built response would cost some 65.

Only new INVITEs are ever refused: responses, ACKs, CANCELs, retransmissions
and requests inside a dialog all go through whatever the load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

_CRLF = b"\r\n"
_NAMES = {
    b"v": b"via",
    b"via": b"via",
    b"f": b"from",
    b"from": b"from",
    b"t": b"to",
    b"to": b"to",
    b"i": b"call-id",
    b"call-id": b"call-id",
    b"cseq": b"cseq",
}
# The header lines a response copies, found by the regex engine, not a loop over every line.
_WANTED = re.compile(rb"\r\n((via|v|from|f|to|t|call-id|i|cseq)[ \t]*:[^\r\n]*)", re.I)
# The top Via as the fast path takes it: a plain host (no IPv6 reference, which the parser
# normalises) and a port without leading zeros; anything else goes to the parser.
_TOP_VIA = re.compile(
    rb"[ \t]*SIP/2\.0/(?:UDP|TCP|TLS)[ \t]+([a-z0-9.\-]+(?::[1-9][0-9]{0,4})?)[ \t]*(;.*)\Z",
    re.I | re.S,
)
_BRANCH = re.compile(
    # The magic cookie is case-sensitive, as the parser's check (RFC 3261 §17.2.3) is.
    rb";[ \t]*branch[ \t]*=[ \t]*((?-i:z9hG4bK)[A-Za-z0-9.!%*_+`'~\-]+)[ \t]*(?:;|\Z)",
    re.I,
)
_OC = re.compile(rb";[ \t]*oc[ \t]*(?:[;=]|\Z)", re.I)
_TAG = re.compile(rb";[ \t]*tag[ \t]*=", re.I)
_OC_PARAMS = frozenset({"oc", "oc-validity", "oc-seq", "oc-algo"})


@dataclass(frozen=True, slots=True)
class OverloadSettings:
    enabled: bool = True
    policy: str = "503"  # what a refused call gets: "503" (with Retry-After) or "drop"
    retry_after: int = 1  # seconds, in the 503
    queue_high: int = 1_048_576  # bytes waiting in a listener's receive queue: overloaded
    lag_high: float = 0.05  # seconds of event-loop lag: overloaded
    busy_high: float = 0.95  # share of time on input that, with a queue building, is too much
    max_memory: int | None = None  # resident bytes past which every new call is refused
    oc: bool = False  # RFC 7339: tell callers whose Via carries ``oc`` how much to reduce
    oc_validity: int = 500  # ms an oc value holds for the caller


@dataclass(frozen=True, slots=True)
class Load:
    """One sample of the router's load, taken by the adapter."""

    queued: int = 0  # bytes waiting in the fullest receive queue
    drops: int = 0  # datagrams the kernel dropped since the last sample (queue full)
    lag: float = 0.0  # how late the sampling timer fired, seconds
    busy: float = 0.0  # share of the interval spent handling input
    memory: int = 0  # resident bytes (0: unknown)
    messages: int = 0  # inputs handled since the last sample
    limit: int = 0  # half the smallest receive buffer the kernel granted (0: unknown)


RISE = 0.3  # on overload, this share of what is still admitted is refused more...
RISE_MIN = 0.05  # ...and at least this much more
TARGET = 0.5  # share of the queue mark the refused share steers the queue to
GAIN = 0.3  # refused share per sample, per queue mark of distance from the target...
STEP_UP = 0.15  # ...at most this much more per sample...
STEP_DOWN = 0.05  # ...and this much less
FALL_MIN = 0.01  # under this (and no signal, a short queue): the episode is over
LIGHT = 0.5  # a source offering under this share of the mean per source is spared
WINDOW = 4  # samples (200 ms) over which new calls are counted per source
MAX_COUNTED = 10_000  # sources whose new calls are counted per sample
RELAXED_QUEUE = 0.25  # below this share of queue_high (and no other signal): relaxed
MAX_REJECT = 0.99  # never refuse quite everything for load alone (memory can)
# Samples in a row the loop must be late before that alone says overloaded: one stall (a
# collection, a scrape, a busy neighbour) is no overload, and what it left waiting shows
# in the receive queue's own signal at the next sample.
LATE_SAMPLES = 2


class OverloadControl:
    """The share of new calls to refuse, from the load samples (see the module's docstring)."""

    def __init__(self, settings: OverloadSettings | None = None) -> None:
        self.settings = settings or OverloadSettings()
        self.reject = 0.0  # share of new calls refused now
        self.why = ""  # the signal that last said overloaded
        self.signal = ""  # what the last sample said (empty: not overloaded)
        self.since: float | None = None  # when the current episode began
        self.last = Load()
        self.peak = 0.0
        self._credit = 0.0
        # New calls offered per source in this sample, and the sources that offered few
        # in the last one: a flood from one source is refused before a dialer's calls.
        self._offered: dict[str, int] = {}
        self._samples = 0
        self.light: frozenset[str] = frozenset()
        self._late = 0  # samples in a row with the loop late by more than lag_high

    @property
    def active(self) -> bool:
        return self.reject > 0.0

    def overloaded_by(self, load: Load) -> str:
        """Which signal says the router is overloaded (empty: none)."""
        s = self.settings
        if s.max_memory is not None and load.memory > s.max_memory:
            return f"resident memory {load.memory >> 20} MB over {s.max_memory >> 20} MB"
        if load.drops > 0:
            return f"the kernel dropped {load.drops} datagrams (receive queue full)"
        high = self.queue_mark(load)
        if load.queued > high:
            return f"{load.queued >> 10} KB waiting in a receive queue"
        if self._late >= LATE_SAMPLES:
            return f"event loop {load.lag * 1000:.0f} ms late, {self._late} samples in a row"
        if load.busy > s.busy_high and load.queued > high * RELAXED_QUEUE:
            return f"{load.busy:.0%} of the time on input with a queue building"
        return ""

    def queue_mark(self, load: Load) -> int:
        """``queue_high``, or half the receive buffer when the kernel granted less (its
        ``net.core.rmem_max``): the queue must say overloaded before the kernel drops."""
        high = self.settings.queue_high
        return min(high, load.limit) if load.limit else high

    def sample(self, load: Load, now: float) -> str | None:
        """Take one sample; returns "start"/"end" when an episode begins or ends, else None."""
        self.last = load
        self._samples += 1
        if self._samples >= WINDOW:
            # Who offered little over the last window is spared in the next: only a source
            # seen in it (one that just appeared, or turns up once, gets no pass).
            offered, self._offered, self._samples = self._offered, {}, 0
            if len(offered) > 1:
                mean = sum(offered.values()) / len(offered)
                self.light = frozenset(h for h, n in offered.items() if n < mean * LIGHT)
            else:
                self.light = frozenset()
        if not self.settings.enabled:
            self.reject = 0.0
            return None
        was = self.reject > 0.0
        self._late = self._late + 1 if load.lag > self.settings.lag_high else 0
        why = self.signal = self.overloaded_by(load)
        s = self.settings
        if why:
            self.why = why
        high = self.queue_mark(load)
        if s.max_memory is not None and load.memory > s.max_memory:
            self.reject = 1.0
        elif load.drops > 0 or self._late >= LATE_SAMPLES:
            # The kernel dropped, or the loop is late: the queue mark was not enough. Fast.
            more = max(RISE_MIN, (1.0 - self.reject) * RISE)
            self.reject = min(MAX_REJECT, self.reject + more)
        elif why or self.reject > 0.0:
            # Steer the queue to half the mark: a queue that never runs dry keeps the router
            # busy (goodput), one that stays short keeps admitted calls quick. The step is in
            # proportion to how far it is from there, within bounds.
            error = (load.queued - high * TARGET) / high
            step = max(-STEP_DOWN, min(STEP_UP, GAIN * error))
            if why and self.reject == 0.0:
                step = max(step, RISE_MIN)  # a signal starts an episode, whatever the queue
            self.reject = min(MAX_REJECT, max(0.0, self.reject + step))
            if self.reject < FALL_MIN and not why and load.queued < high * RELAXED_QUEUE:
                self.reject = 0.0
        self.peak = max(self.peak, self.reject)
        if self.reject > 0.0 and not was:
            self.since = now
            return "start"
        if was and self.reject == 0.0:
            self.since = None
            return "end"
        return None

    def count(self, source: str) -> None:
        """An INVITE from ``source`` came (counted always, so the first sample of an
        overload already knows who offers little)."""
        offered = self._offered
        if source in offered:
            offered[source] += 1
        elif len(offered) < MAX_COUNTED:
            offered[source] = 1

    def refuse_next(self, source: str = "") -> bool:
        """Should the next new call (from ``source``) be refused? Spreads ``reject`` evenly
        over the calls of the sources that offer the most: one seen in the last window
        that offered under half the mean per source is spared, the load is not its doing.
        """
        self.count(source)
        reject = self.reject
        if reject <= 0.0:
            return False
        if source in self.light:
            return False
        self._credit += reject
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        return False

    def oc_params(self, now: float) -> str:
        """RFC 7339 parameters for the top Via of a response to a caller that asked."""
        pct = round(self.reject * 100)
        validity = self.settings.oc_validity if pct else 0
        return f';oc={pct};oc-algo="loss";oc-validity={validity};oc-seq={now:.3f}'


# -- the first line: raw bytes, no parse ------------------------------------------------------
class QuickInvite(NamedTuple):
    """What the cheap look found in an INVITE: enough to refuse it, or to see it is not new."""

    key: tuple[str, str, str]  # its server transaction key (RFC 3261 branch), as server_key
    to_tag: bool  # a tag in To: inside a dialog (a re-INVITE), never refused
    oc: bool  # the caller's top Via carries RFC 7339's ``oc``
    lines: tuple[bytes, ...]  # Via..., From, To, Call-ID, CSeq: the raw lines a response copies


def _split_top(value: bytes) -> tuple[bytes, bytes]:
    """A Via header's value as (its first value, the rest from the comma that ends it);
    a comma inside a quoted string (``oc-algo="loss,rate"``) does not end it."""
    comma = value.find(b",")
    if comma < 0 or b'"' not in value[:comma]:
        return (value, b"") if comma < 0 else (value[:comma], value[comma:])
    quoted = False
    for i, byte in enumerate(value):
        if byte == 0x22:  # '"'
            quoted = not quoted
        elif byte == 0x2C and not quoted:  # ','
            return value[:i], value[i:]
    return value, b""


def quick_invite(data: bytes) -> QuickInvite | None:
    """The raw lines of an INVITE, or None when anything is unusual (the full parser decides)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end]
    if b"\r\n " in head or b"\r\n\t" in head:
        return None  # folded lines: not for the fast path
    vias: list[bytes] = []
    found: dict[bytes, bytes] = {}
    for line, raw_name in _WANTED.findall(head):
        name = _NAMES[raw_name.lower()]
        if name == b"via":
            vias.append(line)
        elif name in found:
            return None  # two To (say): let the parser refuse it
        else:
            found[name] = line
    if not vias or len(found) != 4:
        return None
    top = _split_top(vias[0][vias[0].find(b":") + 1 :])[0]
    m = _TOP_VIA.match(top)
    if m is None:
        return None
    sent_by, params = m.groups()
    branch = _BRANCH.search(params)
    if branch is None:
        return None
    to = found[b"to"]
    # A tag param after the name-addr's '>' (or anywhere in a bare addr-spec without '<').
    to_tag = _TAG.search(to, max(to.rfind(b">"), to.find(b":"))) is not None
    key = (branch.group(1).decode("ascii"), sent_by.lower().decode("ascii"), "INVITE")
    lines = (*vias, found[b"from"], to, found[b"call-id"], found[b"cseq"])
    return QuickInvite(key, to_tag, _OC.search(params) is not None, lines)


def shed_response(
    invite: QuickInvite,
    tag: str,
    extra: tuple[bytes, ...] = (),
    oc: str = "",
) -> bytes:
    """A stateless ``503`` for a refused INVITE: its raw Via, From, To (with ``tag``),
    Call-ID and CSeq lines, then ``extra`` header lines; ``oc`` goes in the top Via."""
    vias = list(invite.lines[:-4])
    from_, to, call_id, cseq = invite.lines[-4:]
    if oc:
        vias[0] = with_oc(vias[0], oc)
    out = [b"SIP/2.0 503 Service Unavailable", *vias, from_, to + b";tag=" + tag.encode(), call_id]
    out += [cseq, *extra, b"Content-Length: 0", b"", b""]
    return _CRLF.join(out)


def with_oc(via_line: bytes, oc: str) -> bytes:
    """The Via header line with the top value's RFC 7339 parameters replaced by ``oc``."""
    colon = via_line.find(b":")
    name, rest = via_line[: colon + 1], via_line[colon + 1 :]
    top, others = _split_top(rest)
    kept = [
        p
        for p in top.split(b";")
        if p.strip().partition(b"=")[0].strip().lower().decode("latin-1") not in _OC_PARAMS
    ]
    return name + b";".join(kept).rstrip() + oc.encode() + others


def is_shed_ack(data: bytes, tag: bytes) -> bool:
    """Is this the ACK for one of our stateless 503s (its To carries our shed tag)?"""
    return data.startswith(b"ACK ") and tag in data


def response_with_oc(data: bytes, oc: str) -> bytes:
    """A response of ours with RFC 7339's parameters in its top Via (see :func:`with_oc`)."""
    lines = data.split(_CRLF)
    for i, line in enumerate(lines[1:], 1):
        if not line:
            break
        colon = line.find(b":")
        if _NAMES.get(line[:colon].rstrip(b" \t").lower()) == b"via":
            lines[i] = with_oc(line, oc)
            return _CRLF.join(lines)
    return data


@dataclass(frozen=True, slots=True)
class OverloadEvent:
    """The router's own overload began or ended; for the event log and the logs."""

    state: str  # "overloaded", "recovered"
    detail: str
    at: float
