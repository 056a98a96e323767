"""Bounded memory: finished transactions shrink to records, and every table has a cap.

A finished transaction keeps only what absorbing retransmissions needs (its key, its flow,
the bytes it resends, its expiry), so retransmissions get on the wire exactly what the
whole transaction would have sent, until the RFC 3261 / RFC 6026 timer that ends it.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from test_auth_calls import challenged_then_sent, new_net
from test_no_garbage_cycles import _bye
from test_proxy_core import CALLER, A, B, Net, invite, only_request, reply, responses
from test_register import DigestServer

from trunkguard.proxy._call import Call
from trunkguard.sip import Request

T = 32.0  # 64*T1: Timers H, J, L, M (and D, 32 s) with the default T1


def answered(net: Net, call_id: str) -> Request:
    """A call to a, answered; returns the INVITE as a got it."""
    net.feed(invite(call_id), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    for status in (100, 180, 200):
        net.feed(reply(to_a, status), A)
    net.take()
    return to_a


def raw(net: Net) -> list[tuple[object, bytes]]:
    net.pump()
    out = list(net.proxy.outbox)
    net.proxy.outbox.clear()
    return out


def calls_alive() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Call))


def test_a_finished_call_leaves_records_not_transactions_nor_the_call() -> None:
    net = Net()
    alive = calls_alive()
    answered(net, "rec-1")
    net.feed(_bye("rec-1"), CALLER)
    bye = only_request(net.take(), A, "BYE")
    net.feed(reply(bye, 200), A)
    net.take()
    active = net.proxy.active()
    assert active["client_transactions"] == active["server_transactions"] == 0
    assert active["finished_transactions"] == 4  # INVITE and BYE, each side
    assert calls_alive() == alive
    net.advance(T + 0.1)
    assert net.proxy.active() == {
        "client_transactions": 0,
        "server_transactions": 0,
        "finished_transactions": 0,
        "dialogs": 0,
    }


def test_a_retransmitted_invite_after_the_200_is_absorbed() -> None:
    net = Net()
    answered(net, "rec-2")
    net.feed(invite("rec-2"), CALLER)
    assert net.take() == []  # no new call, nothing to anyone (RFC 6026 ACCEPTED)
    assert net.proxy.counters["calls"] == 1
    assert net.proxy.counters["retransmissions_in"] == 1


def test_a_retransmitted_final_after_its_ack_gets_the_same_ack_bytes() -> None:
    net = Net()
    net.feed(invite("rec-3"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.feed(reply(to_a, 503), A)
    first = [data for flow, data in raw(net) if flow == A and data.startswith(b"ACK ")]
    assert len(first) == 1
    net.advance(31.9)
    raw(net)
    net.feed(reply(to_a, 503), A)
    again = [data for flow, data in raw(net) if flow == A]
    assert again == first
    net.advance(0.2)  # Timer D (32 s) is over: a stray now
    net.feed(reply(to_a, 503), A)
    assert raw(net) == []
    assert net.proxy.counters["stray_responses"] == 1


def test_a_retransmitted_bye_gets_the_same_200_bytes_until_timer_j() -> None:
    net = Net()
    answered(net, "rec-4")
    net.feed(_bye("rec-4"), CALLER)
    bye = only_request(net.take(), A, "BYE")
    net.feed(reply(bye, 200), A)
    first = raw(net)
    assert len(first) == 1 and first[0][0] == CALLER
    net.advance(T - 0.1)
    net.feed(_bye("rec-4"), CALLER)
    assert raw(net) == first  # the same bytes, and nothing to the carrier
    net.feed(reply(bye, 200), A)  # the carrier's retransmitted 200: Timer K is over...
    assert raw(net) == []  # ...and the BYE's dialog is gone: nothing goes up
    net.advance(0.2)
    assert net.proxy.finished.get(bye.vias[0].branch or "") is None


def test_a_retransmitted_2xx_reaches_the_caller_with_the_callers_cseq() -> None:
    net = new_net()
    server = net.carrier(A, DigestServer())
    _, second = challenged_then_sent(net, server, "rec-5")
    net.feed(reply(second, 200), A)
    [ok] = [m for f, m in net.take() if f == CALLER]
    assert str(ok.cseq) == "1 INVITE"  # ours was 2: credentials resent
    assert net.proxy.active()["client_transactions"] == 0
    net.advance(T - 0.1)
    net.feed(reply(second, 200), A)  # the caller's ACK was lost: the carrier resends
    [again] = [m for f, m in net.take() if f == CALLER]
    assert again.status == 200 and str(again.cseq) == "1 INVITE"
    net.advance(0.2)  # Timer M is over
    net.feed(reply(second, 200), A)
    assert net.take() == []


def test_a_late_2xx_on_an_abandoned_branch_is_acked_again_from_its_record() -> None:
    net = Net()
    net.feed(invite("rec-6"), CALLER)
    to_a = only_request(net.take(), A, "INVITE")
    net.advance(2.05)
    to_b = only_request(net.take(), B, "INVITE")
    net.feed(reply(to_b, 200), B)
    net.feed(reply(to_a, 200, to_tag="late"), A)
    out = raw(net)
    acks = [d for f, d in out if f == A and d.startswith(b"ACK ")]
    assert len(acks) == 1 and sum(d.startswith(b"BYE ") for f, d in out if f == A) == 1
    net.feed(reply(to_a, 200, to_tag="late"), A)
    assert raw(net) == [(A, acks[0])]  # the same ACK, no second BYE
    assert net.proxy.counters["stray_2xx"] == 2


def test_a_non_2xx_final_is_resent_on_timer_g_until_the_ack_then_absorbed() -> None:
    net = Net()
    net.feed(invite("rec-7"), CALLER)
    for flow in (A, B, net.proxy.targets[2].flow):
        request = only_request(net.take(), flow, "INVITE")
        net.feed(reply(request, 486 if flow != A else 503), flow)
        if flow == B:
            break
    [final] = [d for f, d in raw(net) if f == CALLER and b" 486 " in d.split(b"\r\n")[0]]
    net.advance(0.5)  # Timer G: T1
    assert raw(net) == [(CALLER, final)]
    net.advance(1.0)  # then 2*T1
    assert raw(net) == [(CALLER, final)]
    net.feed(invite("rec-7"), CALLER)  # a retransmitted INVITE gets it too
    assert raw(net) == [(CALLER, final)]
    ack = invite("rec-7").replace(b"INVITE sip:", b"ACK sip:", 1).replace(b"1 INVITE", b"1 ACK")
    net.feed(ack, CALLER)
    net.advance(4.9)
    net.feed(ack, CALLER)  # CONFIRMED: absorbed, not forwarded
    net.feed(invite("rec-7"), CALLER)
    assert raw(net) == []
    key = ("z9hG4bK-rec-7", "127.0.0.1:5090", "INVITE")
    record = net.proxy.finished.get(key)
    assert record is not None and record.state == "CONFIRMED"
    net.advance(0.2)  # Timer I (T4) is over
    assert net.proxy.finished.get(key) is None
    assert net.proxy.counters["server_txn_failed"] == 0


def test_a_final_never_acked_ends_on_timer_h() -> None:
    net = Net()
    net.feed(invite("rec-8"), CALLER)
    net.advance(10.5)  # a, b, c silent: the budget runs out, 408 goes up
    raw(net)
    assert net.proxy.counters["server_txn_failed"] == 0
    net.advance(T)
    assert net.proxy.counters["server_txn_failed"] == 1
    assert net.proxy.active()["finished_transactions"] == 0


def test_a_cancel_after_the_final_gets_200_and_changes_nothing() -> None:
    net = Net()
    answered(net, "rec-9")
    cancel = (
        b"CANCEL sip:15551234567@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-rec-9\r\n"
        b"From: <sip:agent@127.0.0.1>;tag=caller1\r\nTo: <sip:15551234567@127.0.0.1>\r\n"
        b"Call-ID: rec-9\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    net.feed(cancel, CALLER)
    out = net.take()
    assert responses(out, CALLER) == [200] and net.sent_to(A, out) == []


def test_new_calls_beyond_max_transactions_get_our_own_503() -> None:
    net = Net(max_transactions=4)
    for i in range(2):  # each ringing call holds two live transactions
        net.feed(invite(f"cap-{i}"), CALLER)
        net.feed(reply(only_request(net.take(), A, "INVITE"), 180), A)
        net.take()
    net.feed(invite("cap-2"), CALLER)
    out = net.take()
    [shed] = [m for f, m in out if f == CALLER]
    assert shed.status == 503 and shed.get("retry-after") == "1"
    assert net.sent_to(A, out) == []
    assert net.proxy.counters["calls_shed_table_full"] == 1


def test_the_oldest_record_is_evicted_beyond_max_finished() -> None:
    net = Net(max_finished=4)
    answered(net, "ev-1")  # two records: its INVITE, both sides
    answered(net, "ev-2")
    assert net.proxy.counters["finished_evicted"] == 0
    answered(net, "ev-3")
    assert len(net.proxy.finished) == 4
    assert net.proxy.counters["finished_evicted"] == 2
    net.feed(invite("ev-3"), CALLER)
    assert net.take() == []  # the newest records are still there


def test_the_oldest_dialog_is_evicted_beyond_max_dialogs_and_its_bye_still_routes() -> None:
    net = Net(max_dialogs=2)
    invites = [answered(net, f"dlg-{i}") for i in range(3)]
    assert len(net.proxy.dialogs) == 2 and "dlg-0" not in net.proxy.dialogs.table
    assert net.proxy.counters["dialogs_evicted"] == 1
    # The caller's BYE follows the Record-Route it got: the signed one still finds a.
    route = invites[0].get("record-route") or ""
    bye = _bye("dlg-0").replace(b"Route: <sip:127.0.0.1:5060;lr>", f"Route: {route}".encode())
    net.feed(bye, CALLER)
    assert net.sent_to(A, net.take()) == ["BYE"]


def test_records_expire_at_their_timers() -> None:
    net = Net()
    answered(net, "exp-1")
    net.feed(_bye("exp-1"), CALLER)
    bye = only_request(net.take(), A, "BYE")
    net.feed(reply(bye, 200), A)
    net.take()
    assert len(net.proxy.finished) == 4
    net.advance(5.0 - 0.01)
    assert len(net.proxy.finished) == 4
    net.advance(0.02)  # Timer K (T4): the BYE's client side
    assert len(net.proxy.finished) == 3
    net.advance(T - 5.0 - 0.02)
    assert len(net.proxy.finished) == 3
    net.advance(0.02)  # L, M (the INVITE) and J (the BYE's server side)
    assert len(net.proxy.finished) == 0


@pytest.mark.parametrize(("kind", "bound"), [(0, 6_000), (1, 6_000), (2, 6_000)])
def test_memory_per_finished_call_is_small(kind: int, bound: int) -> None:
    """Bytes of Python heap a call leaves while its records wait (no time passes)."""

    def one(net: Net, i: int) -> None:
        cid = f"mem-{kind}-{i}"
        net.feed(invite(cid), CALLER)
        to_a = only_request(net.take(), A, "INVITE")
        if kind == 0:  # answered, then the caller's BYE
            for status in (100, 180, 200):
                net.feed(reply(to_a, status), A)
            net.take()
            net.feed(_bye(cid), CALLER)
            net.feed(reply(only_request(net.take(), A, "BYE"), 200), A)
        elif kind == 1:  # 503, then answered by b
            net.feed(reply(to_a, 503), A)
            net.feed(reply(only_request(net.take(), B, "INVITE"), 200), B)
        else:  # busy: 486 relayed, and the caller's ACK
            net.feed(reply(to_a, 486), A)
            net.take()
            ack = invite(cid).replace(b"INVITE sip:", b"ACK sip:", 1)
            net.feed(ack.replace(b"1 INVITE", b"1 ACK"), CALLER)
        net.take()
        net.advance(0.0005)

    net = Net()
    for i in range(50):
        one(net, -i - 1)
    net.advance(3600)
    n = 1000
    gc.collect()
    tracemalloc.start(1)
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            one(net, i)
        gc.collect()
        per_call = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert net.proxy.active()["finished_transactions"] > 0  # the records are all still there
    assert per_call < bound, f"{per_call:.0f} bytes per finished call"
