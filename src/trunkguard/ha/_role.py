"""A node's role in an active/standby pair: who may serve, decided without I/O.

Invariants, in plain words:

- A node serves only while it is ACTIVE *and* its last successful lease renewal
  is younger than ``fence_after`` on its own monotonic clock (:meth:`Role.may_serve`).
  That second half needs no message from anyone: a node cut off from etcd stops
  serving on its own timer, even if no input ever reaches it again.
- A renewal counts from the moment its request was *sent*, never from when the
  answer came back: etcd restarts the lease's TTL when it handles the request,
  which is later, so etcd's expiry is always at least ``lease_ttl`` after the
  time we count from, and ``fence_after < lease_ttl`` leaves the margin. The
  other node can win the leader key only once the lease is gone (the key is bound
  to it), so it wins only after this node has stopped serving.
- A node becomes ACTIVE only by winning the campaign (creating the leader key,
  whose create revision is its epoch), by finding the key bound to its own live
  lease (its win, answered late or read first by a stale look), or, when FENCED,
  by seeing the leader key still name it with the same epoch after a renewal that
  proved its lease alive. A lease that etcd says is gone (keepalive TTL 0) is
  never used again. A key bound to another lease of the same node name (an
  earlier run of it) is someone else's: it waits for it to expire.
- Looks at the leader key are ordered by etcd's revision: a read answered late
  (sent before the campaign that won, say) never overrides a newer one.
- In active-active mode there is no leader: every node serves.

States: STANDBY (follows, campaigns when the leader key is absent), CAMPAIGNING
(a create-if-absent transaction in flight), ACTIVE (holds the key), FENCED (held
it, but could not renew in time: not serving until it knows where it stands).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ._settings import ACTIVE_ACTIVE, HaSettings


class RoleName(StrEnum):
    STANDBY = "standby"
    CAMPAIGNING = "campaigning"
    ACTIVE = "active"
    FENCED = "fenced"


class Action(StrEnum):
    """What the adapter must do; in the order returned."""

    GRANT_LEASE = "grant lease"  # ask etcd for a new lease
    CAMPAIGN = "campaign"  # create the leader key if absent, with our lease
    CHECK_LEADER = "check leader"  # read the leader key (node, epoch)
    SERVE = "serve"  # open the gate: the service listeners pass traffic, probes run
    STOP_SERVING = "stop serving"  # close the gate: drop everything, stop probes
    ACQUIRE_ADDRESS = "acquire address"  # put the service address on the interface
    RELEASE_ADDRESS = "release address"  # take it off


@dataclass(frozen=True, slots=True)
class Leader:
    node: str
    epoch: int  # the leader key's create revision
    lease: int | None = None  # the lease the key is bound to, when known


class Role:
    """One node's role; every method takes ``now`` (the node's monotonic clock)."""

    def __init__(self, settings: HaSettings) -> None:
        self.settings = settings
        self.node = settings.node
        self.active_active = settings.mode == ACTIVE_ACTIVE
        self.role = RoleName.ACTIVE if self.active_active else RoleName.STANDBY
        self.lease: int | None = None
        self.renewed: float | None = None  # send time of the last renewal etcd accepted
        self.epoch: int | None = None  # ours, while we hold (or held) the leader key
        self.leader: Leader | None = None  # the leader key as last seen (None: absent/unknown)
        self.leader_known = False  # have we read the leader key at all?
        self.leader_revision = 0  # etcd's revision of the newest look at the leader key
        self.etcd_ok = False
        self.etcd_lost_since: float | None = None
        self.takeovers = 0  # times this node became active
        self.fences = 0  # times it stopped serving because it could not renew
        self._serving = self.active_active  # what the adapter was last told

    # -- reading -------------------------------------------------------------------------
    def fence_at(self) -> float | None:
        """When this node stops serving if no renewal succeeds before (ACTIVE only)."""
        if self.role is not RoleName.ACTIVE or self.renewed is None:
            return None
        return self.renewed + self.settings.fence_after

    def may_serve(self, now: float) -> bool:
        """The gate: checked on every datagram, so a late timer never extends serving."""
        if self.active_active:
            return True
        at = self.fence_at()
        return at is not None and now < at

    def next_deadline(self) -> float | None:
        return None if self.active_active else self.fence_at()

    # -- inputs --------------------------------------------------------------------------
    def start(self, now: float) -> list[Action]:
        del now
        return [Action.GRANT_LEASE]

    def lease_granted(self, lease: int, sent: float, now: float) -> list[Action]:
        self.lease = lease
        self.renewed = sent
        self._etcd(True, now)
        if self.active_active:
            return []
        if self.role is RoleName.STANDBY:
            self.role = RoleName.CAMPAIGNING
            return [Action.CAMPAIGN]
        return []

    def grant_failed(self, now: float) -> list[Action]:
        self._etcd(False, now)
        return self.tick(now)

    def campaign_result(
        self, won: bool, leader: Leader | None, sent: float, now: float,
        revision: int | None = None,
    ) -> list[Action]:  # fmt: skip
        """The create-if-absent transaction's answer: ``leader`` is the key as it now is."""
        del sent
        self._etcd(True, now)
        if not self._stale(revision):  # the campaign is decided by its own answer anyway
            self.leader, self.leader_known = leader, True
        if self.role is not RoleName.CAMPAIGNING:
            return []
        won = won or self._held_by_our_lease(leader)  # our own earlier win, answered late
        if won and leader is not None and leader.node == self.node and self.lease is not None:
            self.role = RoleName.ACTIVE
            self.epoch = leader.epoch
            self.takeovers += 1
            return self._gate(now)
        self.role = RoleName.STANDBY
        if leader is None and self.lease is not None:
            # Lost a race with a key that is already gone again: try once more.
            self.role = RoleName.CAMPAIGNING
            return [Action.CAMPAIGN]
        return []

    def campaign_failed(self, now: float) -> list[Action]:
        """etcd did not answer the campaign: we do not know; back to standby."""
        self._etcd(False, now)
        if self.role is RoleName.CAMPAIGNING:
            self.role = RoleName.STANDBY
        return []

    def renewed_lease(self, ttl: int, sent: float, now: float) -> list[Action]:
        """A keepalive's answer: ``ttl`` > 0 the lease lives (from ``sent`` on), 0 it is gone."""
        self._etcd(True, now)
        if self.lease is None:
            return []
        if ttl <= 0:
            return self._lease_gone(now)
        if self.renewed is None or sent > self.renewed:
            self.renewed = sent
        if self.role is RoleName.FENCED:
            return [Action.CHECK_LEADER]
        return self.tick(now)

    def renew_failed(self, now: float) -> list[Action]:
        """No answer from any member: keep the role until the fence timer says otherwise."""
        self._etcd(False, now)
        return self.tick(now)

    def leader_seen(
        self, leader: Leader | None, now: float, revision: int | None = None
    ) -> list[Action]:
        """The leader key as read or watched (None: absent), at etcd's ``revision`` if known."""
        self._etcd(True, now)
        if self._stale(revision):
            return []
        self.leader, self.leader_known = leader, True
        if self.active_active:
            return []
        if self.role in (RoleName.STANDBY, RoleName.CAMPAIGNING) and self._held_by_our_lease(
            leader
        ):
            # The key is bound to the lease we hold: we won it (the answer was lost, or a
            # stale look demoted us). Nobody else can hold it while that lease lives.
            assert leader is not None
            self.role, self.epoch = RoleName.ACTIVE, leader.epoch
            self.takeovers += 1
            return self._gate(now)
        mine = leader is not None and leader.node == self.node and leader.epoch == self.epoch
        if self.role is RoleName.FENCED:
            if mine and self.may_serve_if_active(now):
                self.role = RoleName.ACTIVE
                return self._gate(now)
            if leader is None or not mine:
                self.role, self.epoch = RoleName.STANDBY, None
                return self._after_standby(leader)
            return []
        if self.role is RoleName.ACTIVE and not mine:
            # Our key is gone or someone else's: whatever happened, we are not the leader.
            self.role, self.epoch = RoleName.STANDBY, None
            return self._gate(now) + self._after_standby(leader)
        if self.role is RoleName.STANDBY and leader is None and self.lease is not None:
            self.role = RoleName.CAMPAIGNING
            return [Action.CAMPAIGN]
        return []

    def tick(self, now: float) -> list[Action]:
        """The fence timer: an ACTIVE node whose renewal is too old stops serving now."""
        if self.role is RoleName.ACTIVE and not self.may_serve(now):
            self.role = RoleName.FENCED
            self.fences += 1
            return self._gate(now)
        return []

    def resign(self, now: float) -> list[Action]:
        """Stopping: stop serving (the adapter then revokes the lease)."""
        if self.active_active:
            return []
        self.role, self.epoch = RoleName.STANDBY, None
        self.lease = None
        return self._gate(now)

    # -- helpers -------------------------------------------------------------------------
    def _stale(self, revision: int | None) -> bool:
        """Is a look at the leader key at ``revision`` older than one already taken?"""
        if revision is None:
            return False
        if revision < self.leader_revision:
            return True
        self.leader_revision = revision
        return False

    def _held_by_our_lease(self, leader: Leader | None) -> bool:
        return (
            leader is not None
            and leader.node == self.node
            and self.lease is not None
            and leader.lease == self.lease
        )

    def may_serve_if_active(self, now: float) -> bool:
        return self.renewed is not None and now < self.renewed + self.settings.fence_after

    def _lease_gone(self, now: float) -> list[Action]:
        self.lease, self.renewed = None, None
        out: list[Action] = []
        if self.role in (RoleName.ACTIVE, RoleName.FENCED, RoleName.CAMPAIGNING):
            self.role, self.epoch = RoleName.STANDBY, None
            out += self._gate(now)
        return [*out, Action.GRANT_LEASE]

    def _after_standby(self, leader: Leader | None) -> list[Action]:
        if leader is None and self.lease is not None:
            self.role = RoleName.CAMPAIGNING
            return [Action.CAMPAIGN]
        return []

    def _gate(self, now: float) -> list[Action]:
        """SERVE / STOP_SERVING (with the address) when what may be served changed."""
        serving = self.role is RoleName.ACTIVE and self.may_serve(now)
        if serving == self._serving:
            return []
        self._serving = serving
        if serving:
            return [Action.ACQUIRE_ADDRESS, Action.SERVE]
        return [Action.STOP_SERVING, Action.RELEASE_ADDRESS]

    def _etcd(self, ok: bool, now: float) -> None:
        if ok:
            self.etcd_ok, self.etcd_lost_since = True, None
        elif self.etcd_ok or self.etcd_lost_since is None:
            self.etcd_ok, self.etcd_lost_since = False, now
