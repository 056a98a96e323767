"""The HA role machine, without sockets: every move, and never two actives (Hypothesis).

The property test runs two nodes against a model of etcd: a lease expires
``ttl`` after the moment etcd *handled* its last keepalive (which is at or after
the moment the node sent it), the leader key is bound to a lease and goes with
it, and the create-if-absent transaction succeeds only on an absent key. Any
interleaving of keepalives (delivered, delayed or lost), campaigns, reads,
watch notifications and clock steps must never leave both nodes serving at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trunkguard.config import HaConfig
from trunkguard.ha import Action, HaSettings, Leader, Role, RoleName
from trunkguard.ha._shared import BadRecord, decode, encode
from trunkguard.health import HealthEngine, State

S = HaSettings(node="r1", etcd=("http://127.0.0.1:2379",), lease_ttl=2.0, fence_after=1.2)


def _active(now: float = 0.0) -> Role:
    role = Role(S)
    assert role.start(now) == [Action.GRANT_LEASE]
    assert role.lease_granted(7, now, now) == [Action.CAMPAIGN]
    out = role.campaign_result(True, Leader("r1", 5), now, now)
    assert out == [Action.ACQUIRE_ADDRESS, Action.SERVE]
    return role


def test_a_node_wins_serves_and_fences_on_its_own_timer() -> None:
    role = _active()
    assert role.role is RoleName.ACTIVE and role.epoch == 5 and role.takeovers == 1
    assert role.may_serve(1.19) and role.next_deadline() == pytest.approx(1.2)
    # No answer from etcd at all: the fence comes from the clock alone.
    assert role.renew_failed(0.5) == []
    assert role.tick(1.2) == [Action.STOP_SERVING, Action.RELEASE_ADDRESS]
    assert role.role is RoleName.FENCED and not role.may_serve(1.2) and role.fences == 1
    assert role.etcd_ok is False and role.etcd_lost_since == 0.5


def test_may_serve_reads_the_clock_even_if_the_timer_is_late() -> None:
    role = _active()
    assert role.role is RoleName.ACTIVE  # tick never ran
    assert not role.may_serve(5.0)


def test_a_renewal_counts_from_when_it_was_sent() -> None:
    role = _active()
    assert role.renewed_lease(2, sent=1.0, now=1.9) == []
    assert role.fence_at() == pytest.approx(2.2)  # 1.0 + 1.2, not 1.9 + 1.2
    # An answer that arrives late for an older request never moves the fence back.
    role.renewed_lease(2, sent=0.5, now=2.0)
    assert role.fence_at() == pytest.approx(2.2)


def test_fenced_node_comes_back_only_with_its_own_key_and_epoch() -> None:
    role = _active()
    role.tick(1.5)
    assert role.renewed_lease(2, sent=1.6, now=1.7) == [Action.CHECK_LEADER]
    assert role.leader_seen(Leader("r1", 5), 1.8) == [Action.ACQUIRE_ADDRESS, Action.SERVE]
    assert role.role is RoleName.ACTIVE and role.takeovers == 1


def test_fenced_node_that_finds_another_leader_becomes_standby() -> None:
    role = _active()
    role.tick(1.5)
    role.renewed_lease(2, sent=1.6, now=1.7)
    assert role.leader_seen(Leader("r2", 9), 1.8) == []
    assert role.role is RoleName.STANDBY and role.epoch is None
    # The same name with another epoch is not ours either (a restart of r1 elsewhere).
    role2 = _active()
    role2.tick(1.5)
    role2.leader_seen(Leader("r1", 6), 1.8)
    assert role2.role is RoleName.STANDBY


def test_lease_gone_means_standby_and_a_new_lease() -> None:
    role = _active()
    out = role.renewed_lease(0, sent=0.5, now=0.6)
    assert out == [Action.STOP_SERVING, Action.RELEASE_ADDRESS, Action.GRANT_LEASE]
    assert role.role is RoleName.STANDBY and role.lease is None


def test_active_that_sees_someone_else_leading_stops_at_once() -> None:
    role = _active()
    out = role.leader_seen(Leader("r2", 11), 0.5)
    assert out == [Action.STOP_SERVING, Action.RELEASE_ADDRESS]
    assert role.role is RoleName.STANDBY


def test_standby_campaigns_when_the_leader_key_goes() -> None:
    role = Role(S)
    role.start(0.0)
    role.lease_granted(7, 0.0, 0.0)
    assert role.campaign_result(False, Leader("r2", 3), 0.0, 0.0) == []
    assert role.role is RoleName.STANDBY and role.leader == Leader("r2", 3)
    assert role.leader_seen(None, 1.0) == [Action.CAMPAIGN]
    assert role.role is RoleName.CAMPAIGNING
    role.campaign_result(True, Leader("r1", 12), 1.0, 1.0)
    assert role.role is RoleName.ACTIVE and role.epoch == 12


def test_a_standby_never_serves_and_active_active_always_does() -> None:
    role = Role(S)
    role.start(0.0)
    role.lease_granted(7, 0.0, 0.0)
    role.campaign_result(False, Leader("r2", 3), 0.0, 0.0)
    assert not role.may_serve(0.1)
    aa = Role(HaSettings(node="n1", etcd=S.etcd, mode="active-active"))
    assert aa.may_serve(0.0) and aa.role is RoleName.ACTIVE
    assert aa.lease_granted(1, 0.0, 0.0) == [] and aa.renew_failed(100.0) == []
    assert aa.may_serve(1000.0)


def test_resign_stops_serving() -> None:
    role = _active()
    assert role.resign(0.5) == [Action.STOP_SERVING, Action.RELEASE_ADDRESS]
    assert not role.may_serve(0.5)


# -- the property: never two actives ---------------------------------------------------------
@dataclass
class _Lease:
    expires: float


class _Etcd:
    """A model of etcd: leases, and the leader key bound to one."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.leases: dict[int, _Lease] = {}
        self.key: tuple[str, int, int] | None = None  # node, epoch, lease
        self.revision = 1
        self.next_lease = 100

    def expire(self, now: float) -> None:
        for lid in [lid for lid, lease in self.leases.items() if lease.expires <= now]:
            del self.leases[lid]
            if self.key is not None and self.key[2] == lid:
                self.key = None
                self.revision += 1

    def grant(self, at: float) -> int:
        self.next_lease += 1
        self.leases[self.next_lease] = _Lease(at + self.ttl)
        return self.next_lease

    def keepalive(self, lid: int, at: float) -> int:
        lease = self.leases.get(lid)
        if lease is None:
            return 0
        lease.expires = at + self.ttl
        return int(self.ttl)

    def create(self, node: str, lid: int) -> tuple[bool, Leader | None]:
        if self.key is None and lid in self.leases:
            self.revision += 1
            self.key = (node, self.revision, lid)
            return True, Leader(node, self.revision)
        return False, None if self.key is None else Leader(self.key[0], self.key[1])

    def leader(self) -> Leader | None:
        return None if self.key is None else Leader(self.key[0], self.key[1])


