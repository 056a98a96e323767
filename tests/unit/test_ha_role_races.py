"""The HA role machine against late answers: a look at the leader key sent before a
campaign and answered after it must not demote the winner, and a node whose own lease
holds the key is never left a standby (nobody would serve until it stopped).

Both were seen on a loaded machine: the leader watch's first read (key absent) came
back just after the node's campaign won; the node went standby, campaigned again, lost
to its own key and stayed standby for good, its lease keeping that key alive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from trunkguard.ha import Action, HaSettings, Leader, Role, RoleName

S = HaSettings(node="r1", etcd=("http://127.0.0.1:2379",), lease_ttl=2.0, fence_after=1.2)
SERVE = [Action.ACQUIRE_ADDRESS, Action.SERVE]


def _campaigning() -> Role:
    role = Role(S)
    role.start(0.0)
    assert role.lease_granted(7, 0.0, 0.0) == [Action.CAMPAIGN]
    return role


def test_a_read_older_than_the_win_is_ignored() -> None:
    role = _campaigning()
    assert role.campaign_result(True, Leader("r1", 5, 7), 0.0, 0.01, revision=5) == SERVE
    # The watch's first read, answered late: the key was absent at revision 4.
    assert role.leader_seen(None, 0.02, revision=4) == []
    assert role.role is RoleName.ACTIVE and role.may_serve(0.02)
    assert role.leader == Leader("r1", 5, 7) and role.leader_revision == 5
    # A newer look still counts: the key deleted at revision 9 (by an operator, say).
    assert role.leader_seen(None, 0.5, revision=9)[:2] == [
        Action.STOP_SERVING, Action.RELEASE_ADDRESS,
    ]  # fmt: skip


def test_a_node_finds_its_win_by_its_lease_when_a_look_demoted_it() -> None:
    role = _campaigning()
    role.campaign_result(True, Leader("r1", 5, 7), 0.0, 0.01)
    # Without revisions (a stale look not known as such): demoted, it campaigns again...
    out = role.leader_seen(None, 0.02)
    assert out == [Action.STOP_SERVING, Action.RELEASE_ADDRESS, Action.CAMPAIGN]
    # ...loses to the key bound to its own lease: that is its win, it serves again.
    assert role.campaign_result(False, Leader("r1", 5, 7), 0.02, 0.03) == SERVE
    assert role.role is RoleName.ACTIVE and role.epoch == 5


def test_a_standby_whose_lease_holds_the_key_becomes_active() -> None:
    role = _campaigning()
    role.campaign_failed(0.1)  # the campaign's answer was lost: it may have won
    assert role.role is RoleName.STANDBY
    assert role.leader_seen(Leader("r1", 5, 7), 0.2) == SERVE
    assert role.role is RoleName.ACTIVE and role.epoch == 5 and role.takeovers == 1


def test_the_key_of_an_earlier_run_of_the_same_name_is_someone_elses() -> None:
    # This node restarted: a key from its last run (lease 3) still lives until it expires.
    role = _campaigning()
    assert role.campaign_result(False, Leader("r1", 2, 3), 0.0, 0.01) == []
    assert role.role is RoleName.STANDBY
    assert role.leader_seen(Leader("r1", 2, 3), 0.5) == []
    assert role.role is RoleName.STANDBY and not role.may_serve(0.5)
    assert role.leader_seen(None, 2.5) == [Action.CAMPAIGN]  # expired: now it may try


def test_a_late_campaign_answer_after_the_watch_made_it_active_changes_nothing() -> None:
    role = _campaigning()
    assert role.leader_seen(Leader("r1", 5, 7), 0.01, revision=5) == SERVE  # watch first
    assert role.campaign_result(True, Leader("r1", 5, 7), 0.0, 0.02, revision=5) == []
    assert role.role is RoleName.ACTIVE and role.takeovers == 1


def test_a_lost_campaign_older_than_a_read_still_ends_the_campaign() -> None:
    role = _campaigning()
    assert role.leader_seen(Leader("r2", 3, 99), 0.01, revision=8) == []
    assert role.campaign_result(False, Leader("r2", 3, 99), 0.0, 0.02, revision=3) == []
    assert role.role is RoleName.STANDBY


# -- the property, with late reads -----------------------------------------------------------
@dataclass
class _Etcd:
    """etcd's leases and the leader key, with a revision for every change."""

    ttl: float
    leases: dict[int, float] = field(default_factory=dict)  # lease -> expires
    key: tuple[str, int, int] | None = None  # node, epoch, lease
    revision: int = 1
    next_lease: int = 100

    def expire(self, now: float) -> None:
        for lid in [lid for lid, at in self.leases.items() if at <= now]:
            del self.leases[lid]
            if self.key is not None and self.key[2] == lid:
                self.key = None
                self.revision += 1

    def leader(self) -> tuple[Leader | None, int]:
        key = self.key
        return (None if key is None else Leader(key[0], key[1], key[2])), self.revision


