"""WebSocket end-to-end tests: NATS and MQTT over one WebSocket listener.

The real Junction binary (conftest's ``server_factory`` starts it with
``--ws-port -1`` and reads ``Listening for websocket clients on ws://HOST:PORT``
into ``server.ws_port``), and on 127.0.0.1 only:

* the ``websockets`` library speaking the NATS protocol (``ws_helpers.ws_nats``);
* ``ws_helpers.RawWs``, a hand-written RFC 6455 client, where the exact frames
  matter (byte-at-a-time frames, control frames, RSV1, cut connections,
  malformed handshakes);
* paho-mqtt 2.x over ``transport="websockets"`` (MQTT 3.1.1 and 5.0, path /mqtt);
* nats-py and paho-mqtt over TCP as the other side of the bus.

The NATS-over-WebSocket expectations (framing, compression, origin checks,
handshake timeout) were checked against nats-server 2.9's WebSocket listener,
the MQTT-over-WebSocket ones against mosquitto 2.0's; the status codes of
rejected handshakes, ``max_message_size`` and the one-listener-for-both-protocols
rule are Junction's own (see README).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest

from conftest import Clients, RawClient, async_test, sync_subs
from mqtt_helpers import (
    _MQTT_LISTEN_RE,
    SUBACK,
    V5,
    V311,
    Broker,
    Mqtt,
    connect_packet,
    free_port,
    publish_packet,
    subscribe_packet,
)
from ws_helpers import (
    HOST,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    Frame,
    RawWs,
    client_tls,
    encode_frame,
    handshake_request,
    http_exchange,
    raw_ws_nats,
    self_signed_cert,
    ws_nats,
    ws_open,
    ws_port_of,
)

VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])

DEFLATE_PARAMS = {"permessage-deflate", "server_no_context_takeover", "client_no_context_takeover"}


# ==========================================================================
# Helpers
# ==========================================================================


def ws_config(*lines: str, no_tls: bool = True) -> str:
    """A config file with a ``websocket { ... }`` block (its port comes from --ws-port -1)."""
    body = (["no_tls: true"] if no_tls else []) + list(lines)
    return "websocket {\n" + "".join(f"  {line}\n" for line in body) + "}\n"


def mqtt_tcp_port(srv) -> int:
    for line in srv.log:
        m = _MQTT_LISTEN_RE.search(line)
        if m:
            return int(m.group(2))
    pytest.fail(f"no 'Listening for MQTT clients' line; log:\n{srv.log_text()}")


def ws_broker(srv) -> Broker:
    """The WebSocket listener as an mqtt_helpers.Broker (for mqtt_helpers.Mqtt)."""
    return Broker(kind="junction", port=ws_port_of(srv), nats_port=srv.port, http_port=srv.http_port, process=srv)


def tcp_broker(srv) -> Broker:
    return Broker(kind="junction", port=mqtt_tcp_port(srv), nats_port=srv.port, http_port=srv.http_port,
                  process=srv)


def ext_params(value: str | None) -> set:
    """The parameters of a Sec-WebSocket-Extensions value, as a set of tokens."""
    if not value:
        return set()
    return {p.strip() for p in value.split(";") if p.strip()}


def mqtt_connack_ok(data: bytes) -> bool:
    """A 3.1.1 CONNACK accepting the connection: 20 02 00 00."""
    return data[:4] == bytes([0x20, 0x02, 0x00, 0x00])


async def read_mqtt_bytes(rw: RawWs, n: int, timeout: float = 5.0) -> bytes:
    """At least ``n`` bytes of MQTT data from the data messages of ``rw``."""
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < n:
        m = await rw.read_message(max(0.0, deadline - time.monotonic()))
        assert m is not None and not isinstance(m, Frame), f"connection ended after {got!r}: {m!r}"
        assert m.opcode == OP_BINARY, f"MQTT data came in a frame with opcode {m.opcode:#x}"
        got += m.data
    return got


async def expect_msg(client: RawClient, subject: bytes, payload: bytes, timeout: float = 5.0):
    op = await client.read_op(timeout)
    assert op is not None, "connection closed while waiting for a MSG"
    assert op[0] == "MSG" and op[1] == subject and op[4] == payload, \
        f"expected MSG {subject!r} {payload[:60]!r}, got {str(op)[:300]}"
    return op


async def ping_pong(client: RawClient) -> None:
    seen = await client.ping()
    assert not seen, f"unexpected operations before PONG: {str(seen)[:300]}"


@pytest.fixture
def mqtt_clients():
    """paho clients (mqtt_helpers.Mqtt), closed at teardown: make(broker, version, **kw)."""
    made: list[Mqtt] = []

    def make(broker: Broker, version: int = V5, connect: bool = True, **kw) -> Mqtt:
        c = Mqtt(broker, f"ws-{uuid.uuid4().hex[:10]}", version, True, **kw)
        made.append(c)
        if connect:
            c.connect()
        return c

    yield make
    for c in made:
        c.close()


# ==========================================================================
# 1. The listener: flags, config and its log line
# ==========================================================================


@async_test()
async def test_listener_logged_and_speaks_nats(server):
    """--ws-port -1 picks a port, logs ws://127.0.0.1:PORT and serves NATS there: INFO first."""
    assert server.ws_scheme == "ws"
    assert server.ws_host == "127.0.0.1"
    assert server.ws_port and server.ws_port not in (server.port, server.http_port)
    c = await ws_nats(server, send_connect=False)
    try:
        assert "server_id" in c.info and c.info.get("max_payload", 0) > 0, c.info
        await c.send(b'CONNECT {"verbose":true}\r\n')
        assert await c.readline() == b"+OK"
        await ping_pong(c)
    finally:
        await c.close()


