"""Every RFC 4475 torture message through the proxy core: the answer a proxy owes each one.

The parser's own verdicts are in test_sip_torture.py; this is what the router does with
them: relay, answer itself, refuse with the precise status, or drop a response nobody asked
for. Nothing raises, and every refusal names its reason in a Warning header.
"""

from __future__ import annotations

import pytest
from sipgen import TORTURE_DIR as TORTURE
from test_proxy_core import CALLER, Net

from trunkguard.sip import Response, parse_message

FORWARDED = "forwarded"  # 100 Trying to the caller, INVITE to the first carrier
DROPPED = "dropped"  # a response matching no transaction, or bytes that are not SIP

# RFC 3261 §16.3: a proxy checks only what it uses; a bad Date (baddate) is relayed as is.
EXPECTED: dict[str, int | str] = {
    "badaspec": 400, "badbranch": 200, "baddate": FORWARDED, "baddn": 400, "badinv01": 400,
    "badvers": 505, "bcast": DROPPED, "bext01": 420, "bigcode": DROPPED, "clerr": 400,
    "cparam01": 405, "cparam02": 405, "dblreq": 405, "esc01": FORWARDED, "esc02": 405,
    "escnull": 405, "escruri": 400, "insuf": 400, "intmeth": 405, "inv2543": FORWARDED,
    "invut": FORWARDED, "longreq": FORWARDED, "ltgtruri": 400, "lwsdisp": 200, "lwsruri": 400,
    "lwsstart": 400, "mcl01": 400, "mismatch01": 400, "mismatch02": 400, "mpart01": 405,
    "multi01": 400, "ncl": 400, "noreason": DROPPED, "novelsc": 416, "quotbal": 400,
    "regaut01": 405, "regbadct": 405, "regescrt": 405, "scalar02": 400, "scalarlg": DROPPED,
    "sdp01": FORWARDED, "semiuri": 200, "test": DROPPED, "transports": 200, "trws": 400,
    "unkscm": 416, "unksm2": 405, "unreason": DROPPED,
    "wsinv": 481,  # a re-INVITE (To has a tag) for a dialog the router does not know
    "zeromf": 200,  # OPTIONS to the router itself
}  # fmt: skip


def test_table_covers_every_message() -> None:
    assert sorted(p.stem for p in TORTURE.glob("*.dat")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_proxy_answer(name: str) -> None:
    net = Net()
    net.feed((TORTURE / f"{name}.dat").read_bytes(), CALLER)
    out = [(flow, parse_message(data), data) for flow, data in net.proxy.outbox]
    expected = EXPECTED[name]
    if expected == DROPPED:
        assert out == []
        return
    if expected == FORWARDED:
        assert [type(m).__name__ for _, m, _ in out] == ["Response", "Request"]
        assert out[0][1].status == 100  # type: ignore[union-attr]
        return
    assert len(out) == 1
    flow, response, data = out[0]
    assert flow == CALLER and isinstance(response, Response)
    assert response.status == expected
    if isinstance(expected, int) and expected in (400, 505):
        assert b"Warning: 399 127.0.0.1:5060 " in data
