"""The proxy core without sockets: INVITEs in, what it sends out, a fake clock."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
from collections.abc import Callable

import pytest

from trunkguard.health import FailureTable, OutcomeClass, StateChange
from trunkguard.proxy import Flow, Proxy, ProxySettings, Target, select_final
from trunkguard.proxy._types import Alarm, AttemptRecord
from trunkguard.sip import Request, Response, parse_message, parse_uri
from trunkguard.sip._digest import Credentials

CALLER = Flow("udp", ("127.0.0.1", 5090))
A = Flow("udp", ("127.0.0.1", 5071))
B = Flow("udp", ("127.0.0.1", 5072))
C = Flow("udp", ("127.0.0.1", 5073))
_ids = itertools.count(1)


def target(name: str, flow: Flow, failures: FailureTable | None = None) -> Target:
    uri = parse_uri(f"sip:{flow.addr[0]}:{flow.addr[1]}")
    return Target(name, uri, flow, failures or FailureTable())


class Net:
    """A proxy plus a fake clock; collects what the proxy sends, per destination."""

    def __init__(self, auth: Credentials | None = None, **settings: object) -> None:
        defaults: dict[str, object] = {
            "advertise": ("127.0.0.1", 5060),
            "allow": (ipaddress.ip_network("127.0.0.0/8"),),
        }
        defaults.update(settings)
        targets = [target("a", A), target("b", B), target("c", C)]
        if auth is not None:  # every carrier answers 401/407 with these
            targets = [dataclasses.replace(t, auth=auth) for t in targets]
        self.proxy = Proxy(ProxySettings(**defaults), targets)  # type: ignore[arg-type]
        self._attempts: list[AttemptRecord] = []
        self._changes: list[StateChange] = []
        self.alarms: list[Alarm] = []
        self.on_change: list[Callable[[StateChange], object]] = []
        self.now = 1000.0

    def pump(self) -> None:
        """What the adapter does after each input: take the core's events."""
        for event in self.proxy.take_events():
            if isinstance(event, AttemptRecord):
                self._attempts.append(event)
            elif isinstance(event, Alarm):
                self.alarms.append(event)
            elif isinstance(event, StateChange):
                self._changes.append(event)
                for hook in self.on_change:
                    hook(event)

    @property
    def attempts(self) -> list[AttemptRecord]:
        self.pump()
        return self._attempts

    @property
    def changes(self) -> list[StateChange]:
        self.pump()
        return self._changes

    def feed(self, data: bytes, source: Flow) -> None:
        self.proxy.receive(data, source, self.now)
        self.pump()

    def advance(self, seconds: float) -> None:
        """Move the clock forward, firing every timer on the way, in order."""
        end = self.now + seconds
        while True:
            deadline = self.proxy.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self.proxy.run_timers(self.now)
            self.pump()
        self.now = end

    def take(self) -> list[tuple[Flow, Request | Response]]:
        self.pump()
        out = [(flow, parse_message(data)) for flow, data in self.proxy.outbox]
        self.proxy.outbox.clear()
        return out

    def sent_to(self, flow: Flow, out: list[tuple[Flow, Request | Response]]) -> list[str]:
        """Short labels ("INVITE", "180", "ACK") of what went to ``flow``."""
        return [m.method if isinstance(m, Request) else str(m.status) for f, m in out if f == flow]