def test_ws_port_zero_turns_the_listener_off(server_factory):
    srv = server_factory(args=["--ws-port", "0"])
    assert srv.ws_port is None
    assert not any("websocket clients" in line for line in srv.log), srv.log_text()


@async_test()
async def test_port_and_host_from_config(server_factory):
    port = free_port()
    srv = server_factory(config=ws_config("host: 127.0.0.1", f"port: {port}"), ws_flag=False)
    assert (srv.ws_scheme, srv.ws_host, srv.ws_port) == ("ws", "127.0.0.1", port)
    c = await ws_nats(srv)
    try:
        await ping_pong(c)
    finally:
        await c.close()


def test_flag_overrides_config_port(server_factory):
    p_conf, p_flag = free_port(), free_port()
    while p_flag == p_conf:
        p_flag = free_port()
    srv = server_factory(config=ws_config(f"port: {p_conf}"), args=["--ws-port", str(p_flag)], ws_flag=False)
    assert srv.ws_port == p_flag


# ==========================================================================
# 2. NATS over WebSocket
# ==========================================================================


@pytest.mark.parametrize("path", ["/", "/nats", "/some/deep/path?client=1"])
@async_test()
async def test_nats_on_any_path(server, path):
    c = await ws_nats(server, path=path)
    try:
        await ping_pong(c)
        assert c.ws.subprotocol is None
    finally:
        await c.close()


