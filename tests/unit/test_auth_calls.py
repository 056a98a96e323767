"""Digest authentication on calls, without sockets: carriers that challenge, and check.

Every carrier here is a ``DigestServer`` of test_register.py: it challenges with 401 or
407 and verifies each credential the router sends (the digest for the configured
password, the method, the Request-URI; an ACK or CANCEL repeating its INVITE's). The
caller side is checked for what RFC 3261 §22 promises it: the call looks to the caller
as if nobody had been challenged, CSeq numbers and all.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random

import pytest
from test_proxy_core import CALLER, A, B, C, Net, invite, only_request, reply
from test_register import DIGEST_RESPONSE, PASSWORD, WRONG, DigestServer, digest_params

from trunkguard.health import HealthEngine, OutcomeClass
from trunkguard.proxy import Alarm, Flow
from trunkguard.sip import Request, Response
from trunkguard.sip._digest import Credentials

CREDENTIALS = Credentials("trunk1", PASSWORD)
SECRET = b"s" * 32
_ids = itertools.count(1)
Sent = list[tuple[Flow, Request | Response]]


class AuthNet(Net):
    """The proxy harness whose carriers check each credential the router sends, as it is sent.

    ``carrier`` puts a ``DigestServer`` at a carrier's address; every request to it (once,
    not its retransmissions) goes through its checks as soon as it is taken from the
    outbox, and ``verdict`` tells what the server made of it.
    """

    def __init__(self, auth: Credentials | None = CREDENTIALS, **settings: object) -> None:
        super().__init__(auth=auth, **settings)
        self.servers: dict[Flow, DigestServer] = {}
        self.verdicts: dict[tuple[str, str], bool | None] = {}  # (branch, method) -> verdict

    def carrier(self, flow: Flow, server: DigestServer) -> DigestServer:
        self.servers[flow] = server
        return server

    def take(self) -> Sent:
        out = super().take()
        for flow, message in out:
            server = self.servers.get(flow)
            if server is None or not isinstance(message, Request):
                continue
            key = (message.vias[0].branch or "", message.method)
            if key not in self.verdicts:  # not a retransmission
                self.verdicts[key] = server.check(message)
        return out

    def verdict(self, request: Request) -> bool | None:
        """None: no credentials; else whether the carrier accepted them (they are right)."""
        return self.verdicts[(request.vias[0].branch or "", request.method)]


def new_net(**settings: object) -> AuthNet:
    return AuthNet(**settings)


def requests(out: Sent, flow: Flow, method: str) -> list[Request]:
    return [m for f, m in out if f == flow and isinstance(m, Request) and m.method == method]


def caller_responses(out: Sent) -> list[Response]:
    return [m for f, m in out if f == CALLER and isinstance(m, Response)]


def in_dialog(
    method: str,
    call_id: str,
    cseq: int,
    *,
    route: str | None = None,
    to_tag: str = "carrier",
    ruri: str = "sip:carrier@127.0.0.1:5071",
) -> bytes:
    """A request of the caller's inside the dialog it got through the router."""
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-{method}-{call_id}-{cseq}",
        "From: <sip:agent@127.0.0.1>;tag=caller1",
        f"To: <sip:15551234567@127.0.0.1>;tag={to_tag}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Max-Forwards: 70",
    ]
    if route is not None:
        lines.append(f"Route: {route}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def cancel_of(call_id: str) -> bytes:
    return (
        f"CANCEL sip:15551234567@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-{call_id}\r\n"
        f"From: <sip:agent@127.0.0.1>;tag=caller1\r\nTo: <sip:15551234567@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def challenged_then_sent(
    net: AuthNet, server: DigestServer, call_id: str, flow: Flow = A
) -> tuple[Request, Request]:
    """A new call; the carrier at ``flow`` challenges it. Returns both INVITEs it got."""
    net.feed(invite(call_id), CALLER)
    first = only_request(net.take(), flow, "INVITE")
    assert net.verdict(first) is None
    net.feed(reply(first, server.status, to_tag="sbc", extra=server.challenge()), flow)
    out = net.take()
    [ack] = requests(out, flow, "ACK")  # the transaction's ACK for the 401/407
    assert ack.cseq.number == first.cseq.number and ack.vias[0].branch == first.vias[0].branch
    assert net.verdict(ack) is None  # it answers the challenge: nothing to repeat
    second = only_request(out, flow, "INVITE")
    assert [r.status for r in caller_responses(out)] == []  # the challenge stays with us
    return first, second


def answered(net: AuthNet, server: DigestServer, call_id: str) -> tuple[Request, Response]:
    """A call challenged by a, answered after our credentials; the caller's 200."""
    _, second = challenged_then_sent(net, server, call_id)
    assert net.verdict(second) is True
    net.feed(reply(second, 180), A)
    net.feed(reply(second, 200), A)
    out = net.take()
    statuses = [r.status for r in caller_responses(out)]
    assert statuses == [180, 200]
    return second, caller_responses(out)[-1]


# -- 1. INVITE, challenged once ----------------------------------------------------------------
@pytest.mark.parametrize("proxy", [True, False], ids=["407", "401"])
def test_a_challenged_invite_goes_again_with_credentials_and_the_dialog_keeps_count(
    proxy: bool,
) -> None:
    net = new_net()
    server = net.carrier(A, DigestServer(proxy=proxy))
    first, second = challenged_then_sent(net, server, "auth-1")
    # RFC 3261 §22.2: the same request again, CSeq + 1, same Call-ID and From tag.
    assert second.cseq.number == first.cseq.number + 1 == 2
    assert second.call_id == first.call_id == "auth-1"
    assert second.from_.tag == first.from_.tag == "caller1" and second.to.tag is None
    assert second.uri == first.uri and second.body == first.body
    assert second.vias[0].branch != first.vias[0].branch  # a new transaction
    assert second.vias[1].branch == first.vias[1].branch == "z9hG4bK-auth-1"
    assert second.get("x-dialer-campaign") == "spring sale"
    answer_header = "proxy-authorization" if proxy else "authorization"
    other_header = "authorization" if proxy else "proxy-authorization"
    assert second.has(answer_header) and not second.has(other_header)
    assert net.verdict(second) is True
    assert server.checked == [("INVITE", first.uri, True)]
    [rr] = second.record_routes
    assert ";tgo=1;" in (second.get("record-route") or "")
    assert net.proxy.dialogs.signer.verify(rr.uri, "auth-1", "caller1") == (CALLER, A, 1)
    # The answers reach the caller numbered as the caller numbered its INVITE.
    net.feed(reply(second, 180), A)
    net.feed(reply(second, 200), A)
    out = net.take()
    ringing, ok = caller_responses(out)
    assert (ringing.status, ok.status) == (180, 200)
    assert str(ringing.cseq) == str(ok.cseq) == "1 INVITE"
    assert len(ok.vias) == 1 and ok.vias[0].branch == "z9hG4bK-auth-1"
    # The caller's ACK: CSeq + 1 toward the carrier, with the INVITE's credentials (§22.1).
    net.feed(in_dialog("ACK", "auth-1", 1), CALLER)
    ack = only_request(net.take(), A, "ACK")
    assert str(ack.cseq) == "2 ACK"
    assert ack.get(answer_header) == second.get(answer_header)
    assert net.verdict(ack) is True
    # The caller's BYE (CSeq 2) is the carrier's CSeq 3; its 200 is the caller's CSeq 2 again.
    net.feed(in_dialog("BYE", "auth-1", 2), CALLER)
    bye = only_request(net.take(), A, "BYE")
    assert str(bye.cseq) == "3 BYE"
    net.feed(reply(bye, 200), A)
    [done] = caller_responses(net.take())
    assert (done.status, str(done.cseq)) == (200, "2 BYE")
    assert net.proxy.counters["auth_challenges_answered"] == 1
    assert [(a.target, a.attempt, a.status) for a in net.attempts] == [("a", 1, 200)]
    assert net.proxy.counters["failovers"] == 0 and net.alarms == []


def test_the_carriers_100_then_407_and_a_ringing_first_branch() -> None:
    net = new_net()
    server = net.carrier(A, DigestServer(proxy=True))
    net.feed(invite("auth-2"), CALLER)
    first = only_request(net.take(), A, "INVITE")
    net.feed(reply(first, 100), A)
    net.feed(reply(first, 183), A)  # rang, then wants credentials after all
    net.feed(reply(first, 407, to_tag="sbc", extra=server.challenge()), A)
    out = net.take()
    assert [r.status for r in caller_responses(out)] == [183]
    second = only_request(out, A, "INVITE")
    assert second.cseq.number == 2 and net.verdict(second) is True
    net.feed(reply(second, 200), A)
    [ok] = caller_responses(net.take())
    assert (ok.status, str(ok.cseq)) == (200, "1 INVITE")


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_each_algorithm_verifies_on_an_invite(algorithm: str) -> None:
    net = new_net()
    server = net.carrier(A, DigestServer(proxy=True, algorithm=algorithm))
    answered(net, server, f"alg-{algorithm}")
    assert server.checked[-1][2] is True


def test_a_destination_final_after_credentials_keeps_the_callers_cseq() -> None:
    net = new_net()
    server = net.carrier(A, DigestServer(proxy=True))
    _, second = challenged_then_sent(net, server, "busy-1")
    assert net.verdict(second) is True
    net.feed(reply(second, 486), A)
    out = net.take()
    [busy] = caller_responses(out)
    assert (busy.status, str(busy.cseq)) == (486, "1 INVITE")
    [ack] = requests(out, A, "ACK")  # the transaction's ACK for the 486
    assert str(ack.cseq) == "2 ACK" and net.verdict(ack) is True
    assert requests(out, B, "INVITE") == []


def test_a_trunk_fault_after_credentials_fails_over_with_the_callers_cseq() -> None:
    net = new_net()
    server = net.carrier(A, DigestServer(proxy=True))
    _, second = challenged_then_sent(net, server, "fault-1")
    assert net.verdict(second) is True
    net.feed(reply(second, 503), A)
    out = net.take()
    [ack] = requests(out, A, "ACK")
    assert str(ack.cseq) == "2 ACK" and net.verdict(ack) is True
    to_b = only_request(out, B, "INVITE")
    assert to_b.cseq.number == 1 and not to_b.has("proxy-authorization")
    net.feed(reply(to_b, 200), B)
    [ok] = caller_responses(net.take())
    assert (ok.status, str(ok.cseq)) == (200, "1 INVITE")
    assert "tgo=" not in (to_b.get("record-route") or "")
    net.feed(in_dialog("BYE", "fault-1", 2), CALLER)
    assert str(only_request(net.take(), B, "BYE").cseq) == "2 BYE"  # b never renumbered


# -- 2. challenged again -----------------------------------------------------------------------
def health_net() -> tuple[AuthNet, HealthEngine]:
    net = new_net()
    health = HealthEngine(["a", "b", "c"], rng=random.Random(1), probes_enabled=False)
    net.proxy.health = health
    return net, health


def test_a_second_challenge_is_a_trunk_fault_that_fails_over_with_one_alarm() -> None:
    net, health = health_net()
    # The carrier expects another password than ours.
    server = net.carrier(A, DigestServer(proxy=True, password=WRONG))
    for n in (1, 2):
        call_id = f"wrong-{n}"
        _, second = challenged_then_sent(net, server, call_id)
        assert net.verdict(second) is False  # a wrong password, rightly hashed
        net.feed(reply(second, 407, to_tag="sbc", extra=server.challenge()), A)
        out = net.take()
        [ack] = requests(out, A, "ACK")
        assert str(ack.cseq) == "2 ACK" and net.verdict(ack) is False
        assert len(requests(out, A, "INVITE")) == 0  # not a third time
        to_b = only_request(out, B, "INVITE")  # the next carrier, inside the same call
        assert to_b.cseq.number == 1 and to_b.call_id == call_id
        net.feed(reply(to_b, 200), B)
        [ok] = caller_responses(net.take())
        assert (ok.status, str(ok.cseq)) == (200, "1 INVITE")
    records = [(r.target, r.status, r.verdict.klass if r.verdict else None) for r in net.attempts]
    pair = [("a", 407, OutcomeClass.TRUNK_FAULT), ("b", 200, OutcomeClass.SUCCESS)]
    assert records == pair * 2
    assert health.targets["a"].consecutive_faults == 2  # counted against a
    assert net.proxy.counters["auth_failures:a"] == 2
    assert net.proxy.counters["failovers"] == 2
    [alarm] = net.alarms  # once, not once per call
    assert (alarm.target, alarm.kind) == ("a", "credentials")
    assert "trunk1" in alarm.detail and "407" in alarm.detail
    assert net.proxy.counters["alarms:a"] == 1


def test_the_alarm_is_raised_again_only_after_credentials_worked() -> None:
    net = new_net()
    server = net.carrier(A, DigestServer(proxy=True))
    answered(net, server, "good-1")

    def rejected(call_id: str) -> None:
        _, second = challenged_then_sent(net, server, call_id)
        net.feed(reply(second, 407, to_tag="sbc", extra=server.challenge()), A)
        to_b = only_request(net.take(), B, "INVITE")
        net.feed(reply(to_b, 200), B)
        net.take()

    rejected("bad-1")
    rejected("bad-2")
    assert len(net.alarms) == 1
    answered(net, server, "good-2")  # an authenticated 2xx: the credentials work again
    rejected("bad-3")
    assert len(net.alarms) == 2


def test_new_credentials_from_a_reload_are_alarmed_afresh() -> None:
    net = new_net()
    server = net.carrier(A, DigestServer(proxy=True, password="the-carriers"))

    def rejected(call_id: str) -> None:
        _, second = challenged_then_sent(net, server, call_id)
        net.feed(reply(second, 407, to_tag="sbc", extra=server.challenge()), A)
        net.feed(reply(only_request(net.take(), B, "INVITE"), 200), B)
        net.take()

    rejected("reload-1")
    assert len(net.alarms) == 1
    fixed = Credentials("trunk1", "still-not-it")  # the operator's next try, also wrong
    server.client_password = fixed.password
    targets = [dataclasses.replace(t, auth=fixed) for t in net.proxy.targets]
    net.proxy.reconfigure(net.proxy.settings, targets)
    rejected("reload-2")
    assert len(net.alarms) == 2  # these credentials are rejected too: say so
    rejected("reload-3")
    assert len(net.alarms) == 2


def test_every_carrier_rejecting_our_credentials_gives_the_caller_403() -> None:
    net = new_net()
    servers = {flow: net.carrier(flow, DigestServer()) for flow in (A, B, C)}
    net.feed(invite("all-bad"), CALLER)
    for flow in (A, B, C):
        server = servers[flow]
        first = only_request(net.take(), flow, "INVITE")
        net.feed(reply(first, 401, to_tag="sbc", extra=server.challenge()), flow)
        second = only_request(net.take(), flow, "INVITE")
        net.feed(reply(second, 401, to_tag="sbc", extra=server.challenge()), flow)
    [final] = caller_responses(net.take())
    assert final.status == 403  # the carriers' challenges are not for the caller
    assert not final.has("www-authenticate") and not final.has("proxy-authenticate")
    assert sorted(a.target for a in net.alarms) == ["a", "b", "c"]


# -- 3. stale nonces ---------------------------------------------------------------------------
def test_a_stale_nonce_on_the_resent_invite_is_answered_again() -> None:
    net = new_net()
    server = net.carrier(A, DigestServer(proxy=True))
    _, second = challenged_then_sent(net, server, "stale-1")
    net.feed(reply(second, 407, to_tag="sbc", extra=server.challenge(stale=True)), A)
    out = net.take()
    third = only_request(out, A, "INVITE")
    assert third.cseq.number == 3 and third.call_id == "stale-1"
    old = digest_params(second.get("proxy-authorization") or "")["nonce"]
    new = digest_params(third.get("proxy-authorization") or "")["nonce"]
    assert old != new and net.verdict(third) is True
    assert requests(out, B, "INVITE") == []
    assert ";tgo=2;" in (third.get("record-route") or "")
    net.feed(reply(third, 200), A)
    [ok] = caller_responses(net.take())
    assert (ok.status, str(ok.cseq)) == (200, "1 INVITE")
    net.feed(in_dialog("BYE", "stale-1", 2), CALLER)
    assert str(only_request(net.take(), A, "BYE").cseq) == "4 BYE"
    assert net.proxy.counters["auth_stale_nonce:a"] == 1
    assert net.alarms == [] and net.proxy.counters["failovers"] == 0


def test_a_carrier_that_only_ever_says_stale_gets_no_invite_storm() -> None:
    net = new_net()
    server = net.carrier(A, DigestServer(proxy=True))
    net.feed(invite("stale-loop"), CALLER)
    sent = 0
    for _ in range(1000):
        out = net.take()
        invites = requests(out, A, "INVITE")
        if not invites:
            break
        sent += 1
        net.feed(reply(invites[0], 407, to_tag="sbc", extra=server.challenge(stale=sent > 1)), A)
    # The first challenge and one stale one are answered; stale again is a trunk fault.
    assert sent == 3, f"{sent} INVITEs to a for one call"
    assert only_request(out, B, "INVITE").cseq.number == 1
    [record] = net.attempts
    assert (record.target, record.status) == ("a", 407)
    assert record.verdict is not None and record.verdict.klass is OutcomeClass.TRUNK_FAULT
    assert net.proxy.counters["auth_failures:a"] == 1
    assert net.alarms == []  # the credentials were right, the nonces were not


# -- 4. CANCEL and ACK after credentials -------------------------------------------------------
def test_cancel_after_the_authenticated_invite_carries_its_cseq_and_credentials() -> None:
    net = new_net()
    server = net.carrier(A, DigestServer(proxy=True))
    _, second = challenged_then_sent(net, server, "cancel-1")
    net.feed(reply(second, 180), A)
    net.take()
    net.feed(cancel_of("cancel-1"), CALLER)
    out = net.take()
    assert sorted(r.status for r in caller_responses(out)) == [200, 487]
    [ours] = [r for r in caller_responses(out) if r.status == 487]
    assert str(ours.cseq) == "1 INVITE"
    cancel = only_request(out, A, "CANCEL")
    assert str(cancel.cseq) == "2 CANCEL"
    assert cancel.vias[0].branch == second.vias[0].branch  # RFC 3261 §9.1
    assert cancel.uri == second.uri
    assert cancel.get("proxy-authorization") == second.get("proxy-authorization")
    assert net.verdict(cancel) is True
    net.feed(reply(cancel, 200), A)
    net.feed(reply(second, 487), A)
    out = net.take()
    [ack] = requests(out, A, "ACK")
    assert str(ack.cseq) == "2 ACK" and net.verdict(ack) is True
    assert requests(out, B, "INVITE") == []


def test_a_cancelled_authenticated_invite_answered_late_is_acked_with_its_credentials() -> None:
    net = new_net()
    server = net.carrier(A, DigestServer(proxy=True))
    _, second = challenged_then_sent(net, server, "late-1")
    net.feed(cancel_of("late-1"), CALLER)  # before any answer to the resent INVITE
    net.take()
    net.feed(reply(second, 200, to_tag="late"), A)  # it answered anyway
    out = net.take()
    [ack] = requests(out, A, "ACK")
    [bye] = requests(out, A, "BYE")
    assert str(ack.cseq) == "2 ACK"
    assert ack.get("proxy-authorization") == second.get("proxy-authorization")
    assert net.verdict(ack) is True
    assert bye.cseq.number == 3 and bye.call_id == "late-1"


# -- 5. a carrier without credentials ----------------------------------------------------------
def test_a_carrier_without_credentials_answering_401_is_failed_over() -> None:
    net = AuthNet(auth=None)  # no credentials for any carrier
    servers = {flow: net.carrier(flow, DigestServer()) for flow in (A, B, C)}
    net.feed(invite("nocred-1"), CALLER)
    for flow in (A, B, C):
        sent = only_request(net.take(), flow, "INVITE")
        assert sent.cseq.number == 1 and not sent.has("authorization")
        net.feed(reply(sent, 401, extra=servers[flow].challenge()), flow)
    [final] = caller_responses(net.take())
    assert final.status == 403
    assert [(a.target, a.status) for a in net.attempts] == [("a", 401), ("b", 401), ("c", 401)]
    assert net.proxy.counters["auth_challenges_answered"] == 0


def test_a_carrier_without_credentials_then_one_that_answers() -> None:
    net = AuthNet(auth=None)
    net.feed(invite("nocred-2"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 407, extra=DigestServer(proxy=True).challenge()), A)
    to_b = only_request(net.take(), B, "INVITE")
    net.feed(reply(to_b, 200), B)
    [ok] = caller_responses(net.take())
    assert (ok.status, str(ok.cseq)) == (200, "1 INVITE")


def test_an_unanswerable_challenge_is_a_trunk_fault() -> None:
    net = new_net()
    net.feed(invite("basic-1"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 401, extra='WWW-Authenticate: Basic realm="x"\r\n'), A)
    out = net.take()
    assert requests(out, A, "INVITE") == []
    assert only_request(out, B, "INVITE").cseq.number == 1
    [alarm] = net.alarms
    assert alarm.target == "a" and "Basic" in alarm.detail


def test_the_challenge_for_our_realm_is_answered_among_several() -> None:
    net = AuthNet(auth=Credentials("trunk1", PASSWORD, "carrier.test"))
    server = net.carrier(A, DigestServer(proxy=True))
    foreign = 'Proxy-Authenticate: Digest realm="upstream.test", nonce="theirs"\r\n'
    net.feed(invite("realms-1"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 407, extra=foreign + server.challenge()), A)
    again = only_request(net.take(), A, "INVITE")
    assert net.verdict(again) is True
    net.feed(reply(again, 200), A)
    [ok] = caller_responses(net.take())
    assert ok.status == 200 and net.alarms == []


def test_credentials_for_another_realm_are_a_trunk_fault_with_an_alarm() -> None:
    net = AuthNet(auth=Credentials("trunk1", PASSWORD, "elsewhere.test"))
    server = net.carrier(A, DigestServer())
    net.feed(invite("realm-1"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 401, extra=server.challenge()), A)
    out = net.take()
    assert requests(out, A, "INVITE") == []  # nothing to answer with
    to_b = only_request(out, B, "INVITE")
    net.feed(reply(to_b, 200), B)
    [ok] = caller_responses(net.take())
    assert ok.status == 200
    [record, _] = net.attempts
    assert (record.target, record.status) == ("a", 401)
    assert record.verdict is not None and record.verdict.klass is OutcomeClass.TRUNK_FAULT
    [alarm] = net.alarms
    assert alarm.target == "a" and "realm 'carrier.test'" in alarm.detail  # what it asks for
    assert PASSWORD not in alarm.detail


# -- 6. in-dialog requests the carrier challenges ---------------------------------------------
@pytest.mark.parametrize("authenticated_invite", [False, True])
def test_a_challenged_bye_is_sent_again_once_with_credentials(authenticated_invite: bool) -> None:
    net = new_net()
    server = net.carrier(A, DigestServer())
    if authenticated_invite:
        answered(net, server, "bye-1")
        offset = 1
    else:
        net.feed(invite("bye-1"), CALLER)
        sent = only_request(net.take(), A, "INVITE")
        net.feed(reply(sent, 200), A)
        net.take()
        offset = 0
    net.feed(in_dialog("BYE", "bye-1", 2), CALLER)
    bye = only_request(net.take(), A, "BYE")
    assert bye.cseq.number == 2 + offset and net.verdict(bye) is None
    net.feed(reply(bye, 401, extra=server.challenge()), A)
    out = net.take()
    assert caller_responses(out) == []  # the 401 is ours to answer
    again = only_request(out, A, "BYE")
    assert again.cseq.number == bye.cseq.number + 1 and again.call_id == "bye-1"
    assert again.vias[0].branch != bye.vias[0].branch
    assert net.verdict(again) is True
    assert server.checked[-1] == ("BYE", "sip:carrier@127.0.0.1:5071", True)
    net.feed(reply(again, 200), A)
    [done] = caller_responses(net.take())
    assert (done.status, str(done.cseq)) == (200, "2 BYE")


@pytest.mark.parametrize("method", ["REFER", "MESSAGE", "SUBSCRIBE", "NOTIFY"])
def test_our_credentials_never_vouch_for_a_callers_refer_or_message(method: str) -> None:
    # A REFER answered with our credentials could have the carrier place a call on our
    # account, past the router's routing and blocked prefixes: its challenge goes back.
    net = new_net()
    server = net.carrier(A, DigestServer())
    net.feed(invite("refer-1"), CALLER)
    sent = only_request(net.take(), A, "INVITE")
    net.feed(reply(sent, 200), A)
    net.take()
    net.feed(in_dialog(method, "refer-1", 2), CALLER)
    request = only_request(net.take(), A, method)
    net.feed(reply(request, 407, extra=server.challenge()), A)
    out = net.take()
    assert requests(out, A, method) == []
    [final] = caller_responses(out)
    assert final.status == 407
    assert net.proxy.counters["auth_challenges_answered"] == 0


def test_a_bye_challenged_twice_gets_the_carriers_answer_and_one_alarm() -> None:
    net = new_net()
    server = net.carrier(A, DigestServer(client_password=PASSWORD, password="not-what-we-have"))
    net.feed(invite("bye-2"), CALLER)
    sent = only_request(net.take(), A, "INVITE")
    net.feed(reply(sent, 200), A)
    net.take()
    net.feed(in_dialog("BYE", "bye-2", 2), CALLER)
    bye = only_request(net.take(), A, "BYE")
    net.feed(reply(bye, 401, extra=server.challenge()), A)
    again = only_request(net.take(), A, "BYE")
    assert net.verdict(again) is False
    net.feed(reply(again, 401, extra=server.challenge()), A)
    out = net.take()
    assert requests(out, A, "BYE") == []  # once per request
    [final] = caller_responses(out)
    assert (final.status, str(final.cseq)) == (401, "2 BYE")
    [alarm] = net.alarms
    assert alarm.target == "a" and "BYE" in alarm.detail


def test_a_stale_nonce_on_a_resent_in_dialog_request_is_answered_again() -> None:
    net = new_net()
    server = net.carrier(A, DigestServer())
    net.feed(invite("stale-bye"), CALLER)
    sent = only_request(net.take(), A, "INVITE")
    net.feed(reply(sent, 200), A)
    net.take()
    # An INFO: challenged, then stale, then stale again, which is the carrier's answer.
    net.feed(in_dialog("INFO", "stale-bye", 2), CALLER)
    info = only_request(net.take(), A, "INFO")
    net.feed(reply(info, 401, extra=server.challenge()), A)
    info = only_request(net.take(), A, "INFO")
    assert info.cseq.number == 3 and net.verdict(info) is True
    net.feed(reply(info, 401, extra=server.challenge(stale=True)), A)
    out = net.take()
    assert caller_responses(out) == []
    info = only_request(out, A, "INFO")
    assert info.cseq.number == 4 and net.verdict(info) is True
    net.feed(reply(info, 401, extra=server.challenge(stale=True)), A)
    out = net.take()
    assert requests(out, A, "INFO") == []
    [final] = caller_responses(out)
    assert (final.status, str(final.cseq)) == (401, "2 INFO")
    assert net.alarms == []  # the credentials were accepted: the nonces were not
    # A BYE whose resent copy meets a stale nonce: answered again, the call ends.
    net.feed(in_dialog("BYE", "stale-bye", 3), CALLER)
    bye = only_request(net.take(), A, "BYE")
    assert bye.cseq.number == 5  # after the INFO's 4
    net.feed(reply(bye, 401, extra=server.challenge()), A)
    again = only_request(net.take(), A, "BYE")
    net.feed(reply(again, 401, extra=server.challenge(stale=True)), A)
    out = net.take()
    assert caller_responses(out) == []
    third = only_request(out, A, "BYE")
    assert third.cseq.number == 7 and net.verdict(third) is True
    net.feed(reply(third, 200), A)
    [done] = caller_responses(net.take())
    assert (done.status, str(done.cseq)) == (200, "3 BYE")
    assert net.alarms == [] and net.proxy.counters["auth_challenges_answered"] == 4


def test_a_challenged_re_invite_and_its_ack() -> None:
    net = new_net()
    server = net.carrier(A, DigestServer(proxy=True))
    net.feed(invite("reinvite-1"), CALLER)
    sent = only_request(net.take(), A, "INVITE")
    net.feed(reply(sent, 200), A)
    net.take()
    net.feed(in_dialog("ACK", "reinvite-1", 1), CALLER)
    assert not only_request(net.take(), A, "ACK").has("proxy-authorization")
    net.feed(in_dialog("INVITE", "reinvite-1", 2), CALLER)
    reinvite = only_request(net.take(), A, "INVITE")
    assert reinvite.cseq.number == 2
    net.feed(reply(reinvite, 407, extra=server.challenge()), A)
    out = net.take()
    [ack] = requests(out, A, "ACK")  # the transaction's, for the 407
    assert ack.cseq.number == 2
    again = only_request(out, A, "INVITE")
    assert again.cseq.number == 3 and net.verdict(again) is True
    assert [r.status for r in caller_responses(out)] == []
    net.feed(reply(again, 200), A)
    [ok] = caller_responses(net.take())
    assert (ok.status, str(ok.cseq)) == (200, "2 INVITE")
    net.feed(in_dialog("ACK", "reinvite-1", 2), CALLER)
    ack = only_request(net.take(), A, "ACK")
    assert str(ack.cseq) == "3 ACK"
    # RFC 3261 §22.1: the ACK repeats the credentials of the INVITE it acknowledges.
    assert ack.get("proxy-authorization") == again.get("proxy-authorization")
    assert net.verdict(ack) is True
    # A re-INVITE nobody challenges: its ACK has no credentials to repeat.
    net.feed(in_dialog("INVITE", "reinvite-1", 3), CALLER)
    quiet = only_request(net.take(), A, "INVITE")
    assert quiet.cseq.number == 4 and not quiet.has("proxy-authorization")
    net.feed(reply(quiet, 200), A)
    [ok] = caller_responses(net.take())
    assert str(ok.cseq) == "3 INVITE"
    net.feed(in_dialog("ACK", "reinvite-1", 3), CALLER)
    ack = only_request(net.take(), A, "ACK")
    assert str(ack.cseq) == "4 ACK" and not ack.has("proxy-authorization")
    net.feed(in_dialog("BYE", "reinvite-1", 4), CALLER)
    assert str(only_request(net.take(), A, "BYE").cseq) == "5 BYE"


def test_a_carriers_own_bye_is_not_renumbered() -> None:
    net = new_net()
    server = net.carrier(A, DigestServer(proxy=True))
    answered(net, server, "theirs-1")
    bye = (
        b"BYE sip:agent@127.0.0.1:5090 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-carrier-bye\r\n"
        b"From: <sip:15551234567@127.0.0.1>;tag=carrier\r\n"
        b"To: <sip:agent@127.0.0.1>;tag=caller1\r\n"
        b"Call-ID: theirs-1\r\nCSeq: 7 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    net.feed(bye, A)
    fwd = only_request(net.take(), CALLER, "BYE")
    assert str(fwd.cseq) == "7 BYE" and not fwd.has("proxy-authorization")
    net.feed(reply(fwd, 200), CALLER)
    [ok] = [m for f, m in net.take() if f == A and isinstance(m, Response)]
    assert str(ok.cseq) == "7 BYE"


def test_the_bye_that_ends_a_dead_authenticated_dialog_follows_the_carriers_numbering() -> None:
    net = new_net(dialog_keepalive=30.0)
    server = net.carrier(A, DigestServer(proxy=True))
    answered(net, server, "dead-1")  # the carrier has seen CSeq 2 for the caller's side
    net.feed(in_dialog("ACK", "dead-1", 1), CALLER)
    net.take()
    net.advance(30.0)
    out = net.take()
    [to_caller] = requests(out, CALLER, "OPTIONS")
    net.feed(reply(to_caller, 481), CALLER)  # the caller's side is gone
    byes = {f: m for f, m in net.take() if isinstance(m, Request) and m.method == "BYE"}
    assert set(byes) == {CALLER, A}
    # RFC 3261 §12.2.1.1: after the highest CSeq the carrier has seen (2), not the caller's.
    assert byes[A].cseq.number == 3


# -- 7. restarts and forgeries -----------------------------------------------------------------
def test_after_a_restart_the_signed_offset_still_renumbers_the_bye() -> None:
    first = new_net(secret=SECRET)
    server = first.carrier(A, DigestServer(proxy=True))
    sent, _ = answered(first, server, "restart-1")
    rr = sent.get("record-route")  # what the carrier echoes, and the caller routes by
    assert rr is not None and ";tgo=1;" in rr
    restarted = new_net(secret=SECRET)  # a new process: no dialog table, the same key
    restarted.feed(in_dialog("BYE", "restart-1", 2, route=rr), CALLER)
    bye = only_request(restarted.take(), A, "BYE")
    assert str(bye.cseq) == "3 BYE" and not bye.has("route")
    restarted.feed(reply(bye, 200), A)
    [done] = caller_responses(restarted.take())
    assert (done.status, str(done.cseq)) == (200, "2 BYE")


def test_after_a_restart_a_challenged_bye_is_still_answered() -> None:
    first = new_net(secret=SECRET)
    server = first.carrier(A, DigestServer())
    sent, _ = answered(first, server, "restart-2")
    rr = sent.get("record-route")
    restarted = new_net(secret=SECRET)
    restarted.carrier(A, server)
    restarted.feed(in_dialog("BYE", "restart-2", 2, route=rr), CALLER)
    bye = only_request(restarted.take(), A, "BYE")
    restarted.feed(reply(bye, 401, extra=server.challenge()), A)
    out = restarted.take()
    assert caller_responses(out) == []
    again = only_request(out, A, "BYE")
    assert str(again.cseq) == "4 BYE" and restarted.verdict(again) is True
    restarted.feed(reply(again, 200), A)
    [done] = caller_responses(restarted.take())
    assert (done.status, str(done.cseq)) == (200, "2 BYE")


@pytest.mark.parametrize(
    "forge",
    [
        lambda rr: rr.replace(";tgo=1;", ";tgo=5;"),  # another offset
        lambda rr: rr.replace(";tgo=1;", ";"),  # the offset taken away
        lambda rr: rr.replace(";tgo=1;", ";tgo=01;"),  # the same number, written otherwise
    ],
    ids=["changed", "removed", "respelled"],
)
def test_a_forged_offset_does_not_verify_and_goes_nowhere(forge: object) -> None:
    first = new_net(secret=SECRET)
    sent, _ = answered(first, first.carrier(A, DigestServer(proxy=True)), "forged-1")
    rr = sent.get("record-route")
    assert rr is not None
    forged = forge(rr)  # type: ignore[operator]
    assert forged != rr
    restarted = new_net(secret=SECRET)
    restarted.feed(in_dialog("BYE", "forged-1", 2, route=forged), CALLER)
    out = restarted.take()
    assert [r.status for r in caller_responses(out)] == [481]
    assert [m for _, m in out if isinstance(m, Request)] == []
    assert restarted.proxy.counters["dialog_refused"] == 1


def test_an_offset_added_to_an_unauthenticated_route_does_not_verify() -> None:
    first = new_net(secret=SECRET)
    first.feed(invite("forged-2"), CALLER)
    sent = only_request(first.take(), A, "INVITE")
    first.feed(reply(sent, 200), A)
    first.take()
    rr = sent.get("record-route")
    assert rr is not None and "tgo=" not in rr
    forged = rr.replace(";tgm=", ";tgo=1;tgm=")
    restarted = new_net(secret=SECRET)
    restarted.feed(in_dialog("BYE", "forged-2", 2, route=forged), CALLER)
    out = restarted.take()
    assert [r.status for r in caller_responses(out)] == [481]
    assert [m for _, m in out if isinstance(m, Request)] == []


# -- 8. secrets --------------------------------------------------------------------------------
def test_no_password_or_digest_response_in_logs_events_or_counters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    net = new_net()
    good = net.carrier(A, DigestServer(proxy=True))
    answered(net, good, "secret-1")
    bad = net.carrier(A, DigestServer(proxy=True, password="not-ours"))
    _, second = challenged_then_sent(net, bad, "secret-2")
    net.feed(reply(second, 407, to_tag="sbc", extra=bad.challenge()), A)
    net.take()
    events = [str(e) for e in net.alarms] + [str(a) for a in net.attempts]
    texts = events + list(net.proxy.counters) + [r.getMessage() for r in caplog.records]
    assert net.alarms and isinstance(net.alarms[0], Alarm)
    for text in texts:
        assert PASSWORD not in text and not DIGEST_RESPONSE.search(text), text
        for response in good.responses + bad.responses:
            assert response not in text