steps = st.lists(
    st.tuples(
        # Campaigns and reads more often than not: takeovers are what is under test.
        st.sampled_from(["renew", "renew_lost", "campaign", "campaign", "read", "tick", "wait"]),
        st.integers(0, 1),  # which node
        st.floats(0.0, 1.0),  # how long the clock moves first
        st.floats(0.0, 0.4),  # how late etcd handles a request after it was sent
    ),
    min_size=20,
    max_size=200,
)


@settings(max_examples=400, deadline=None)
@given(steps)
def test_never_two_nodes_serve_at_once(plan: list[tuple[str, int, float, float]]) -> None:
    etcd = _Etcd(ttl=2.0)
    nodes = [Role(HaSettings(node=n, etcd=S.etcd, lease_ttl=2.0, fence_after=1.2)) for n in "ab"]
    now = 0.0
    for role in nodes:
        role.start(now)
    for what, i, step, delay in plan:
        now += step
        etcd.expire(now)
        role = nodes[i]
        if what == "wait":
            pass
        elif role.lease is None:
            # The grant is handled at now + delay; the node counts it from now.
            if what != "renew_lost":
                lid = etcd.grant(now + delay)
                etcd.expire(now + delay)
                role.lease_granted(lid, now, now + delay)
        elif what == "renew":
            ttl = etcd.keepalive(role.lease, now + delay)
            role.renewed_lease(ttl, now, now + delay)
        elif what == "renew_lost":
            role.renew_failed(now)
        elif what == "campaign" and role.role is RoleName.CAMPAIGNING:
            won, leader = etcd.create(role.node, role.lease)
            role.campaign_result(won, leader, now, now)
        elif what == "read":
            role.leader_seen(etcd.leader(), now)
        elif what == "tick":
            role.tick(now)
        if what != "wait" and delay:
            now += delay  # the answer came back this much later
            etcd.expire(now)
        # The invariant, checked at this instant and just before the next input.
        for t in (now, now + 1e-9):
            serving = [r.node for r in nodes if r.may_serve(t)]
            assert len(serving) <= 1, (serving, t, etcd.key)
            for r in nodes:
                if r.may_serve(t):
                    # Fencing before expiry: etcd still holds this node's lease and key.
                    assert r.lease in etcd.leases and etcd.leases[r.lease].expires > t
                    assert etcd.key is not None and etcd.key[0] == r.node


