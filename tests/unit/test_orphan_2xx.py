"""A late 2xx for an INVITE another node sent (a takeover) or this one before a restart.

The INVITE's branch carries a MAC under the Record-Route secret, so a node with the same
secret knows the 2xx as the answer to one of ours that nobody waits for: ACK (each time
it comes) and one BYE, toward the carrier it came from. A forged branch, a 2xx from
elsewhere, or a 2xx of a dialog still up gets nothing.
"""

from __future__ import annotations

from test_proxy_core import CALLER, A, Net, invite, only_request, reply

from trunkguard.proxy import Flow
from trunkguard.sip import Request, Response

SECRET = b"k" * 32
STRANGER = Flow("udp", ("127.0.0.1", 6666))


def _sent_invite(net: Net) -> Request:
    net.feed(invite(), CALLER)
    return only_request(net.take(), A, "INVITE")


def _requests(out: list[tuple[Flow, Request | Response]], flow: Flow, method: str) -> list[Request]:
    return [m for f, m in out if f == flow and isinstance(m, Request) and m.method == method]


def test_the_next_node_acks_and_byes_a_late_2xx_for_the_dead_nodes_invite() -> None:
    old = Net(secret=SECRET)
    sent = _sent_invite(old)
    new = Net(secret=SECRET)  # the standby, same secret: it never saw this INVITE
    new.feed(reply(sent, 200, to_tag="late"), A)
    out = new.take()
    acks, byes = _requests(out, A, "ACK"), _requests(out, A, "BYE")
    assert len(acks) == 1 and len(byes) == 1
    for request in (acks[0], byes[0]):
        assert request.call_id == sent.call_id
        assert request.to.tag == "late"
        assert request.from_.tag == sent.from_.tag
    assert acks[0].cseq.number == sent.cseq.number
    assert byes[0].cseq.number == sent.cseq.number + 1
    assert not [f for f, _ in out if f == CALLER]  # nothing toward any caller
    assert new.proxy.counters["orphan_2xx"] == 1
    assert new.proxy.counters["orphan_byes_sent"] == 1

    # A retransmission of the 2xx: ACKed again, no second BYE.
    new.feed(reply(sent, 200, to_tag="late"), A)
    out = new.take()
    assert len(_requests(out, A, "ACK")) == 1 and not _requests(out, A, "BYE")
    assert new.proxy.counters["orphan_byes_sent"] == 1


def test_a_node_with_another_secret_leaves_the_2xx_alone() -> None:
    sent = _sent_invite(Net(secret=SECRET))
    other = Net(secret=b"z" * 32)
    other.feed(reply(sent, 200, to_tag="late"), A)
    assert other.take() == []
    assert other.proxy.counters["stray_responses"] == 1
    assert other.proxy.counters["orphan_2xx"] == 0


def test_a_forged_branch_or_a_2xx_from_elsewhere_goes_nowhere() -> None:
    sent = _sent_invite(Net(secret=SECRET))
    new = Net(secret=SECRET)
    forged = reply(sent, 200, to_tag="x").replace(
        sent.vias[0].branch.encode(), sent.vias[0].branch[:-4].encode() + b"0000"
    )
    new.feed(forged, A)
    new.feed(reply(sent, 200, to_tag="y"), STRANGER)  # signed branch, not a carrier
    assert new.take() == []
    assert new.proxy.counters["stray_responses"] == 2
    assert new.proxy.counters["orphan_2xx"] == 0


def test_a_late_non_2xx_or_a_provisional_is_only_counted() -> None:
    sent = _sent_invite(Net(secret=SECRET))
    new = Net(secret=SECRET)
    new.feed(reply(sent, 180, to_tag="r"), A)
    new.feed(reply(sent, 486, to_tag="r"), A)
    assert new.take() == []
    assert new.proxy.counters["orphan_2xx"] == 0


def test_an_answered_call_of_this_node_is_never_hung_up_by_a_late_retransmission() -> None:
    net = Net(secret=SECRET)
    sent = _sent_invite(net)
    net.feed(reply(sent, 200, to_tag="up"), A)
    net.take()
    # Long after: the transactions' records are gone, the dialog is not.
    net.proxy.finished.expire(net.now + 3600)
    assert net.proxy.clients.get(sent.vias[0].branch or "") is None
    assert net.proxy.finished.get(sent.vias[0].branch or "") is None
    net.feed(reply(sent, 200, to_tag="up"), A)
    assert not _requests(net.take(), A, "BYE")
    assert net.proxy.counters["orphan_2xx"] == 0


def test_invites_to_carriers_carry_signed_branches() -> None:
    net = Net(secret=SECRET)
    sent = _sent_invite(net)
    assert net.proxy._is_signed_branch(sent.vias[0].branch or "")
    assert not net.proxy._is_signed_branch(net.proxy.new_branch())
