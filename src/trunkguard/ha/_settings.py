"""What the ``ha:`` section of the config says, as the HA node uses it."""

from __future__ import annotations

from dataclasses import dataclass

ACTIVE_STANDBY = "active-standby"
ACTIVE_ACTIVE = "active-active"


@dataclass(frozen=True, slots=True)
class HaSettings:
    node: str  # this node's unique name
    etcd: tuple[str, ...]  # http://host:port of each member, tried in turn
    prefix: str = "/trunkguard/main"
    mode: str = ACTIVE_STANDBY
    lease_ttl: float = 2.0  # s, etcd's lease (it may raise a tiny TTL to its minimum)
    renew_every: float = 0.25  # s between keepalives
    fence_after: float = 1.2  # s without a renewal: stop serving (< lease_ttl)
    service_address: str | None = None  # "10.77.0.100/24": the floating IP of the active
    interface: str | None = None
    acquire: tuple[str, ...] = ()  # argv; empty: ip addr add + arping
    release: tuple[str, ...] = ()  # argv; empty: ip addr del
    hook_timeout: float = 5.0  # s, a hook that runs longer is killed (and counted)
    request_timeout: float = 0.5  # s, one request to one etcd member
    load_every: float = 0.25  # s, active-active: how often a node publishes its usage

    @property
    def address(self) -> str | None:
        """The service address without its prefix length ("10.77.0.100"), or None."""
        if self.service_address is None:
            return None
        return self.service_address.split("/", 1)[0]

    def key(self, *parts: str) -> str:
        return "/".join((self.prefix.rstrip("/"), *parts))
