"""The asyncio adapter on loopback: which socket answers, and what a failed send does."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from test_proxy_core import invite, target

from trunkguard.proxy import Flow, Proxy, ProxySettings, Target
from trunkguard.proxy._server import Router
from trunkguard.sip import Request, Response, parse_message, parse_uri


def udp_peer(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


async def recv(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), timeout)
    return data, (str(addr[0]), int(addr[1]))


def options(port: int) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-o{port}\r\n"
        f"From: <sip:pbx@127.0.0.1>;tag=q\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: o{port}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def test_each_listener_answers_from_its_own_socket() -> None:
    proxy = Proxy(
        ProxySettings(advertise=("127.0.0.1", 0), allow=(ipaddress.ip_network("127.0.0.0/8"),)),
        [],
    )
    router = Router(proxy)
    await router.start([("udp", "127.0.0.1", 0), ("udp", "127.0.0.2", 0)])
    try:
        caller = udp_peer()
        for _, host, port in router.bound:
            caller.sendto(options(caller.getsockname()[1]), (host, port))
            data, source = await recv(caller)
            assert isinstance(parse_message(data), Response)
            assert source == (host, port)  # not the last listener's address
        caller.close()
    finally:
        await router.stop()


async def test_a_send_that_fails_fails_over_and_the_timers_go_on() -> None:
    b_sock = udp_peer()
    b_flow = Flow("udp", b_sock.getsockname())
    # Carrier a is an IPv6 literal; the router listens on IPv4 only and has no socket
    # toward a, so sending to it raises inside the flush.
    a_flow = Flow("udp", ("::1", 9))
    proxy = Proxy(
        ProxySettings(advertise=("127.0.0.1", 0), allow=(ipaddress.ip_network("127.0.0.0/8"),)),
        [Target("a", parse_uri("sip:[::1]:9"), a_flow), target("b", b_flow)],
    )
    router = Router(proxy)
    await router.start([("udp", "127.0.0.1", 0)])
    try:
        carrier_a = router.carriers.pop(a_flow.addr, None)
        if carrier_a is not None and carrier_a.transport is not None:
            carrier_a.transport.close()
        caller = udp_peer()
        caller.sendto(invite("fail-send-1"), ("127.0.0.1", router.bound[0][2]))
        first, _ = await recv(b_sock)  # the call moved on to b at once
        forwarded = parse_message(first)
        assert isinstance(forwarded, Request) and forwarded.method == "INVITE"
        assert proxy.counters["send_errors"] == 1, proxy.counters
        assert proxy.counters["transport_errors"] == 1, proxy.counters
        # The loop's timer is still armed: the caller's 100 Trying came, and the
        # retransmission timer of the INVITE to b (Timer A) resends it.
        data, _ = await recv(caller)
        assert parse_message(data).status == 100  # type: ignore[union-attr]
        again, _ = await recv(b_sock, timeout=3.0)
        assert again == first
        caller.close()
    finally:
        b_sock.close()
        await router.stop()


async def test_a_stream_connection_from_outside_allow_is_closed_at_once() -> None:
    proxy = Proxy(
        ProxySettings(advertise=("127.0.0.1", 0), allow=(ipaddress.ip_network("127.0.0.2/32"),)),
        [],
    )
    router = Router(proxy)
    await router.start([("tcp", "127.0.0.1", 0)])
    try:
        port = router.bound[0][2]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(options(writer.get_extra_info("sockname")[1]))
        assert await asyncio.wait_for(reader.read(), 5.0) == b""  # closed, nothing said
        writer.close()
        assert proxy.counters["connections_refused_source"] == 1
        assert proxy.counters["messages_in"] == 0 and not router.tcp
        # An allowed source stays connected and is answered.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.2", 0)
        )
        writer.write(options(writer.get_extra_info("sockname")[1]))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
        assert head.startswith(b"SIP/2.0 200 ")
        writer.close()
    finally:
        await router.stop()


async def test_the_load_sample_sees_bytes_waiting_in_a_receive_queue() -> None:
    proxy = Proxy(
        ProxySettings(advertise=("127.0.0.1", 0), allow=(ipaddress.ip_network("127.0.0.0/8"),)),
        [],
    )
    router = Router(proxy)
    await router.start([("udp", "127.0.0.1", 0)])
    try:
        queued, drops, limit = router._socket_load()
        assert (queued, drops) == (0, 0) and limit > 0  # half the buffer the kernel granted
        listener = next(iter(router.udp.values()))
        assert listener.transport is not None
        listener.transport.pause_reading()  # as if the loop were too busy to read
        sender = udp_peer()
        for _ in range(50):
            sender.sendto(options(sender.getsockname()[1]), ("127.0.0.1", router.bound[0][2]))
        await asyncio.sleep(0.05)
        queued, drops, _ = router._socket_load()
        assert queued >= 50 * 200 and drops == 0
        listener.transport.resume_reading()
        sender.close()
    finally:
        await router.stop()


async def test_an_ha_node_sends_to_carriers_from_the_service_address_and_port() -> None:
    """With freebind (an HA node with a service address), the socket toward a carrier
    shares the listener's address and port: a late 2xx reaches whichever node holds the
    address now. Answers still come back through the router to the caller."""
    carrier = udp_peer()
    c_flow = Flow("udp", carrier.getsockname())
    proxy = Proxy(
        ProxySettings(advertise=("127.0.0.1", 0), allow=(ipaddress.ip_network("127.0.0.0/8"),)),
        [target("c", c_flow)],
    )
    router = Router(proxy)
    router.freebind = True
    await router.start([("udp", "127.0.0.1", 0)])
    try:
        listen_port = router.bound[0][2]
        caller = udp_peer()
        caller.sendto(invite("ha-src-1"), ("127.0.0.1", listen_port))
        data, source = await recv(carrier)
        forwarded = parse_message(data)
        assert isinstance(forwarded, Request) and forwarded.method == "INVITE"
        assert source == ("127.0.0.1", listen_port)  # the service address and port
        ringing = (
            "SIP/2.0 180 Ringing\r\n"
            + "".join(f"Via: {v}\r\n" for v in forwarded.values("via"))
            + f"From: {forwarded.get('from')}\r\nTo: {forwarded.get('to')};tag=c1\r\n"
            f"Call-ID: {forwarded.call_id}\r\nCSeq: {forwarded.cseq}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        carrier.sendto(ringing, source)
        for _ in range(5):  # the 100 Trying first, then the relayed 180
            data, _ = await recv(caller)
            answer = parse_message(data)
            assert isinstance(answer, Response)
            if answer.status == 180:
                break
        else:
            raise AssertionError("no 180 relayed to the caller")
        assert router.carriers[c_flow.addr].transport is not None
        caller.close()
    finally:
        await router.stop()
        carrier.close()