def invite(call_id: str | None = None, *, extra: str = "", mf: int = 70, branch: str = "") -> bytes:
    call_id = call_id or f"call-{next(_ids)}"
    branch = branch or f"z9hG4bK-{call_id}"
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    head = (
        f"INVITE sip:15551234567@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch={branch}\r\n"
        f"From: <sip:agent@127.0.0.1>;tag=caller1\r\n"
        f"To: <sip:15551234567@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Max-Forwards: {mf}\r\n"
        f"Contact: <sip:agent@127.0.0.1:5090>\r\n"
        f"X-Dialer-Campaign: spring sale\r\n"
        f"{extra}"
        f"Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def reply(request: Request, status: int, *, to_tag: str = "carrier", extra: str = "") -> bytes:
    """A carrier's response to ``request`` as it received it."""
    vias = "".join(f"Via: {v}\r\n" for v in request.values("via"))
    to = request.get("to") or ""
    if status > 100 and "tag=" not in to:
        to += f";tag={to_tag}"
    text = (
        f"SIP/2.0 {status} Whatever\r\n{vias}"
        f"From: {request.get('from')}\r\nTo: {to}\r\n"
        f"Call-ID: {request.call_id}\r\nCSeq: {request.cseq}\r\n"
        f"Contact: <sip:carrier@127.0.0.1:5071>\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    return text.encode()


def only_request(out: list[tuple[Flow, Request | Response]], flow: Flow, method: str) -> Request:
    found = [m for f, m in out if f == flow and isinstance(m, Request) and m.method == method]
    assert len(found) == 1, f"expected one {method} to {flow}, got {found}"
    return found[0]


def responses(out: list[tuple[Flow, Request | Response]], flow: Flow) -> list[int]:
    return [m.status for f, m in out if f == flow and isinstance(m, Response)]


def test_invite_relayed_to_first_carrier_with_proxy_edits() -> None:
    net = Net()
    net.feed(invite("c1"), CALLER)
    out = net.take()
    assert responses(out, CALLER) == [100]
    sent = only_request(out, A, "INVITE")
    assert sent.uri == "sip:15551234567@127.0.0.1:5071"
    assert sent.max_forwards == 69
    assert sent.vias[0].host == "127.0.0.1" and sent.vias[0].port == 5060
    assert sent.vias[1].branch == "z9hG4bK-c1"
    [rr] = sent.record_routes
    assert str(rr.uri).startswith("sip:127.0.0.1:5060;lr;tgd=")
    # The Record-Route signs the dialog's two peers: the caller and carrier a.
    assert net.proxy.dialogs.signer.verify(rr.uri, sent.call_id, "caller1") == (CALLER, A, 0)
    assert sent.get("x-dialer-campaign") == "spring sale"
    assert sent.body.startswith(b"v=0")
    assert net.sent_to(B, out) == []


def test_answer_relayed_and_dialog_routes_bye_to_carrier() -> None:
    net = Net()
    net.feed(invite("c2"), CALLER)
    sent = only_request(net.take(), A, "INVITE")
    net.feed(reply(sent, 180), A)
    net.feed(reply(sent, 200), A)
    out = net.take()
    assert responses(out, CALLER) == [180, 200]
    ok = next(m for f, m in out if isinstance(m, Response) and m.status == 200)
    assert len(ok.vias) == 1 and ok.vias[0].branch == "z9hG4bK-c2"
    bye = (
        b"BYE sip:carrier@127.0.0.1:5071 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-bye2\r\n"
        b"Route: <sip:127.0.0.1:5060;lr>\r\n"
        b"From: <sip:agent@127.0.0.1>;tag=caller1\r\n"
        b"To: <sip:15551234567@127.0.0.1>;tag=carrier\r\n"
        b"Call-ID: c2\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    net.feed(bye, CALLER)
    fwd = only_request(net.take(), A, "BYE")
    assert not fwd.has("route")  # our own Route entry was consumed
    net.feed(reply(fwd, 200), A)
    assert responses(net.take(), CALLER) == [200]
    assert [a.target for a in net.attempts] == ["a"]


def test_503_fails_over_to_next_carrier_and_caller_never_sees_it() -> None:
    net = Net()
    net.feed(invite("c3"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 503), A)
    out = net.take()
    assert net.sent_to(A, out) == ["ACK"]  # hop-by-hop ACK for the 503
    to_b = only_request(out, B, "INVITE")
    assert to_b.vias[0].branch != to_a.vias[0].branch
    net.feed(reply(to_b, 180), B)
    net.feed(reply(to_b, 200), B)
    out = net.take()
    assert responses(out, CALLER) == [180, 200]
    assert [(a.target, a.status) for a in net.attempts] == [("a", 503), ("b", 200)]
    assert net.proxy.counters["failovers"] == 1


def test_silent_carrier_fails_over_after_invite_timeout() -> None:
    net = Net(invite_timeout=2.0)
    net.feed(invite("c4"), CALLER)
    net.take()
    net.advance(1.9)
    out = net.take()
    assert net.sent_to(B, out) == []
    assert net.sent_to(A, out) == ["INVITE"] * 2  # Timer A retransmissions at 0.5 and 1.5 s
    net.advance(0.2)
    out = net.take()
    assert net.sent_to(B, out) == ["INVITE"]
    net.advance(5.0)
    assert net.sent_to(A, net.take()) == []  # abandoned: no more retransmissions to A
    assert net.attempts[0].kind == "timeout"


def test_unreachable_carrier_fails_over_without_waiting() -> None:
    net = Net()
    net.feed(invite("c5"), CALLER)
    net.take()
    net.proxy.transport_error(A, net.now)
    assert net.sent_to(B, net.take()) == ["INVITE"]
    assert net.attempts[0].kind == "unreachable"


@pytest.mark.parametrize("status", [404, 480, 484, 486, 600, 603, 604])
def test_destination_final_is_relayed_and_stops_failover(status: int) -> None:
    net = Net()
    net.feed(invite(), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, status), A)
    out = net.take()
    assert responses(out, CALLER) == [status]
    assert net.sent_to(B, out) == []
    net.advance(20)
    assert net.sent_to(B, net.take()) == []


def test_per_carrier_override_turns_480_into_failover() -> None:
    net = Net()
    table = FailureTable().with_overrides({480: OutcomeClass.TRUNK_FAULT})
    net.proxy.targets[0] = target("a", A, table)
    net.feed(invite(), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 480), A)
    assert net.sent_to(B, net.take()) == ["INVITE"]


def test_cancel_while_ringing() -> None:
    net = Net()
    net.feed(invite("c6"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 180), A)
    net.take()
    cancel = (
        b"CANCEL sip:15551234567@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-c6\r\n"
        b"From: <sip:agent@127.0.0.1>;tag=caller1\r\nTo: <sip:15551234567@127.0.0.1>\r\n"
        b"Call-ID: c6\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    net.feed(cancel, CALLER)
    out = net.take()
    assert sorted(responses(out, CALLER)) == [200, 487]
    c = only_request(out, A, "CANCEL")
    assert c.vias[0].branch == to_a.vias[0].branch
    net.feed(reply(c, 200), A)
    net.feed(reply(to_a, 487), A)
    out = net.take()
    assert net.sent_to(A, out) == ["ACK"]
    assert net.sent_to(B, out) == []
    ack = cancel.replace(b"CANCEL sip", b"ACK sip").replace(b"1 CANCEL", b"1 ACK")
    ack = ack.replace(
        b"To: <sip:15551234567@127.0.0.1>",
        f"To: <sip:15551234567@127.0.0.1>;tag={net.proxy.tag}".encode(),
    )
    net.feed(ack, CALLER)
    assert net.take() == []  # the ACK of our 487 is absorbed, not forwarded
    net.advance(40)
    assert net.proxy.active() == {
        "client_transactions": 0,
        "server_transactions": 0,
        "finished_transactions": 0,
        "dialogs": 0,
    }


def test_late_2xx_from_abandoned_branch_is_acked_and_byed() -> None:
    net = Net(invite_timeout=1.0)
    net.feed(invite("c7"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.advance(1.1)
    to_b = only_request(net.take(), B, "INVITE")
    net.feed(reply(to_b, 200, to_tag="b"), B)
    net.take()
    net.feed(reply(to_a, 200, to_tag="late"), A)
    out = net.take()
    assert sorted(net.sent_to(A, out)) == ["ACK", "BYE"]
    assert responses(out, CALLER) == []  # the caller keeps the call through B only


def test_all_carriers_fail_gives_one_clean_final() -> None:
    net = Net()
    net.feed(invite("c8"), CALLER)
    for flow in (A, B, C):
        sent = only_request(net.take(), flow, "INVITE")
        net.feed(reply(sent, 503), flow)
    out = net.take()
    assert responses(out, CALLER) == [500]  # never a carrier's 503 as 503
    assert net.proxy.counters["calls_failed"] == 1


def test_all_silent_gives_408_within_budget() -> None:
    net = Net(invite_timeout=2.0, time_budget=5.0)
    net.feed(invite("c9"), CALLER)
    finals: list[tuple[int, float]] = []
    for _ in range(60):
        net.advance(0.1)
        finals += [(s, net.now) for s in responses(net.take(), CALLER) if s >= 200]
    # One final (retransmitted by Timer G until the caller ACKs it), within the budget.
    assert {s for s, _ in finals} == {408}
    assert finals[0][1] <= 1000.0 + 5.0 + 0.1


def test_attempt_count_is_bounded() -> None:
    net = Net(max_attempts=2)
    net.feed(invite(), CALLER)
    for flow in (A, B):
        sent = only_request(net.take(), flow, "INVITE")
        net.feed(reply(sent, 502), flow)
    out = net.take()
    assert net.sent_to(C, out) == []
    assert responses(out, CALLER) == [502]


def test_retransmitted_invite_is_absorbed() -> None:
    net = Net()
    data = invite("c10")
    net.feed(data, CALLER)
    net.take()
    net.feed(data, CALLER)
    out = net.take()
    assert responses(out, CALLER) == [100]
    assert net.sent_to(A, out) == []


def test_only_one_180_goes_upstream() -> None:
    net = Net()
    net.feed(invite("c11"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 180), A)
    net.feed(reply(to_a, 180), A)
    net.feed(reply(to_a, 503), A)
    out = net.take()
    to_b = only_request(out, B, "INVITE")
    upstream = responses(out, CALLER)
    net.feed(reply(to_b, 180), B)
    net.feed(reply(to_b, 200), B)
    upstream += responses(net.take(), CALLER)
    assert upstream == [180, 200]
    assert net.proxy.counters["failovers"] == 1


def test_unknown_source_gets_nothing_by_default() -> None:
    net = Net()
    net.feed(invite(), Flow("udp", ("192.0.2.9", 5060)))
    assert net.take() == []
    assert net.proxy.counters["forbidden_source"] == 1


def test_unknown_source_gets_a_bare_403_when_configured() -> None:
    net = Net(reject="403")
    stranger = Flow("udp", ("192.0.2.9", 5060))
    net.feed(invite(), stranger)
    net.proxy.outbox, out = [], list(net.proxy.outbox)
    assert [flow for flow, _ in out] == [stranger]
    data = out[0][1]
    assert data.startswith(b"SIP/2.0 403 ")
    # Nothing that names the product, or says why.
    assert b"trunkguard" not in data.lower()
    assert b"Server:" not in data and b"Warning:" not in data
    assert net.proxy.counters["forbidden_source"] == 1


def test_options_to_proxy_answered() -> None:
    net = Net()
    options = (
        b"OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-o1\r\n"
        b"From: <sip:pbx@127.0.0.1>;tag=q\r\nTo: <sip:127.0.0.1>\r\n"
        b"Call-ID: o1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    net.feed(options, CALLER)
    out = net.take()
    assert responses(out, CALLER) == [200]
    assert net.sent_to(A, out) == []


def test_max_forwards_zero_gets_483_and_loop_gets_482() -> None:
    net = Net()
    net.feed(invite(mf=0), CALLER)
    assert responses(net.take(), CALLER) == [483]
    looped = invite(extra="")
    looped = looped.replace(
        b"From:", b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKtgdeadbeef\r\nFrom:", 1
    )
    net.feed(looped, CALLER)
    assert responses(net.take(), CALLER) == [482]


def test_malformed_request_gets_400_and_garbage_is_dropped() -> None:
    net = Net()
    bad = invite().replace(b"CSeq: 1 INVITE", b"CSeq: 1 OPTIONS")
    net.feed(bad, CALLER)
    out = net.take()
    assert responses(out, CALLER) == [400]
    net.feed(b"\x00\xff garbage", CALLER)
    assert net.take() == []
    assert net.proxy.counters["parse_errors"] == 1


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], 408),
        ([None, None], 408),
        ([503, None], 500),
        ([503, 488], 488),
        ([500, 606, 488], 606),
        ([401, 503], 403),
        ([502, 504], 502),
    ],
)
def test_select_final(statuses: list[int | None], expected: int) -> None:
    assert select_final(statuses) == expected


def test_request_that_cannot_be_framed_still_gets_400() -> None:
    net = Net()
    lying = invite("c12").replace(b"Content-Length: ", b"Content-Length: 9", 1)
    net.feed(lying, CALLER)
    out = net.take()
    assert responses(out, CALLER) == [400]
    response = out[0][1]
    assert isinstance(response, Response) and response.call_id == "c12"
    assert "Content-Length" in (response.get("warning") or "")
    assert net.sent_to(A, out) == []


def test_warning_text_cannot_break_the_header() -> None:
    net = Net()
    bad = invite("c13").replace(b"CSeq: 1 INVITE", b'CSeq: 1 "INV\\\\ITE')
    net.feed(bad, CALLER)
    out = net.take()
    assert responses(out, CALLER) == [400]
    warning = out[0][1].get("warning") or ""
    assert warning.startswith('399 127.0.0.1:5060 "') and warning.count('"') == 2


def test_call_ringing_on_a_carrier_whose_port_closes_moves_on() -> None:
    net = Net()
    net.feed(invite("c14"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 180), A)
    assert responses(net.take(), CALLER) == [180]
    net.proxy.transport_error(A, net.now)  # ICMP: a's port is closed now
    to_b = only_request(net.take(), B, "INVITE")
    net.feed(reply(to_b, 180), B)
    net.feed(reply(to_b, 200), B)
    assert responses(net.take(), CALLER) == [200]  # one 180 went up already
    assert [(a.target, a.kind) for a in net.attempts] == [("a", "unreachable"), ("b", "response")]


def test_time_budget_does_not_cut_a_ringing_call() -> None:
    net = Net(time_budget=2.0)
    net.feed(invite("c15"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 180), A)
    net.take()
    net.advance(30.0)  # rings well past the budget
    out = net.take()
    assert responses(out, CALLER) == [] and net.sent_to(A, out) == []
    net.feed(reply(to_a, 200), A)
    assert responses(net.take(), CALLER) == [200]
    # Past the budget, a ringing branch that then fails is not followed by another attempt.
    net.feed(invite("c16"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 180), A)
    net.advance(5.0)
    net.feed(reply(to_a, 503), A)
    out = net.take()
    assert net.sent_to(B, out) == [] and responses(out, CALLER) == [180, 500]
