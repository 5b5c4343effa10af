"""End-to-end tests: the real broker binary, the unmodified nats-py client and
raw sockets, all on 127.0.0.1.

Each test states what a NATS user sees from nats-server 2.10 and checks that
Junction does the same.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import nats
import nats.errors
import pytest

from conftest import (
    EXPECT_EXIT,
    IS_NATS_SERVER,
    Clients,
    RawClient,
    async_test,
    raise_fd_limit,
    set_small_rcvbuf,
    sync_subs,
    varz,
    wait_until,
)


async def collect(sub_nc, subject, *, queue: str = ""):
    """Subscribe with a callback that appends every message to a list."""
    got = []

    async def cb(msg):
        got.append(msg)

    sub = await sub_nc.subscribe(subject, queue=queue, cb=cb)
    return sub, got


async def assert_still_works(clients: Clients, subject: str = "still.alive") -> None:
    """A fresh pub/sub round trip between two other clients succeeds."""
    sub_nc = await clients.connect()
    pub_nc = await clients.connect()
    sub = await sub_nc.subscribe(subject)
    await sync_subs(sub_nc)
    await pub_nc.publish(subject, b"ping")
    await pub_nc.flush(timeout=5)
    msg = await sub.next_msg(timeout=5)
    assert msg.data == b"ping"


# ==========================================================================
# 1. Publish / subscribe and wildcards
# ==========================================================================


@async_test()
async def test_pub_sub_basic(server):
    async with Clients(server) as c:
        sub_nc = await c.connect()
        pub_nc = await c.connect()
        sub = await sub_nc.subscribe("greet.joe")
        await sync_subs(sub_nc)

        await pub_nc.publish("greet.joe", b"hello")
        await pub_nc.publish("greet.bob", b"not for joe")
        await pub_nc.publish("greet.joe", b"")  # empty payload
        binary = bytes(range(256)) * 4 + b"\r\nPUB x 1\r\n"  # CRLFs and protocol text inside a payload
        await pub_nc.publish("greet.joe", binary)
        big = b"z" * (64 * 1024)
        await pub_nc.publish("greet.joe", big)
        await pub_nc.flush(timeout=5)

        msgs = [await sub.next_msg(timeout=5) for _ in range(4)]
        assert [m.subject for m in msgs] == ["greet.joe"] * 4
        assert [m.data for m in msgs] == [b"hello", b"", binary, big]
        with pytest.raises(nats.errors.TimeoutError):
            await sub.next_msg(timeout=0.3)


@async_test()
async def test_wildcards(server):
    patterns = ["foo.*", "foo.>", "*.bar", "*", ">", "foo.*.baz"]
    published = ["foo", "foo.bar", "foo.bar.baz", "foo.qux.baz", "a.bar", "a.b.bar", "bar", "x.foo"]
    # What nats-server delivers: `*` is exactly one token, `>` is one or more
    # trailing tokens (so `foo.>` does not match `foo`).
    expected = {
        "foo.*": ["foo.bar"],
        "foo.>": ["foo.bar", "foo.bar.baz", "foo.qux.baz"],
        "*.bar": ["foo.bar", "a.bar"],
        "*": ["foo", "bar"],
        ">": published,
        "foo.*.baz": ["foo.bar.baz", "foo.qux.baz"],
    }
    async with Clients(server) as c:
        sub_nc = await c.connect()
        pub_nc = await c.connect()
        received = {}
        for p in patterns:
            _, received[p] = await collect(sub_nc, p)
        await sync_subs(sub_nc)

        for s in published:
            await pub_nc.publish(s, s.encode())
        await pub_nc.flush(timeout=5)

        total = sum(len(v) for v in expected.values())
        await wait_until(lambda: sum(len(v) for v in received.values()) >= total, 5,
                         what=f"{total} deliveries")
        await asyncio.sleep(0.3)  # room for any wrong extra delivery to show up
        for p in patterns:
            got = [m.subject for m in received[p]]
            assert got == expected[p], f"subscription {p!r} got {got}, expected {expected[p]}"
            assert all(m.data == m.subject.encode() for m in received[p])


# ==========================================================================
# 2. Queue groups
# ==========================================================================


@async_test()
async def test_queue_group_distribution(server):
    n = 300
    async with Clients(server) as c:
        members = []
        for _ in range(3):
            nc = await c.connect()
            _, got = await collect(nc, "work.items", queue="g")
            await sync_subs(nc)
            members.append(got)
        plain_nc = await c.connect()
        _, plain = await collect(plain_nc, "work.items")
        await sync_subs(plain_nc)

        pub_nc = await c.connect()
        for i in range(n):
            await pub_nc.publish("work.items", str(i).encode())
        await pub_nc.flush(timeout=5)

        await wait_until(lambda: len(plain) >= n and sum(map(len, members)) >= n, 10,
                         what="all deliveries")
        await asyncio.sleep(0.3)

        assert sorted(int(m.data) for m in plain) == list(range(n))
        group = [int(m.data) for got in members for m in got]
        assert len(group) == n, f"queue group received {len(group)} messages, expected {n}"
        assert sorted(group) == list(range(n)), "queue group got duplicates or missed messages"
        shares = [len(got) for got in members]
        assert min(shares) >= 60, f"unfair queue distribution: {shares}"


# ==========================================================================
# 3. Request / reply
# ==========================================================================


@async_test()
async def test_request_reply(server):
    async with Clients(server) as c:
        svc_nc = await c.connect()
        cli_nc = await c.connect()

        async def echo(msg):
            await msg.respond(b"echo:" + msg.data)

        await svc_nc.subscribe("svc.echo", cb=echo)
        await sync_subs(svc_nc)

        resp = await cli_nc.request("svc.echo", b"hi", timeout=5)
        assert resp.data == b"echo:hi"

        # Many concurrent requests over one connection, each answered correctly.
        n = 300
        results = await asyncio.gather(
            *(cli_nc.request("svc.echo", f"req-{i}".encode(), timeout=10) for i in range(n)))
        assert [r.data for r in results] == [f"echo:req-{i}".encode() for i in range(n)]

        # And from several client connections at once.
        others = [await c.connect() for _ in range(5)]
        results = await asyncio.gather(
            *(others[i % 5].request("svc.echo", f"o-{i}".encode(), timeout=10) for i in range(100)))
        assert [r.data for r in results] == [f"echo:o-{i}".encode() for i in range(100)]


# ==========================================================================
# 4. Headers
# ==========================================================================


@async_test()
async def test_headers_round_trip(server):
    async with Clients(server) as c:
        sub_nc = await c.connect()
        pub_nc = await c.connect()
        sub = await sub_nc.subscribe("hdr.test")
        await sync_subs(sub_nc)

        headers = {"X-Alpha": "1", "X-Beta": "two words", "Trace-Id": "abc-123"}
        await pub_nc.publish("hdr.test", b"with headers", headers=headers)
        await pub_nc.publish("hdr.test", b"", headers={"Only": "header"})
        await pub_nc.publish("hdr.test", b"no headers")
        await pub_nc.flush(timeout=5)

        m1 = await sub.next_msg(timeout=5)
        assert m1.data == b"with headers"
        assert m1.headers == headers
        m2 = await sub.next_msg(timeout=5)
        assert m2.data == b"" and m2.headers == {"Only": "header"}
        m3 = await sub.next_msg(timeout=5)
        assert m3.data == b"no headers" and not m3.headers

        # Headers travel on requests and on replies.
        async def responder_with_headers(msg):
            await sub_nc.publish(msg.reply, b"ok", headers={"Got": msg.headers.get("Ask", "")})

        await sub_nc.subscribe("hdr.svc", cb=responder_with_headers)
        await sync_subs(sub_nc)
        resp = await pub_nc.request("hdr.svc", b"q", timeout=5, headers={"Ask": "please"})
        assert resp.data == b"ok" and resp.headers == {"Got": "please"}


@async_test()
async def test_headers_wire_format_and_headerless_client(server):
    async with Clients(server) as c:
        # A client that declared headers:false, and one that declared headers:true.
        plain = await RawClient.connect(server, {"headers": False, "no_responders": False})
        await plain.send(b"SUB hdr.wire 1\r\n")
        assert await plain.ping() == []
        hdrs = await RawClient.connect(server, {"headers": True})
        await hdrs.send(b"SUB hdr.wire 7\r\n")
        assert await hdrs.ping() == []

        pub_nc = await c.connect()
        await pub_nc.publish("hdr.wire", b"payload", headers={"X-Alpha": "1", "X-Beta": "two"})
        await pub_nc.flush(timeout=5)

        op = await plain.read_op(5)
        assert op == ("MSG", b"hdr.wire", b"1", None, b"payload"), \
            f"headers:false client should get a plain MSG without headers, got {op!r}"

        op = await hdrs.read_op(5)
        assert op[:4] == ("HMSG", b"hdr.wire", b"7", None), op
        header_block, payload = op[4], op[5]
        assert payload == b"payload"
        assert header_block.startswith(b"NATS/1.0\r\n") and header_block.endswith(b"\r\n\r\n"), header_block
        assert b"X-Alpha: 1\r\n" in header_block and b"X-Beta: two\r\n" in header_block

        assert await plain.quiet(0.2) == []
        await plain.close()
        await hdrs.close()


# ==========================================================================
# 5. No responders
# ==========================================================================


@async_test()
async def test_no_responders(server):
    async with Clients(server) as c:
        nc = await c.connect()
        start = time.monotonic()
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request("nobody.home", b"anyone?", timeout=5)
        elapsed = time.monotonic() - start
        assert elapsed < 1.0, f"no-responders took {elapsed:.2f}s; it should come back at once"

        # The client stays usable.
        async def responder(msg):
            await msg.respond(b"here")

        await nc.subscribe("somebody.home", cb=responder)
        await sync_subs(nc)
        assert (await nc.request("somebody.home", b"", timeout=5)).data == b"here"


@async_test()
async def test_no_responders_wire_format(server):
    raw = await RawClient.connect(server, {"headers": True, "no_responders": True})
    await raw.send(b"SUB _INBOX.raw.* 5\r\nPUB nobody.here _INBOX.raw.1 2\r\nhi\r\n")
    ops = await raw.ping()
    assert len(ops) == 1, ops
    kind, subject, sid, reply, header_block, payload = ops[0]
    assert (kind, subject, sid, reply, payload) == ("HMSG", b"_INBOX.raw.1", b"5", None, b"")
    assert header_block.startswith(b"NATS/1.0 503\r\n") and header_block.endswith(b"\r\n\r\n"), header_block
    await raw.close()


# ==========================================================================
# 6. Auto-unsubscribe (server side, raw socket)
# ==========================================================================


@async_test()
async def test_unsub_max_server_side(server):
    async with Clients(server) as c:
        raw = await RawClient.connect(server)
        await raw.send(b"SUB auto.unsub 1\r\nUNSUB 1 2\r\n")
        assert await raw.ping() == []

        pub_nc = await c.connect()
        for i in range(5):
            await pub_nc.publish("auto.unsub", f"m{i}".encode())
        await pub_nc.flush(timeout=5)

        ops = await raw.ping()
        ops += await raw.quiet(0.3)
        assert ops == [("MSG", b"auto.unsub", b"1", None, b"m0"),
                       ("MSG", b"auto.unsub", b"1", None, b"m1")], ops

        # The subscription is gone for good.
        await pub_nc.publish("auto.unsub", b"later")
        await pub_nc.flush(timeout=5)
        assert await raw.ping() == []
        assert await raw.quiet(0.2) == []
        await raw.close()


# ==========================================================================
# 7. Echo
# ==========================================================================


@async_test()
async def test_no_echo(server):
    async with Clients(server) as c:
        quiet_nc = await c.connect(no_echo=True)
        other_nc = await c.connect()
        _, quiet_got = await collect(quiet_nc, "echo.test")
        _, other_got = await collect(other_nc, "echo.test")
        await sync_subs(quiet_nc)
        await sync_subs(other_nc)

        await quiet_nc.publish("echo.test", b"from-self")
        await quiet_nc.flush(timeout=5)
        await other_nc.publish("echo.test", b"from-other")
        await other_nc.flush(timeout=5)

        # The echo-enabled client sees both (its own included).
        await wait_until(lambda: len(other_got) >= 2, 5, what="two messages on the echo client")
        assert sorted(m.data for m in other_got) == [b"from-other", b"from-self"]
        await wait_until(lambda: len(quiet_got) >= 1, 5, what="the other client's message")
        await asyncio.sleep(0.3)
        assert [m.data for m in quiet_got] == [b"from-other"]


# ==========================================================================
# 8. Verbose and pedantic
# ==========================================================================


@async_test()
async def test_verbose_and_pedantic(server):
    raw = await RawClient.connect(server, {"verbose": True, "pedantic": True})
    assert await raw.readline() == b"+OK"  # for CONNECT

    await raw.send(b"SUB foo 1\r\n")
    assert await raw.readline() == b"+OK"

    await raw.send(b"PUB foo 2\r\nhi\r\n")
    assert await raw.readline() == b"+OK"
    assert await raw.read_op() == ("MSG", b"foo", b"1", None, b"hi")

    # Publishing to a wildcard subject is a pedantic error, not a disconnect:
    # nats-server reports it and then still acknowledges the PUB.
    await raw.send(b"PUB foo.* 1\r\nx\r\n")
    assert await raw.readline() == b"-ERR 'Invalid Publish Subject'"
    assert await raw.readline() == b"+OK"

    # An invalid subscription subject is refused (no +OK); the connection stays.
    await raw.send(b"SUB foo..bar 2\r\n")
    assert await raw.ping() == [(b"-ERR 'Invalid Subject'",)]

    # Still fully alive: subscribe and receive.
    await raw.send(b"SUB bar 3\r\n")
    assert await raw.readline() == b"+OK"
    await raw.send(b"PUB bar 3\r\nend\r\n")
    assert await raw.readline() == b"+OK"
    assert await raw.read_op() == ("MSG", b"bar", b"3", None, b"end")
    assert await raw.ping() == []
    await raw.close()


# ==========================================================================
# 9. Protocol errors and the INFO line
# ==========================================================================


@async_test()
async def test_info_line(server):
    a = await RawClient.connect(server, send_connect=False)
    b = await RawClient.connect(server, send_connect=False)
    info = a.info
    # A 56-character public server key, as nats-server's ids are.
    assert isinstance(info["server_id"], str) and len(info["server_id"]) == 56, info["server_id"]
    assert info["server_id"].startswith("N") and info["server_id"].isalnum()
    # No name configured: nats-server uses its id; Junction under its own name says what it is
    # (under the name nats-server it takes nats-server's default, see test_ops.py).
    if IS_NATS_SERVER:
        assert info["server_name"] == info["server_id"]
    else:
        assert info["server_name"] == "junction-" + info["server_id"][:8]
    assert isinstance(info["version"], str) and len(info["version"].split(".")) >= 3, info["version"]
    assert info["proto"] == 1
    assert info["headers"] is True
    assert info["max_payload"] == 1024 * 1024
    assert isinstance(info["client_id"], int) and info["client_id"] > 0
    assert info["host"] == "127.0.0.1"
    assert info["port"] == server.port
    assert b.info["client_id"] != a.info["client_id"]
    assert b.info["server_id"] == a.info["server_id"]
    # An empty CONNECT takes nats-server's defaults, which are verbose.
    await a.send(b"CONNECT {}\r\n")
    assert await a.ping() == [(b"+OK",)]
    await a.close()
    await b.close()


@async_test()
async def test_configured_server_name_and_max_payload(server_factory):
    server = server_factory('server_name: "edge-1"\nmax_payload: 2KB\n')
    raw = await RawClient.connect(server, send_connect=False)
    assert raw.info["server_name"] == "edge-1"
    assert raw.info["max_payload"] == 2048
    await raw.close()
    v = await varz(server)
    assert v["server_name"] == "edge-1"
    assert v["max_payload"] == 2048


@pytest.mark.parametrize("bad", [
    b"FOO bar\r\n",               # an unknown verb
    b"MSG a 1 2\r\nhi\r\n",        # a server-only verb sent by a client
    b"PUB foo 3\r\nhello\r\n",     # a payload longer than announced
], ids=["unknown-verb", "client-sends-MSG", "payload-size-mismatch"])
@async_test()
async def test_unknown_protocol_operation(server, bad):
    async with Clients(server) as c:
        bystander = await c.connect()
        raw = await RawClient.connect(server)
        assert await raw.ping() == []
        await raw.send(bad)
        data = await raw.read_until_closed(5)
        assert data == b"-ERR 'Unknown Protocol Operation'\r\n"
        await raw.close()
        assert not bystander.is_closed
        await assert_still_works(c)


@pytest.mark.parametrize("bad,send_connect", [
    (b"PUB foo\r\n", True),                     # PUB without a size
    (b"PUB foo bar baz qux 1\r\n", True),       # PUB with too many arguments
    (b"HPUB foo 5 3\r\n", True),                # header size above the total size
    (b"CONNECT {not json\r\n", False),          # CONNECT that is not JSON
], ids=["pub-no-size", "pub-too-many-args", "hpub-bad-sizes", "connect-bad-json"])
@async_test()
async def test_malformed_arguments_close_the_connection(server, bad, send_connect):
    """Malformed arguments close the connection. nats-server closes without a
    word (the parse error goes to its log only); Junction deliberately says why
    first, with nats-server's own string for bad protocol input, so the client
    sees a clear error. Either way the connection is closed and others go on."""
    async with Clients(server) as c:
        bystander = await c.connect()
        raw = await RawClient.connect(server, send_connect=send_connect)
        if send_connect:
            assert await raw.ping() == []
        await raw.send(bad)
        data = await raw.read_until_closed(5)
        assert data == b"-ERR 'Unknown Protocol Operation'\r\n", f"after {bad!r} the server sent {data!r} before closing"
        await raw.close()
        assert not bystander.is_closed
        await assert_still_works(c)


@async_test()
async def test_raw_protocol_basics(server):
    raw = await RawClient.connect(server)
    # Verbs are case-insensitive.
    await raw.send(b"sub lower 1\r\npub lower 2\r\nhi\r\n")
    assert await raw.ping() == [("MSG", b"lower", b"1", None, b"hi")]
    # Reply subjects and queue subscriptions.
    await raw.send(b"SUB req.* q1 2\r\nPUB req.a my.reply 3\r\nabc\r\n")
    assert await raw.ping() == [("MSG", b"req.a", b"2", b"my.reply", b"abc")]
    # HPUB in, HMSG out, sizes preserved.
    hdr = b"NATS/1.0\r\nA: b\r\n\r\n"
    await raw.send(b"SUB h 3\r\nHPUB h %d %d\r\n%shello\r\n" % (len(hdr), len(hdr) + 5, hdr))
    assert await raw.ping() == [("HMSG", b"h", b"3", None, hdr, b"hello")]
    # UNSUB stops delivery; unsubscribing an unknown sid is not an error.
    await raw.send(b"UNSUB 3\r\nUNSUB 99\r\nPUB h 1\r\nx\r\n")
    assert await raw.ping() == []
    await raw.close()


@async_test()
async def test_max_payload_violation(server_factory):
    server = server_factory("max_payload: 1KB\n")
    async with Clients(server) as c:
        sub_nc = await c.connect()
        sub = await sub_nc.subscribe("big")
        await sync_subs(sub_nc)

        raw = await RawClient.connect(server)
        assert raw.info["max_payload"] == 1024
        # Exactly max_payload is fine.
        await raw.send(b"PUB big 1024\r\n" + b"a" * 1024 + b"\r\n")
        assert await raw.ping() == []
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"a" * 1024

        # One byte more is a violation that closes the connection.
        await raw.send(b"PUB big 1025\r\n")
        data = await raw.read_until_closed(5)
        assert data == b"-ERR 'Maximum Payload Violation'\r\n"
        await raw.close()

        assert not sub_nc.is_closed
        await assert_still_works(c)


@async_test()
async def test_max_control_line_exceeded(server):
    async with Clients(server) as c:
        bystander = await c.connect()
        raw = await RawClient.connect(server)
        # A long control line under the 4096-byte limit is accepted.
        await raw.send(b"SUB " + b"s" * 4000 + b" 1\r\n")
        assert await raw.ping() == []

        await raw.send(b"PUB " + b"a" * 5000 + b" 2\r\n")
        data = await raw.read_until_closed(5)
        assert data == b"-ERR 'maximum control line exceeded'\r\n"
        await raw.close()
        assert not bystander.is_closed
        await assert_still_works(c)


@async_test()
async def test_max_connections(server_factory):
    server = server_factory("max_connections: 2\n")
    async with Clients(server) as c:
        await c.connect()
        await c.connect()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        data = b""
        try:
            while True:
                chunk = await asyncio.wait_for(reader.read(4096), 5)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        writer.close()
        # nats-server sends INFO first, then the error, then closes.
        assert data.endswith(b"-ERR 'maximum connections exceeded'\r\n"), data
        v = await varz(server)
        assert v["connections"] == 2


# ==========================================================================
# 10. Slow consumer isolation
# ==========================================================================


@async_test(timeout=90)
async def test_slow_consumer_isolation(server_factory):
    server = server_factory('max_pending: 1MB\nwrite_deadline: "2s"\n')
    n, size = 20_000, 1024
    payload = b"x" * size

    # The slow subscriber: a tiny receive buffer and a reader that never reads.
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    set_small_rcvbuf(slow, 4096)
    slow.settimeout(5)
    slow.connect(("127.0.0.1", server.port))
    slow.sendall(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nSUB flood 1\r\nPING\r\n')
    buf = b""
    while b"PONG\r\n" not in buf:
        chunk = slow.recv(4096)
        assert chunk, f"slow client closed before its PONG: {buf!r}"
        buf += chunk
    assert buf.startswith(b"INFO ") and b"-ERR" not in buf

    try:
        async with Clients(server) as c:
            fast_nc = await c.connect(pending_size=64 * 1024 * 1024)
            count = 0
            bad = 0

            async def on_msg(msg):
                nonlocal count, bad
                count += 1
                if msg.data != payload:
                    bad += 1

            await fast_nc.subscribe("flood", cb=on_msg, pending_msgs_limit=n * 2,
                                    pending_bytes_limit=n * size * 2)
            await sync_subs(fast_nc)
            before = await varz(server)
            assert before["connections"] == 2

            pub_nc = await c.connect()
            for i in range(n):
                await pub_nc.publish("flood", payload)
                if i % 200 == 199:
                    await pub_nc.flush(timeout=10)
                    # Pace the publisher by the reading subscriber, so that the
                    # reader is never more than ~500 KB behind: with max_pending
                    # 1MB only a connection that stops reading can be cut off.
                    await wait_until(
                        lambda: count > i - 500 or fast_nc.is_closed, 10,
                        what=f"the reading subscriber to keep up (published {i + 1}, received {count})")
                    assert not fast_nc.is_closed, (
                        f"the server closed the READING subscriber after it received {count} of the "
                        f"{i + 1} messages published so far (errors seen: {c.errors!r})")
            await pub_nc.flush(timeout=10)

            await wait_until(lambda: count >= n or fast_nc.is_closed, 30,
                             what=f"{n} messages at the reading subscriber")
            await asyncio.sleep(0.2)
            assert not fast_nc.is_closed, f"the reading subscriber was closed after {count} messages"
            assert count == n and bad == 0
            assert not pub_nc.is_closed

            v = await wait_until(
                lambda: (lambda v: v if v["slow_consumers"] >= 1 else None)(server.varz()), 10,
                what="/varz slow_consumers >= 1")
            assert v["slow_consumers"] >= 1

            # The server closed the non-reading connection: reading it now
            # yields what was buffered, then EOF (or a reset).
            def drain():
                slow.settimeout(10)
                data = b""
                while True:
                    try:
                        chunk = slow.recv(1 << 20)
                    except ConnectionResetError:
                        return data, True
                    if not chunk:
                        return data, True
                    data += chunk

            data, closed = await asyncio.to_thread(drain)
            assert closed
            got = data.count(b"MSG flood 1 1024\r\n")
            assert got < n, f"the slow consumer received all {got} messages; it should have been cut off"
            await wait_until(lambda: server.varz()["connections"] == 2, 5, what="2 connections")

            # The healthy clients keep working.
            await assert_still_works(c)
    finally:
        slow.close()


@async_test(timeout=60)
async def test_fast_publisher_does_not_cut_off_a_reading_subscriber(server_factory):
    """A subscriber that reads as fast as it can is never a slow consumer.

    The publisher is paced only by the protocol (a PING after every 50
    messages, the next batch after the PONG), not by the subscriber, so at
    most ~52 KB are ever unacknowledged: far below max_pending (1MB).
    nats-server delivers every message here.
    """
    server = server_factory('max_pending: 1MB\nwrite_deadline: "2s"\n')
    n, batch, size = 20_000, 50, 1024
    frame = b"MSG flood 1 1024\r\n" + b"x" * size + b"\r\n"

    sub = await RawClient.connect(server)
    await sub.send(b"SUB flood 1\r\n")
    assert await sub.ping() == []
    received = 0
    eof = False

    async def read_all():
        nonlocal received, eof
        while received < n * len(frame):
            try:
                chunk = await sub.reader.read(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                eof = True
                return
            received += len(chunk)

    reader = asyncio.create_task(read_all())
    pub = await RawClient.connect(server)
    pub_frame = b"PUB flood 1024\r\n" + b"x" * size + b"\r\n"
    try:
        for i in range(n // batch):
            await pub.send(pub_frame * batch + b"PING\r\n")
            assert await pub.readline(10) == b"PONG"
            if eof:
                break
        await asyncio.wait_for(reader, 20)
    finally:
        reader.cancel()
    assert not eof, (
        f"the server closed a subscriber that was reading as fast as it could, after "
        f"{received // len(frame)} of {n} messages ({received} bytes); "
        f"slow_consumers={server.varz()['slow_consumers']}")
    assert received == n * len(frame)
    assert (await varz(server))["slow_consumers"] == 0
    await sub.close()
    await pub.close()


# ==========================================================================
# 11. Many connections
# ==========================================================================


@async_test(timeout=120)
async def test_thousand_connections(server_factory):
    n = 1000
    raise_fd_limit(2 * n + 100)  # before starting the server, which inherits the limit
    server = server_factory()
    async with Clients(server) as c:
        pub_nc = await c.connect()
        baseline = (await varz(server))["connections"]
        assert baseline == 1

        gate = asyncio.Semaphore(100)

        async def open_one(i):
            async with gate:
                raw = await RawClient.connect(server, timeout=15)
                await raw.send(b"SUB fan.out %d\r\n" % i)
                assert await raw.ping(15) == []
                return raw

        raws = await asyncio.gather(*(open_one(i) for i in range(n)))
        try:
            v = await varz(server)
            assert v["connections"] == baseline + n

            await pub_nc.publish("fan.out", b"to everyone")
            await pub_nc.flush(timeout=10)
            ops = await asyncio.gather(*(r.read_op(15) for r in raws))
            for i, op in enumerate(ops):
                assert op == ("MSG", b"fan.out", str(i).encode(), None, b"to everyone"), (i, op)
        finally:
            await asyncio.gather(*(r.close() for r in raws))

        await wait_until(lambda: server.varz()["connections"] == baseline, 15,
                         what=f"/varz connections back to {baseline}")
        assert (await varz(server))["total_connections"] >= n + 1


# ==========================================================================
# 12. Server pings and stale connections
# ==========================================================================


@async_test(timeout=30)
async def test_server_pings_and_stale_connection(server_factory):
    server = server_factory('ping_interval: "1s"\nping_max: 2\n')
    stale = await RawClient.connect(server)
    live = await RawClient.connect(server)

    async def stale_reader():
        lines, start = [], time.monotonic()
        while True:
            try:
                line = await stale.readline(8)
            except ConnectionResetError:
                line = b""
            if not line:
                return lines, time.monotonic() - start
            lines.append(line)

    live_pings = 0
    live_closed = False

    async def live_reader():
        nonlocal live_pings, live_closed
        while True:
            line = await live.readline(30)
            if not line:
                live_closed = True
                return
            if line == b"PING":
                live_pings += 1
                await live.send(b"PONG\r\n")

    live_task = asyncio.create_task(live_reader())
    lines, elapsed = await stale_reader()
    assert lines == [b"PING", b"PING", b"-ERR 'Stale Connection'"], lines
    assert elapsed < 6, f"stale connection closed after {elapsed:.1f}s"

    # The answering client is still there after more ping intervals.
    await asyncio.sleep(1.5)
    assert not live_closed
    assert live_pings >= 3, f"live client saw {live_pings} PINGs"
    live_task.cancel()
    try:
        await live_task
    except asyncio.CancelledError:
        pass
    await live.send(b"SUB x 1\r\nPUB x 2\r\nok\r\nPING\r\n")
    while True:
        op = await live.read_op(5)
        assert op is not None, "live client was disconnected"
        if op == (b"PING",):
            await live.send(b"PONG\r\n")
            continue
        assert op == ("MSG", b"x", b"1", None, b"ok"), op
        break
    assert (await varz(server))["connections"] == 1
    await stale.close()
    await live.close()


# ==========================================================================
# 13. Graceful shutdown
# ==========================================================================


@async_test(timeout=30)
async def test_graceful_shutdown(server_factory):
    server = server_factory()
    closed = asyncio.Event()

    async def on_closed():
        closed.set()

    async with Clients(server) as c:
        nc = await c.connect(closed_cb=on_closed)
        await nc.subscribe("anything")
        await sync_subs(nc)
        raw = await RawClient.connect(server)
        await raw.send(b"SUB anything 1\r\n")
        assert await raw.ping() == []

        start = time.monotonic()
        rc = await asyncio.to_thread(server.terminate, 10)
        elapsed = time.monotonic() - start
        assert rc == EXPECT_EXIT, f"exit code {rc!r} after SIGTERM (None: still running after 10s)"
        assert elapsed < 5, f"shutdown took {elapsed:.1f}s"

        await raw.read_until_closed(5)
        await asyncio.wait_for(closed.wait(), 5)
        assert nc.is_closed
        await raw.close()

    # Nothing listens any more.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


# ==========================================================================
# 14. Monitoring: /healthz and /varz
# ==========================================================================


@async_test()
async def test_healthz(server):
    status, body = await asyncio.to_thread(server.http_get, "/healthz")
    assert status == 200
    assert json.loads(body) == {"status": "ok"}


@async_test()
async def test_varz_counters(server):
    v0 = await varz(server)
    for key in ("connections", "total_connections", "in_msgs", "out_msgs", "in_bytes",
                "out_bytes", "slow_consumers", "subscriptions"):
        assert isinstance(v0[key], int), (key, v0.get(key))
    assert v0["connections"] == 0
    assert v0["in_msgs"] == 0 and v0["out_msgs"] == 0

    async with Clients(server) as c:
        s1 = await c.connect()
        s2 = await c.connect()
        pub = await c.connect()
        _, got1 = await collect(s1, "count.me")
        _, got2 = await collect(s2, "count.*")
        await sync_subs(s1)
        await sync_subs(s2)

        v1 = await varz(server)
        assert v1["connections"] == 3
        assert v1["total_connections"] == v0["total_connections"] + 3
        assert v1["subscriptions"] == v0["subscriptions"] + 2

        n, size = 10, 100
        for _ in range(n):
            await pub.publish("count.me", b"p" * size)
        await pub.publish("nobody.listens", b"q" * 7)
        await pub.flush(timeout=5)
        await wait_until(lambda: len(got1) >= n and len(got2) >= n, 5, what="deliveries")

        v2 = await wait_until(
            lambda: (lambda v: v if v["out_msgs"] >= v1["out_msgs"] + 2 * n else None)(server.varz()),
            5, what="out_msgs to catch up")
        assert v2["in_msgs"] - v1["in_msgs"] == n + 1
        assert v2["in_bytes"] - v1["in_bytes"] == n * size + 7
        assert v2["out_msgs"] - v1["out_msgs"] == 2 * n
        assert v2["out_bytes"] - v1["out_bytes"] == 2 * n * size
        assert v2["slow_consumers"] == 0

        await s2.close()
        await wait_until(lambda: server.varz()["connections"] == 2, 5, what="2 connections")
        v3 = await varz(server)
        assert v3["subscriptions"] == v0["subscriptions"] + 1
        assert v3["total_connections"] == v0["total_connections"] + 3
