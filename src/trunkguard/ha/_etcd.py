"""etcd v3 through its JSON gateway (``/v3/...``), over aiohttp.

Keys and values travel base64-encoded; 64-bit numbers come back as strings.
Each request goes to one member with a short timeout; on any failure the next
member is tried, and the one that answered is used first next time. Nothing here
decides anything: the role machine and the node do.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger("trunkguard.ha")

MAX_LINE = 4 << 20  # bytes: one watch message (many events at once) at most


class EtcdError(Exception):
    """No member answered, or the answer was not etcd's."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: str  # "PUT" or "DELETE"
    kv: KeyValue


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return b64(bytes(raw))


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=base64.b64decode(raw.get("key", "")).decode("utf-8", "replace"),
        value=base64.b64decode(raw.get("value", "")),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
        lease=int(raw.get("lease", 0)),
    )


class Etcd:
    def __init__(self, endpoints: tuple[str, ...], timeout: float = 0.5) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self._first = 0  # the member that answered last
        self._session: aiohttp.ClientSession | None = None
        self.errors = 0  # requests no member answered

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                trust_env=False, connector=aiohttp.TCPConnector(limit=16)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._first]

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first member that answers; EtcdError if none."""
        why = "no endpoints"
        n = len(self.endpoints)
        for k in range(n):
            i = (self._first + k) % n
            url = self.endpoints[i] + path
            try:
                async with self._client().post(
                    url, json=body, timeout=aiohttp.ClientTimeout(total=self.timeout)
                ) as response:
                    data = await response.json(content_type=None)
                    if response.status != 200 or not isinstance(data, dict):
                        message = data.get("error") if isinstance(data, dict) else data
                        raise EtcdError(f"{response.status}: {str(message)[:200]}")
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError, EtcdError) as exc:
                why = f"{self.endpoints[i]}: {exc or type(exc).__name__}"
                continue
            self._first = i
            return data
        self.errors += 1
        raise EtcdError(why)

    # -- leases ----------------------------------------------------------------------------
    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new lease: (id, the TTL etcd gave it)."""
        data = await self.call("/v3/lease/grant", {"TTL": ttl})
        if "ID" not in data:
            raise EtcdError(f"lease grant refused: {data.get('error', data)}")
        return int(data["ID"]), int(data.get("TTL", ttl))

    async def keepalive(self, lease: int) -> int:
        """Renew ``lease``; its TTL now (0: etcd no longer has it)."""
        data = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        result = data.get("result")
        if not isinstance(result, dict):
            raise EtcdError(f"keepalive: {data.get('error', data)}")
        return int(result.get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        await self.call("/v3/lease/revoke", {"ID": str(lease)})

    # -- keys ------------------------------------------------------------------------------
    async def get(self, key: str) -> tuple[KeyValue | None, int]:
        """``key`` (or None) and the store's revision."""
        data = await self.call("/v3/kv/range", {"key": b64(key)})
        kvs = data.get("kvs") or []
        return (_kv(kvs[0]) if kvs else None), int(data["header"]["revision"])

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        body = {"key": b64(prefix), "range_end": prefix_end(prefix)}
        data = await self.call("/v3/kv/range", body)
        return [_kv(kv) for kv in data.get("kvs") or []], int(data["header"]["revision"])

    async def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        data = await self.call("/v3/kv/put", body)
        return int(data["header"]["revision"])

    async def create(self, key: str, value: bytes, lease: int) -> tuple[bool, KeyValue | None]:
        """Put ``key`` only if absent, bound to ``lease``: (won, the key as it is now)."""
        compare = [{"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}]
        body = {
            "compare": compare,
            "success": [
                {"request_put": {"key": b64(key), "value": b64(value), "lease": str(lease)}},
                {"request_range": {"key": b64(key)}},
            ],
            "failure": [{"request_range": {"key": b64(key)}}],
        }
        data = await self.call("/v3/kv/txn", body)
        won = bool(data.get("succeeded"))
        current = None
        for response in data.get("responses") or []:
            ranged = response.get("response_range")
            if ranged and ranged.get("kvs"):
                current = _kv(ranged["kvs"][0])
        return won, current

    async def delete_if(self, key: str, mod_revision: int) -> bool:
        """Delete ``key`` if it is still at ``mod_revision`` (our own leader key, say)."""
        compare = [
            {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}
        ]
        body = {"compare": compare, "success": [{"request_delete_range": {"key": b64(key)}}]}
        data = await self.call("/v3/kv/txn", body)
        return bool(data.get("succeeded"))

    # -- watches ---------------------------------------------------------------------------
    async def watch(
        self, key: str, *, prefix: bool, start_revision: int
    ) -> AsyncIterator[tuple[int, list[WatchEvent]]]:
        """Events on ``key`` (or every key under it) from ``start_revision``, as they come.

        Yields (revision, events); ends with EtcdError when the stream breaks (the
        caller reads the state afresh and watches again from where it is).
        """
        request: dict[str, Any] = {"key": b64(key), "start_revision": str(start_revision)}
        if prefix:
            request["range_end"] = prefix_end(key)
        url = self.endpoint + "/v3/watch"
        try:
            async with self._client().post(
                url,
                json={"create_request": request},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout),
            ) as response:
                if response.status != 200:
                    raise EtcdError(f"watch: {response.status}")
                while True:
                    line = await response.content.readline()
                    if not line:
                        raise EtcdError("watch stream closed")
                    if len(line) > MAX_LINE:
                        raise EtcdError("watch message too long")
                    data = json.loads(line)
                    result = data.get("result") if isinstance(data, dict) else None
                    if not isinstance(result, dict):
                        raise EtcdError(f"watch: {str(data)[:200]}")
                    if result.get("canceled") or result.get("compact_revision"):
                        raise EtcdError(f"watch canceled: {result.get('cancel_reason', '')}")
                    revision = int(result.get("header", {}).get("revision", 0))
                    events = [
                        WatchEvent(e.get("type", "PUT"), _kv(e.get("kv", {})))
                        for e in result.get("events") or []
                    ]
                    yield revision, events
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            self._first = (self._first + 1) % len(self.endpoints)
            raise EtcdError(f"watch on {url}: {exc or type(exc).__name__}") from None