steps = st.lists(
    st.tuples(
        st.sampled_from(
            ["renew", "renew", "campaign", "campaign", "read_sent", "read_answered", "read",
             "tick", "wait", "answer_lost"]
        ),
        st.integers(0, 1),
        st.floats(0.0, 1.0),
        st.floats(0.0, 0.4),
    ),
    min_size=20,
    max_size=200,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(steps)
def test_late_reads_never_make_two_actives_nor_strand_the_holder(
    plan: list[tuple[str, int, float, float]],
) -> None:
    etcd = _Etcd(ttl=2.0)
    nodes = [Role(HaSettings(node=n, etcd=S.etcd, lease_ttl=2.0, fence_after=1.2)) for n in "ab"]
    reads: list[tuple[Leader | None, int] | None] = [None, None]  # taken, not yet answered
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
            etcd.next_lease += 1
            etcd.leases[etcd.next_lease] = now + delay + etcd.ttl
            role.lease_granted(etcd.next_lease, now, now + delay)
        elif what == "renew":
            alive = role.lease in etcd.leases
            if alive:
                etcd.leases[role.lease] = now + delay + etcd.ttl
            role.renewed_lease(2 if alive else 0, now, now + delay)
        elif what == "campaign" and role.role is RoleName.CAMPAIGNING:
            if etcd.key is None and role.lease in etcd.leases:
                etcd.revision += 1
                etcd.key = (role.node, etcd.revision, role.lease)
                won = True
            else:
                won = False
            leader, revision = etcd.leader()
            role.campaign_result(won, leader, now, now, revision)
        elif what == "answer_lost" and role.role is RoleName.CAMPAIGNING:
            # The transaction went through (or not), its answer never came.
            if etcd.key is None and role.lease in etcd.leases:
                etcd.revision += 1
                etcd.key = (role.node, etcd.revision, role.lease)
            role.campaign_failed(now)
        elif what == "read_sent":
            reads[i] = etcd.leader()
        elif what == "read_answered" and reads[i] is not None:
            taken = reads[i]
            assert taken is not None
            reads[i] = None
            role.leader_seen(taken[0], now, taken[1])  # perhaps long after it was taken
        elif what == "read":
            leader, revision = etcd.leader()
            role.leader_seen(leader, now, revision)
            key = etcd.key
            if key is not None and key[2] == role.lease and role.lease in etcd.leases:
                # Its own lease holds the key: it leads (or is fenced, waiting for a renewal).
                assert role.role in (RoleName.ACTIVE, RoleName.FENCED), role.role
        elif what == "tick":
            role.tick(now)
        if what != "wait" and delay:
            now += delay
            etcd.expire(now)
        for t in (now, now + 1e-9):
            serving = [r.node for r in nodes if r.may_serve(t)]
            assert len(serving) <= 1, (serving, t, etcd.key)
            for r in nodes:
                if r.may_serve(t):
                    assert r.lease in etcd.leases and etcd.leases[r.lease] > t
                    assert etcd.key is not None and etcd.key[0] == r.node