@async_test()
async def test_server_sends_nats_in_binary_frames(server):
    """nats.ws reads binary frames: INFO and everything after it come as unmasked binary frames."""
    rw = await RawWs.open(ws_port_of(server))
    try:
        assert rw.response.header("sec-websocket-protocol") is None
        first = await rw.read_message()
        assert first is not None and not isinstance(first, Frame), first
        assert first.opcode == OP_BINARY and first.data.startswith(b"INFO {"), first
        assert not first.compressed
        await rw.send_binary(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        pong = await rw.read_message()
        assert pong.opcode == OP_BINARY and pong.data == b"PONG\r\n", pong
    finally:
        await rw.close()


@async_test()
async def test_ws_nats_and_tcp_nats_meet_both_ways(server):
    async with Clients(server) as c:
        nc = await c.connect()
        tcp_sub = await nc.subscribe("to.tcp")
        await sync_subs(nc)
        ws = await ws_nats(server)
        try:
            # WebSocket -> TCP, with a reply subject and with headers.
            await ws.send(b"PUB to.tcp reply.here 5\r\nhello\r\n")
            hdr = b"NATS/1.0\r\nX-K: v1\r\n\r\n"
            await ws.send(b"HPUB to.tcp %d %d\r\n%sworld\r\n" % (len(hdr), len(hdr) + 5, hdr))
            m1 = await tcp_sub.next_msg(timeout=5)
            m2 = await tcp_sub.next_msg(timeout=5)
            assert (m1.subject, m1.reply, m1.data) == ("to.tcp", "reply.here", b"hello")
            assert (m2.data, m2.headers) == (b"world", {"X-K": "v1"})

            # TCP -> WebSocket (wildcard subscription).
            await ws.send(b"SUB to.ws.* 7\r\n")
            await ping_pong(ws)
            await nc.publish("to.ws.x", b"from tcp")
            await nc.flush(timeout=5)
            op = await expect_msg(ws, b"to.ws.x", b"from tcp")
            assert op[2] == b"7"

            # Request from TCP answered by a responder on WebSocket.
            await ws.send(b"SUB svc.echo 8\r\n")
            await ping_pong(ws)
            req = asyncio.ensure_future(nc.request("svc.echo", b"question", timeout=5))
            op = await ws.read_op()
            assert op[0] == "MSG" and op[1] == b"svc.echo" and op[3] is not None, op
            await ws.send(b"PUB " + op[3] + b" 6\r\nanswer\r\n")
            assert (await req).data == b"answer"
        finally:
            await ws.close()


@async_test()
async def test_two_ws_nats_clients(server):
    a = await ws_nats(server)
    b = await ws_nats(server, path="/other")
    try:
        await a.send(b"SUB chat 1\r\n")
        await ping_pong(a)
        await b.send(b"PUB chat 2\r\nhi\r\n")
        await expect_msg(a, b"chat", b"hi")
    finally:
        await a.close()
        await b.close()


@async_test()
async def test_byte_at_a_time_frames(server):
    """Every byte of CONNECT, SUB, PUB and PING in its own WebSocket frame."""
    async with Clients(server) as c:
        nc = await c.connect()
        tcp_sub = await nc.subscribe("bytes.one")
        await sync_subs(nc)
        ws = await ws_open(f"ws://{HOST}:{ws_port_of(server)}/", compression=None)
        try:
            info = await asyncio.wait_for(ws.recv(), 5)
            assert bytes(info).startswith(b"INFO {")
            ops = (b'CONNECT {"verbose":false}\r\nSUB bytes.* 1\r\n'
                   b"PUB bytes.one 11\r\nhello\r\nbyte\r\nPING\r\n")
            for i in range(len(ops)):
                await ws.send(ops[i:i + 1])
            got = b""
            deadline = time.monotonic() + 5
            while b"PONG\r\n" not in got:
                got += await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
            assert got == b"MSG bytes.one 1 11\r\nhello\r\nbyte\r\nPONG\r\n", got
            m = await tcp_sub.next_msg(timeout=5)
            assert m.data == b"hello\r\nbyte"
        finally:
            await ws.close()


@async_test()
async def test_many_ops_in_one_frame(server):
    ws = await ws_nats(server, send_connect=False)
    try:
        ops = b'CONNECT {"verbose":false}\r\nSUB many 1\r\n'
        ops += b"".join(b"PUB many %d\r\n%s\r\n" % (len(b"m%d" % i), b"m%d" % i) for i in range(200))
        ops += b"PING\r\n"
        await ws.send(ops)  # one binary message, one frame
        for i in range(200):
            await expect_msg(ws, b"many", b"m%d" % i)
        assert await ws.readline() == b"PONG"
    finally:
        await ws.close()


@async_test()
async def test_op_split_across_frames_anywhere(server):
    """Splits inside the verb, the subject, the size, the payload and the CRLF."""
    ws = await ws_nats(server)
    try:
        await ws.send(b"SUB split 1\r\nPING\r\n")
        assert await ws.readline() == b"PONG"
        for chunk in (b"PU", b"B spl", b"it 1", b"0\r", b"\nabcde", b"fghij\r", b"\nPI", b"NG\r\n"):
            await ws.send(chunk)
        await expect_msg(ws, b"split", b"abcdefghij")
        assert await ws.readline() == b"PONG"
    finally:
        await ws.close()


@async_test()
async def test_fragmented_message_continuation_frames(server):
    """One WebSocket message in several frames (FIN=0 ... continuation FIN=1), ops across them."""
    ws = await ws_nats(server)
    try:
        await ws.send(b"SUB frag 1\r\nPING\r\n")
        assert await ws.readline() == b"PONG"
        await ws.ws.send([b"PUB fr", b"ag 3\r\nab", b"c\r\nPUB frag 1\r\nz\r\n", b"PING\r\n"])
        await expect_msg(ws, b"frag", b"abc")
        await expect_msg(ws, b"frag", b"z")
        assert await ws.readline() == b"PONG"
    finally:
        await ws.close()


@async_test()
async def test_text_frames_are_accepted_as_data(server):
    ws = await ws_open(f"ws://{HOST}:{ws_port_of(server)}/", compression=None)
    try:
        info = await asyncio.wait_for(ws.recv(), 5)
        assert bytes(info).startswith(b"INFO ")
        await ws.send('CONNECT {"verbose":false}\r\nSUB txt 1\r\n')  # str: a text frame
        await ws.send("PUB txt 4\r\nt\u00e9x\r\nPING\r\n")  # UTF-8 payload: 4 bytes
        got = b""
        deadline = time.monotonic() + 5
        while b"PONG\r\n" not in got:
            m = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
            got += m if isinstance(m, bytes) else m.encode()
        assert got == "MSG txt 1 4\r\nt\u00e9x\r\nPONG\r\n".encode(), got
    finally:
        await ws.close()


@async_test()
async def test_large_payloads_both_ways(server):
    """900 KB (under max_payload) through WebSocket in both directions, byte for byte."""
    big = bytes(range(256)) * (900 * 1024 // 256)
    async with Clients(server) as c:
        nc = await c.connect()
        tcp_sub = await nc.subscribe("big.to.tcp")
        await sync_subs(nc)
        ws = await ws_nats(server)
        try:
            await ws.send(b"PUB big.to.tcp %d\r\n%s\r\n" % (len(big), big))
            assert (await tcp_sub.next_msg(timeout=10)).data == big
            await ws.send(b"SUB big.to.ws 1\r\n")
            await ping_pong(ws)
            await nc.publish("big.to.ws", big[::-1])
            await nc.flush(timeout=5)
            await expect_msg(ws, b"big.to.ws", big[::-1], timeout=10)
        finally:
            await ws.close()


@async_test()
async def test_nats_errors_reach_ws_client(server):
    """A protocol error is the same -ERR as over TCP, then the connection closes."""
    ws = await ws_nats(server)
    try:
        await ws.send(b"BOGUS\r\n")
        line = await ws.readline()
        assert line.startswith(b"-ERR 'Unknown Protocol Operation'"), line
        rest = await ws.read_until_closed(5)
        assert b"PONG" not in rest
    finally:
        await ws.close()


# ==========================================================================
# 3. Control frames and closing
# ==========================================================================


@pytest.mark.parametrize("payload", [b"", b"hello-123", bytes(range(125))], ids=["empty", "text", "max"])
@async_test()
async def test_ping_frame_gets_pong_with_same_payload(server, payload):
    rw = await RawWs.open(ws_port_of(server))
    try:
        info = await rw.read_message()
        assert info.data.startswith(b"INFO ")
        await rw.send_frame(OP_PING, payload)
        f = await rw.read_frame()
        assert f is not None and f.opcode == OP_PONG and f.fin, f
        assert f.payload == payload
        # The connection still works after it.
        await rw.send_binary(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        m = await rw.read_message()
        assert m.data == b"PONG\r\n"
    finally:
        await rw.close()


@async_test()
async def test_ping_between_fragments(server):
    """A control frame may come between the frames of a fragmented message (RFC 6455 5.4)."""
    rw = await RawWs.open(ws_port_of(server))
    try:
        await rw.read_message()
        await rw.send_frame(OP_BINARY, b"CONNECT {\"verbose\":false}\r\nPI", fin=False)
        await rw.send_frame(OP_PING, b"mid")
        await rw.send_frame(0x0, b"NG\r\n", fin=True)
        pongs = []
        m = await rw.read_message(on_control=pongs.append)
        assert m.data == b"PONG\r\n"
        assert [(f.opcode, f.payload) for f in pongs] == [(OP_PONG, b"mid")]
    finally:
        await rw.close()


@async_test()
async def test_client_close_frame_is_answered_and_tcp_closed(server):
    rw = await RawWs.open(ws_port_of(server))
    try:
        await rw.read_message()
        await rw.send_frame(OP_CLOSE, (1000).to_bytes(2, "big") + b"bye")
        f = await rw.expect_close()
        assert f.close_code in (None, 1000), f
        await rw.expect_eof()
    finally:
        await rw.close()


@async_test()
async def test_websockets_library_clean_close(server):
    """The websockets library's close handshake completes (code 1000 both ways)."""
    c = await ws_nats(server)
    await ping_pong(c)
    await asyncio.wait_for(c.ws.close(), 5)
    assert c.ws.close_code == 1000
    rcvd = c.ws.protocol.close_rcvd
    assert rcvd is not None and rcvd.code == 1000, rcvd


@pytest.mark.parametrize("cut", ["in-header", "in-payload", "in-extended-length"])
@async_test()
async def test_connection_cut_mid_frame_does_not_disturb_others(server, cut):
    async with Clients(server) as c:
        nc = await c.connect()
        tcp_sub = await nc.subscribe("cut.>")
        await sync_subs(nc)
        good = await ws_nats(server)
        await good.send(b"SUB cut.> 1\r\n")
        await ping_pong(good)

        bad = await RawWs.open(ws_port_of(server))
        await bad.read_message()
        await bad.send_binary(b"CONNECT {\"verbose\":false}\r\n")
        partial_op = b"PUB cut.partial 500\r\n" + b"p" * 20
        if cut == "in-payload":
            frame = encode_frame(OP_BINARY, partial_op + b"p" * 480 + b"\r\n")
            await bad.send_raw(frame[:len(frame) // 3])
        elif cut == "in-header":
            await bad.send_raw(encode_frame(OP_BINARY, partial_op)[:1])
        else:
            await bad.send_raw(encode_frame(OP_BINARY, b"x" * 70000)[:3])
        await asyncio.sleep(0.1)
        # Cut: RST (SO_LINGER 0) so the server sees an abrupt end.
        sock = bad.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        await bad.close()
        await asyncio.sleep(0.2)

        await good.send(b"PUB cut.ws 4\r\nfine\r\n")
        assert (await tcp_sub.next_msg(timeout=5)).data == b"fine"
        await expect_msg(good, b"cut.ws", b"fine")
        await nc.publish("cut.tcp", b"also")
        await nc.flush(timeout=5)
        await expect_msg(good, b"cut.tcp", b"also")
        assert (await tcp_sub.next_msg(timeout=5)).subject == "cut.tcp"
        # The half-sent PUB was never delivered.
        assert await good.quiet(0.3) == []
        # And new WebSocket clients are still accepted.
        fresh = await ws_nats(server)
        await ping_pong(fresh)
        await fresh.close()
        await good.close()
        assert server.running()


# ==========================================================================
# 4. Message size limit
# ==========================================================================


async def _assert_1009(rw: RawWs) -> None:
    f = await rw.expect_close(timeout=10)
    assert f.close_code == 1009, f"close frame {f!r}, expected status 1009 (message too big)"
    await rw.expect_eof(timeout=10)


@async_test()
async def test_oversized_message_closed_with_1009(server_factory):
    srv = server_factory(config=ws_config("max_message_size: 1024"))
    async with Clients(srv) as c:
        nc = await c.connect()
        tcp_sub = await nc.subscribe("size.>")
        await sync_subs(nc)
        other = await ws_nats(srv)
        await other.send(b"SUB size.> 1\r\n")
        await ping_pong(other)

        # Just under the limit: fine.
        ok = await RawWs.open(ws_port_of(srv))
        okc = await raw_ws_nats(ok)
        payload = b"u" * (1024 - len(b"PUB size.ok 1000\r\n\r\n") - 6)
        await okc.send(b"PUB size.ok %d\r\n%s\r\n" % (len(payload), payload))
        assert len(b"PUB size.ok %d\r\n%s\r\n" % (len(payload), payload)) <= 1024
        assert (await tcp_sub.next_msg(timeout=5)).data == payload

        # Over it: close frame 1009, then TCP close; the message is not delivered.
        victim = await RawWs.open(ws_port_of(srv))
        await victim.read_message()
        await victim.send_binary(b"CONNECT {\"verbose\":false}\r\n")
        big = b"PUB size.big 1990\r\n" + b"b" * 1990 + b"\r\n"
        await victim.send_binary(big)
        await _assert_1009(victim)

        # Everyone else is unaffected.
        await nc.publish("size.after", b"still here")
        await nc.flush(timeout=5)
        await expect_msg(other, b"size.ok", payload)
        await expect_msg(other, b"size.after", b"still here")
        assert (await tcp_sub.next_msg(timeout=5)).subject == "size.after"
        await okc.send(b"PING\r\n")
        assert await okc.readline() == b"PONG"
        await other.close()
        await okc.close()
        await victim.close()


@async_test()
async def test_oversized_fragmented_message_closed_with_1009(server_factory):
    """The limit is on the message, not the frame: 3 x 600 bytes in one message is too big."""
    srv = server_factory(config=ws_config("max_message_size: 1024"))
    rw = await RawWs.open(ws_port_of(srv))
    try:
        await rw.read_message()
        await rw.send_binary(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        assert (await rw.read_message()).data == b"PONG\r\n"
        body = b"PUB frag.big 1770\r\n" + b"f" * 1770 + b"\r\n"  # 1791 bytes
        await rw.send_frame(OP_BINARY, body[:600], fin=False)
        await rw.send_frame(0x0, body[600:1200], fin=False)
        try:
            await rw.send_frame(0x0, body[1200:], fin=True)
        except (ConnectionResetError, BrokenPipeError):
            pass
        await _assert_1009(rw)
    finally:
        await rw.close()


@async_test(60)
async def test_default_max_message_size_is_8mb(server):
    """Without configuration a message of ~8 MB (many PUBs) is accepted, one over 8 MiB is closed with 1009."""
    chunk = b"PUB sink 1000\r\n" + b"s" * 1000 + b"\r\n"
    n = 8_000_000 // len(chunk)
    rw = await RawWs.open(ws_port_of(server))
    try:
        await rw.read_message()
        await rw.send_binary(b"CONNECT {\"verbose\":false}\r\n")
        await rw.send_binary(chunk * n)  # ~8.0 MB in one message
        await rw.send_binary(b"PING\r\n")
        m = await rw.read_message(timeout=20)
        assert not isinstance(m, Frame) and m is not None, f"a message of {len(chunk) * n} bytes was refused: {m!r}"
        assert m.data == b"PONG\r\n"

        too_big = (chunk * (8 * 1024 * 1024 // len(chunk) + 1))
        assert len(too_big) > 8 * 1024 * 1024

        async def push():
            try:
                await rw.send_binary(too_big)
            except (ConnectionResetError, BrokenPipeError):
                pass

        sender = asyncio.ensure_future(push())
        try:
            await _assert_1009(rw)
        finally:
            sender.cancel()
    finally:
        await rw.close()


# ==========================================================================
# 5. MQTT over WebSocket
# ==========================================================================


@VERSIONS
def test_mqtt_ws_and_mqtt_tcp_meet_both_ways(server, mqtt_clients, version):
    ws_c = mqtt_clients(ws_broker(server), version, transport="websockets", ws_path="/mqtt")
    tcp_c = mqtt_clients(tcp_broker(server), version)
    assert ws_c.subscribe("from/tcp/#", 1) == [1]
    assert tcp_c.subscribe("from/ws/#", 1) == [1]

    tcp_c.publish("from/tcp/a", b"tcp-qos1", qos=1)
    m = ws_c.expect()
    assert (m.topic, m.payload, m.qos) == ("from/tcp/a", b"tcp-qos1", 1)

    ws_c.publish("from/ws/b", b"ws-qos1", qos=1)
    ws_c.publish("from/ws/c", b"ws-qos0", qos=0)
    got = tcp_c.expect_n(2)
    assert sorted((x.topic, x.payload, x.qos) for x in got) == [
        ("from/ws/b", b"ws-qos1", 1), ("from/ws/c", b"ws-qos0", 0)]


@VERSIONS
@async_test()
async def test_mqtt_ws_and_nats_tcp_meet_both_ways(server, mqtt_clients, version):
    async with Clients(server) as c:
        nc = await c.connect()
        sub = await nc.subscribe("wsm.*.temp")
        await sync_subs(nc)
        m = mqtt_clients(ws_broker(server), version, transport="websockets")
        await asyncio.to_thread(m.publish, "wsm/k1/temp", b"21.5", 1)
        got = await sub.next_msg(timeout=5)
        assert (got.subject, got.data) == ("wsm.k1.temp", b"21.5")

        await asyncio.to_thread(m.subscribe, "tows/#", 0)
        await nc.publish("tows.a.b", b"from nats")
        await nc.flush(timeout=5)
        msg = await asyncio.to_thread(m.expect)
        assert (msg.topic, msg.payload) == ("tows/a/b", b"from nats")


@VERSIONS
@async_test()
async def test_ws_nats_and_ws_mqtt_meet_both_ways(server, mqtt_clients, version):
    ws = await ws_nats(server)
    try:
        await ws.send(b"SUB m2n.> 1\r\n")
        await ping_pong(ws)
        m = mqtt_clients(ws_broker(server), version, transport="websockets")
        await asyncio.to_thread(m.publish, "m2n/dev/1", b"mqtt->nats", 1)
        await expect_msg(ws, b"m2n.dev.1", b"mqtt->nats")

        await asyncio.to_thread(m.subscribe, "n2m/+", 0)
        await ws.send(b"PUB n2m.x 10\r\nnats->mqtt\r\n")
        msg = await asyncio.to_thread(m.expect)
        assert (msg.topic, msg.payload) == ("n2m/x", b"nats->mqtt")
    finally:
        await ws.close()


@pytest.mark.parametrize("offer,chosen", [("mqtt", "mqtt"), ("mqttv3.1", "mqttv3.1"), ("foo, mqtt", "mqtt")])
@async_test()
async def test_mqtt_by_subprotocol_is_echoed(server, offer, chosen):
    rw = await RawWs.open(ws_port_of(server), path="/", headers={"Sec-WebSocket-Protocol": offer})
    try:
        assert rw.response.header("sec-websocket-protocol") == chosen, rw.response.headers
        await rw.send_binary(connect_packet(f"sp-{uuid.uuid4().hex[:8]}", V311))
        data = await read_mqtt_bytes(rw, 4)
        assert mqtt_connack_ok(data), data
    finally:
        await rw.close()


@async_test()
async def test_mqtt_by_path_without_subprotocol(server):
    rw = await RawWs.open(ws_port_of(server), path="/mqtt")
    try:
        assert rw.response.header("sec-websocket-protocol") is None, rw.response.headers
        await rw.send_binary(connect_packet(f"pa-{uuid.uuid4().hex[:8]}", V311))
        data = await read_mqtt_bytes(rw, 4)
        assert mqtt_connack_ok(data), data
    finally:
        await rw.close()


@async_test()
async def test_mqtt_packets_split_and_batched_across_frames(server):
    """MQTT-over-WebSocket (MQTT 3.1.1 section 6): a frame may hold partial or several packets."""
    rw = await RawWs.open(ws_port_of(server), path="/mqtt", headers={"Sec-WebSocket-Protocol": "mqtt"})
    try:
        conn = connect_packet(f"sb-{uuid.uuid4().hex[:8]}", V311)
        for i in range(len(conn)):  # CONNECT one byte per frame
            await rw.send_binary(conn[i:i + 1])
        assert mqtt_connack_ok(await read_mqtt_bytes(rw, 4))
        # SUBSCRIBE and a PUBLISH to it in one frame.
        await rw.send_binary(subscribe_packet(1, [("sb/t", 0)], version=V311)
                             + publish_packet("sb/t", b"in-one-frame", version=V311))
        data = await read_mqtt_bytes(rw, 5)
        assert data[:5] == bytes([SUBACK << 4, 3, 0, 1, 0]), data
        want = publish_packet("sb/t", b"in-one-frame", version=V311)
        data = data[5:]
        if len(data) < len(want):
            data += await read_mqtt_bytes(rw, len(want) - len(data))
        assert data == want, data
    finally:
        await rw.close()


# ==========================================================================
# 6. permessage-deflate
# ==========================================================================


@async_test()
async def test_compression_negotiated_and_used_by_websockets_library(server_factory):
    srv = server_factory(config=ws_config("compression: true"))
    ws = await ws_nats(srv, compression="deflate")
    try:
        ext = ws.ws.response.headers.get("Sec-WebSocket-Extensions")
        assert ext_params(ext) == DEFLATE_PARAMS, f"Sec-WebSocket-Extensions: {ext!r}"
        await ws.send(b"SUB z 1\r\n")
        await ping_pong(ws)
        text = b"compress me " * 2000
        await ws.send(b"PUB z %d\r\n%s\r\n" % (len(text), text))
        await expect_msg(ws, b"z", text)
    finally:
        await ws.close()


@async_test()
async def test_compression_works_both_ways_on_the_wire(server_factory):
    """A deflated frame from the client is understood; what the server sends is deflated (RSV1)."""
    srv = server_factory(config=ws_config("compression: true"))
    rw = await RawWs.open(ws_port_of(srv), headers={
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"})
    assert ext_params(rw.response.header("sec-websocket-extensions")) == DEFLATE_PARAMS, rw.response.headers
    text = (b"the quick brown fox jumps over the lazy dog " * 500)[:20000]
    async with Clients(srv) as c:
        nc = await c.connect()
        tcp_sub = await nc.subscribe("deflate.in")
        await sync_subs(nc)
        client = await raw_ws_nats(rw, compress=True)  # every frame it sends is deflated
        try:
            await client.send(b"SUB deflate.out 1\r\n")
            await ping_pong(client)
            await client.send(b"PUB deflate.in %d\r\n%s\r\n" % (len(text), text))
            assert (await tcp_sub.next_msg(timeout=5)).data == text

            await nc.publish("deflate.out", text)
            await nc.flush(timeout=5)
            await expect_msg(client, b"deflate.out", text)
            carrying = [m for m in client.messages if text[:100] in m.data]
            assert carrying, "the MSG never arrived"
            assert all(m.compressed for m in carrying), \
                f"the 20 KB MSG came uncompressed: {[(m.compressed, m.wire_bytes) for m in carrying]}"
            assert sum(m.wire_bytes for m in carrying) < len(text) // 4
        finally:
            await client.close()


@pytest.mark.parametrize("config", [None, ws_config("compression: false")], ids=["default", "off"])
@async_test()
async def test_compression_not_negotiated_when_off(server_factory, config):
    srv = server_factory(config=config)
    rw = await RawWs.open(ws_port_of(srv), headers={
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"})
    ext = rw.response.header("sec-websocket-extensions")
    assert ext is None or "permessage-deflate" not in ext, f"negotiated although off: {ext!r}"
    client = await raw_ws_nats(rw)
    try:
        text = b"x" * 10000
        await client.send(b"SUB plain 1\r\nPUB plain %d\r\n%s\r\n" % (len(text), text))
        await expect_msg(client, b"plain", text)
        assert client.messages and not any(m.compressed for m in client.messages)
    finally:
        await client.close()


@async_test()
async def test_compression_on_but_not_offered(server_factory):
    srv = server_factory(config=ws_config("compression: true"))
    rw = await RawWs.open(ws_port_of(srv))
    assert rw.response.header("sec-websocket-extensions") is None, rw.response.headers
    client = await raw_ws_nats(rw)
    try:
        text = b"y" * 10000
        await client.send(b"SUB plain 1\r\nPUB plain %d\r\n%s\r\n" % (len(text), text))
        await expect_msg(client, b"plain", text)
        assert not any(m.compressed for m in client.messages)
        assert not any(f.rsv1 for f in rw.frames)
    finally:
        await client.close()


# ==========================================================================
# 7. Rejected handshakes
# ==========================================================================

BAD_HANDSHAKES = [
    ("post", dict(method="POST"), 405),
    ("no-upgrade", dict(omit=["Upgrade"]), 400),
    ("upgrade-not-websocket", dict(headers={"Upgrade": "h2c"}), 400),
    ("no-connection", dict(omit=["Connection"]), 400),
    ("connection-not-upgrade", dict(headers={"Connection": "keep-alive"}), 400),
    ("no-key", dict(omit=["Sec-WebSocket-Key"]), 400),
    ("version-8", dict(headers={"Sec-WebSocket-Version": "8"}), 426),
    ("version-14", dict(headers={"Sec-WebSocket-Version": "14"}), 426),
    ("unknown-subprotocols", dict(headers={"Sec-WebSocket-Protocol": "foo, bar"}), 400),
]


@pytest.mark.parametrize("name,kw,status", BAD_HANDSHAKES, ids=[b[0] for b in BAD_HANDSHAKES])
@async_test()
async def test_bad_handshake_gets_http_status_and_close(server, name, kw, status):
    port = ws_port_of(server)
    resp, closed = await http_exchange(port, handshake_request(port, **kw))
    assert resp.status == status, f"{name}: answered {resp.status_line!r}, expected {status}"
    assert resp.header("sec-websocket-accept") is None
    assert closed, f"{name}: the server kept the connection open after {resp.status_line!r}"
    if status == 426:
        assert resp.header("sec-websocket-version") == "13", resp.headers
    # The listener still accepts good clients.
    c = await ws_nats(server)
    await ping_pong(c)
    await c.close()


@async_test()
async def test_connection_header_token_list_is_accepted(server):
    """``Connection: keep-alive, Upgrade`` (what Firefox sends) and mixed case are fine."""
    port = ws_port_of(server)
    rw = await RawWs.open(port, headers={"Connection": "keep-alive, Upgrade", "Upgrade": "WebSocket"})
    try:
        m = await rw.read_message()
        assert m.data.startswith(b"INFO ")
    finally:
        await rw.close()


@async_test()
async def test_allowed_origins(server_factory):
    srv = server_factory(config=ws_config('allowed_origins: ["http://good.example:8000", "https://app.example"]'))
    port = ws_port_of(srv)
    for origin in ("http://good.example:8000", "https://app.example"):
        resp, _ = await http_exchange(port, handshake_request(port, headers={"Origin": origin}), timeout=1)
        assert resp.status == 101, f"Origin {origin}: {resp.status_line}"
    for origin in ("http://evil.example", "http://good.example:8001", "https://good.example:8000"):
        resp, closed = await http_exchange(port, handshake_request(port, headers={"Origin": origin}))
        assert resp.status == 403, f"Origin {origin}: {resp.status_line}"
        assert closed


@async_test()
async def test_same_origin(server_factory):
    srv = server_factory(config=ws_config("same_origin: true"))
    port = ws_port_of(srv)
    rw = await RawWs.open(port, headers={"Origin": f"http://127.0.0.1:{port}"})
    m = await rw.read_message()
    assert m.data.startswith(b"INFO ")
    await rw.close()
    for origin in (f"http://localhost:{port}", f"http://127.0.0.1:{port + 1}", "http://elsewhere.example"):
        resp, closed = await http_exchange(port, handshake_request(port, headers={"Origin": origin}))
        assert resp.status == 403, f"Origin {origin} with Host 127.0.0.1:{port}: {resp.status_line}"
        assert closed


@async_test()
async def test_handshake_timeout(server_factory):
    srv = server_factory(config=ws_config('handshake_timeout: "1s"'))
    port = ws_port_of(srv)
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        await writer.drain()
        start = time.monotonic()
        try:
            data = await asyncio.wait_for(reader.read(), 5)
        except (ConnectionResetError, asyncio.TimeoutError) as e:
            if isinstance(e, asyncio.TimeoutError):
                raise AssertionError("an unfinished handshake was not closed within 5s (handshake_timeout 1s)")
            data = b""
        elapsed = time.monotonic() - start
        assert elapsed >= 0.5, f"closed after {elapsed:.2f}s, before the timeout"
        assert b" 101 " not in data
    finally:
        writer.close()
    # A prompt handshake is unaffected.
    c = await ws_nats(srv)
    await asyncio.sleep(1.5)
    await ping_pong(c)
    await c.close()


# ==========================================================================
# 8. wss (TLS)
# ==========================================================================


@pytest.fixture
def tls_server(server_factory, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    conf = ("websocket {\n  tls {\n"
            f'    cert_file: "{cert}"\n    key_file: "{key}"\n  }}\n}}\n')
    srv = server_factory(config=conf)
    srv.cert = cert
    return srv


@async_test()
async def test_wss_nats(tls_server):
    srv = tls_server
    assert srv.ws_scheme == "wss", srv.log_text()
    async with Clients(srv) as c:
        nc = await c.connect()
        sub = await nc.subscribe("tls.in")
        await sync_subs(nc)
        ws = await ws_nats(srv, ssl=client_tls(srv.cert))
        try:
            await ws.send(b"PUB tls.in 6\r\nsecret\r\nSUB tls.out 1\r\n")
            await ping_pong(ws)
            assert (await sub.next_msg(timeout=5)).data == b"secret"
            await nc.publish("tls.out", b"back")
            await nc.flush(timeout=5)
            await expect_msg(ws, b"tls.out", b"back")
        finally:
            await ws.close()


def test_wss_mqtt(tls_server, mqtt_clients):
    srv = tls_server
    ws_c = mqtt_clients(ws_broker(srv), V5, transport="websockets", tls_ca=str(srv.cert))
    tcp_c = mqtt_clients(tcp_broker(srv), V311)
    ws_c.subscribe("tlsm/#", 1)
    tcp_c.publish("tlsm/a", b"to-wss", qos=1)
    m = ws_c.expect()
    assert (m.topic, m.payload) == ("tlsm/a", b"to-wss")


@async_test()
async def test_plain_ws_to_wss_listener_fails(tls_server):
    port = ws_port_of(tls_server)
    with pytest.raises(Exception) as info:
        ws = await ws_open(f"ws://{HOST}:{port}/", compression=None, open_timeout=3)
        await ws.close()
    assert not isinstance(info.value, AssertionError)
    # The raw bytes: no 101, and the server hangs up.
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(handshake_request(port))
        await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(4096), 5)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"HTTP/1.1 101"), data
    finally:
        writer.close()