# -- config -------------------------------------------------------------------------------------
def _ha(**more: object) -> dict[str, object]:
    return {"node": "r1", "etcd": ["http://10.0.0.1:2379"], **more}


def test_config_defaults_and_validation() -> None:
    s = HaConfig.model_validate(_ha()).settings()
    assert (s.lease_ttl, s.renew_every, s.fence_after, s.mode) == (2.0, 0.25, 1.2, "active-standby")
    for bad, why in (
        (_ha(fence_after=2.0), "must be less than lease_ttl"),
        (_ha(renew_every=0.7), "at most half of fence_after"),
        (_ha(service_address="10.0.0.100/24"), "needs interface"),
        (_ha(service_address="nope", interface="eth0"), "ADDRESS/PREFIX"),
        (_ha(etcd=["10.0.0.1:2379"]), "http://HOST:PORT"),
        (_ha(node="bad name"), "pattern"),
        (_ha(acquire=["ip", "{addr}"]), "the only fields"),
        (_ha(lease_ttl=0.5, fence_after=0.4, renew_every=0.1), "greater than or equal to 1"),
    ):
        with pytest.raises(ValueError, match=why):
            HaConfig.model_validate(bad)
    ok = HaConfig.model_validate(
        _ha(service_address="10.0.0.100", interface="eth0", acquire=["/bin/up", "{address}"])
    )
    assert ok.service_address == "10.0.0.100/32" and ok.settings().address == "10.0.0.100"


# -- shared target state ------------------------------------------------------------------------
def test_a_record_round_trips_and_adopts() -> None:
    a = HealthEngine(["x"])
    a.force_down("x", until=130.0, now=100.0, reason="drill")
    raw = encode(a.targets["x"], "r1", 7, offset=1000.0)
    record = decode(raw)
    assert record.state is State.FORCED_DOWN and record.forced_until == 1130.0
    assert record.node == "r1" and record.seq == 7
    b = HealthEngine(["x"])
    # b's clock is 500 s behind a's: wall 1130 is 630 on b's monotonic clock.
    changes = b.adopt(
        "x", record.state, 50.0, reason=record.reason, since=record.since - 500.0,
        forced_until=record.forced_until - 500.0 if record.forced_until else None,
        before_operator=record.before_operator,
    )  # fmt: skip
    assert [(c.old, c.new) for c in changes] == [(State.UP, State.FORCED_DOWN)]
    assert b.targets["x"].forced_until == 630.0
    again = b.adopt("x", State.FORCED_DOWN, 51.0, reason="again", since=600.0, forced_until=630.0)
    assert again == []
    # Its revert runs on b's own timer.
    assert [c.new for c in b.tick(630.0)] == [State.UP]


@pytest.mark.parametrize(
    "raw",
    [b"", b"[]", b'{"state":"NOPE"}', b'{"state":"UP","reason":1,"node":"r1","seq":1,"since":0}',
     b'{"state":"UP","reason":"x","node":"r1","seq":1,"since":"soon"}',
     b'{"state":"UP","reason":"x","node":"","seq":1,"since":1}'],
)  # fmt: skip
def test_bad_records_are_refused(raw: bytes) -> None:
    with pytest.raises(BadRecord):
        decode(raw)
