"""Hardening (issue 15): one client must never crash the broker, bypass a permission, stall
others or break exactly-once.

Each test here reproduces an attack that worked before the fix, over real sockets with
unmodified clients (paho-mqtt, nats-py) or raw protocol bytes where the exact bytes matter:

* subscriptions thousands of levels deep, removed by UNSUBSCRIBE, disconnect, session expiry
  and a restart on the same data directory (the removal recursed once per level and killed
  the process, again after every restart);
* the MQTT 5 request/response bridge: response topics the requester may not publish to,
  guessed bridge subjects, the bridge's reserved subject space, reserved reply prefixes;
* subjects with empty tokens (`.secret.x`), which match nothing, as in nats-server;
* a storm of wrong bcrypt passwords, which must not slow the clients already connected;
* `mqtt { max_queued_messages, queue_full }`: a warning, a counter per session in /connz, and
  `refuse` (0x97 to a 5.0 publisher instead of acknowledging what would be dropped).

The NATS-only ones also run against nats-server (JUNCTION_BIN=/usr/sbin/nats-server
JUNCTION_EXPECT_EXIT=1), which is where their expectations come from.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import threading
import time
import urllib.request
import uuid

import pytest
from nats.js import api

from conftest import BIN, Clients, RawClient, Server, async_test, serve, sync_subs, wait_until
from durable_helpers import Durable
from mqtt_helpers import (
    _MQTT_LISTEN_RE,
    PUBACK,
    PUBLISH,
    SUBACK,
    UNSUBACK,
    V5,
    V311,
    Broker,
    Mqtt,
    RawMqtt,
    ack_packet,
    unsubscribe_packet,
    P_CORRELATION_DATA,
    P_REASON_STRING,
    P_RESPONSE_TOPIC,
    P_SESSION_EXPIRY,
)

IS_NATS_SERVER = "nats-server" in os.path.basename(BIN)
junction_only = pytest.mark.skipif(IS_NATS_SERVER, reason="MQTT 5 / Junction-only behaviour")
VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["mqtt311", "mqtt5"])
TIMEOUT = 5.0


class MqttServer(Server):
    """conftest.Server that also knows its MQTT listener."""

    @property
    def mqtt(self) -> Broker:
        for line in self.log:
            m = _MQTT_LISTEN_RE.search(line)
            if m:
                return Broker(kind="junction", port=int(m.group(2)), nats_port=self.port,
                              http_port=self.http_port, process=self)
        pytest.fail(f"no 'Listening for MQTT clients' line; log:\n{self.log_text()}")


@pytest.fixture
def start(tmp_path):
    yield from serve(tmp_path, MqttServer)


@pytest.fixture
def durable(tmp_path):
    """``durable()``: a broker on a data directory that can be crashed and restarted."""
    made: list[Durable] = []

    def make(name: str = "data", **kw) -> Durable:
        d = Durable(tmp_path, tmp_path / name, **kw)
        made.append(d)
        return d

    yield make
    problems = []
    for d in made:
        problems += d.close()
        print(d.logs())
    assert not problems, problems


def uniq(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def alive(srv: Server) -> None:
    """The broker still serves: a NATS PING round trip on a fresh connection, and /varz."""
    assert srv.running(), f"the broker died; log:\n{srv.log_text()}"

    async def ping():
        c = await RawClient.connect(srv)
        try:
            assert await c.ping() == []
        finally:
            c.writer.close()

    asyncio.run(asyncio.wait_for(ping(), 10))
    assert srv.varz()["connections"] >= 0


# ==========================================================================
# 1. Subscriptions deeper than any stack
# ==========================================================================

DEPTH = 5000
DEEP_FILTER = "/".join(["a"] * DEPTH)


@junction_only
@VERSIONS
def test_deep_filter_unsubscribe_and_disconnect(start, version):
    srv = start()
    m = RawMqtt(srv.mqtt, version, timeout=10)
    try:
        m.connect(uniq("deep"))
        ack = m.subscribe([(DEEP_FILTER, 1)])
        assert ack.codes == [1], ack
        m.publish(DEEP_FILTER, b"deep", qos=0)
        got = m.expect(PUBLISH, 10)
        assert got.payload == b"deep"
        m.send(unsubscribe_packet(2, [DEEP_FILTER], version=version))
        m.expect(UNSUBACK, 10)
        alive(srv)
        # Subscribed again, then removed by the disconnect.
        assert m.subscribe([(DEEP_FILTER, 1)], pid=3).codes == [1]
    finally:
        m.close()
    time.sleep(0.3)
    alive(srv)


@junction_only
def test_deep_filter_removed_by_session_expiry(start):
    srv = start()
    m = RawMqtt(srv.mqtt, V5, timeout=10)
    try:
        m.connect(uniq("deep-exp"), clean=True, props=[(P_SESSION_EXPIRY, 1)])
        assert m.subscribe([(DEEP_FILTER + "/#", 1)]).codes == [1]
    finally:
        m.close()
    # The session expires a second later; the sweep removes its subscriptions.
    time.sleep(3.0)
    alive(srv)


@junction_only
def test_deep_persistent_session_does_not_crash_loop(durable):
    """A persistent session with a deep subscription, crashed and restarted: the restart
    restores it, its expiry removes it, and the broker keeps running each time."""
    d = durable()
    b = d.start()
    m = RawMqtt(b, V5, timeout=10)
    try:
        m.connect("deep-persistent", clean=True, props=[(P_SESSION_EXPIRY, 2)])
        assert m.subscribe([(DEEP_FILTER, 1)]).codes == [1]
    finally:
        m.close()
    for _ in range(2):
        time.sleep(0.5)
        b = d.restart()
        time.sleep(3.0)
        assert d.node.running(), f"the broker died after a restart; log:\n{d.node.log_text()}"
        c = RawMqtt(b, V5)
        try:
            ack = c.connect("deep-persistent", clean=False)
            assert ack.session_present is False, "the session outlived its expiry"
            assert c.subscribe([(DEEP_FILTER, 1)]).codes == [1]
        finally:
            c.close()


@async_test(60)
async def test_nats_deep_subject_subscribe_unsubscribe(server_factory):
    """NATS with a raised max_control_line: a 10,000-token SUB, a message through it, UNSUB."""
    srv = server_factory(config="max_control_line: 65536\n")
    subject = ".".join(["t"] * 10_000)
    c = await RawClient.connect(srv)
    try:
        await c.send(f"SUB {subject} 1\r\n".encode())
        await c.send(f"PUB {subject} 2\r\nhi\r\n".encode())
        got = await c.ping(10)
        assert [op[0] for op in got] == ["MSG"] and got[0][4] == b"hi", got[:1]
        await c.send(b"UNSUB 1\r\n")
        assert await c.ping(10) == []
    finally:
        c.writer.close()
    assert srv.running(), srv.log_text()
    d = await RawClient.connect(srv)
    try:
        assert await d.ping() == []
    finally:
        d.writer.close()


# ==========================================================================
# 2. MQTT 5 request/response cannot publish past permissions
# ==========================================================================

RR_USERS = """
authorization {
  users: [
    {user: req, password: reqpw, permissions: { publish: { deny: ["secret.>"] } }}
    {user: spy, password: spypw}
    {user: svc, password: svcpw}
  ]
}
"""

BRIDGE_REPLY = re.compile(r"^\$MQTT\.rr\.[0-9A-Za-z]{22}\.[0-9A-Za-z]{22}$")


def raw5(srv, user: str, password: str) -> RawMqtt:
    m = RawMqtt(srv.mqtt, V5)
    m.connect(uniq(user), username=user, password=password.encode())
    return m


def puback(m: RawMqtt, pid: int):
    ack = m.expect(PUBACK)
    assert ack.pid == pid, ack
    return ack


@junction_only
@async_test(30)
async def test_response_topic_the_requester_may_not_publish_to_is_refused(start):
    srv = start(RR_USERS)
    async with Clients(srv) as cl:
        spy = await cl.connect(user="spy", password="spypw")
        svc = await cl.connect(user="svc", password="svcpw")
        leaked, requests = [], []

        async def on_leak(msg):
            leaked.append(msg)

        async def on_request(msg):
            requests.append(msg)

        await spy.subscribe("secret.>", cb=on_leak)
        await svc.subscribe("req.x", cb=on_request)
        await sync_subs(spy)
        await sync_subs(svc)
        m = raw5(srv, "req", "reqpw")
        try:
            m.publish("req/x", b"ask", qos=1, pid=7,
                      props=[(P_RESPONSE_TOPIC, "secret/x"), (P_CORRELATION_DATA, b"c1")])
            ack = await asyncio.to_thread(puback, m, 7)
            assert ack.rc == 0x87, ack
            assert "response topic" in (ack.props.get(P_REASON_STRING) or ""), ack.props
            # Without correlation data too (the reply subject would be the response topic).
            m.publish("req/x", b"ask", qos=1, pid=8, props=[(P_RESPONSE_TOPIC, "secret/y")])
            assert (await asyncio.to_thread(puback, m, 8)).rc == 0x87
            # A response topic it may publish to works.
            m.publish("req/x", b"ok", qos=1, pid=9,
                      props=[(P_RESPONSE_TOPIC, "open/x"), (P_CORRELATION_DATA, b"c2")])
            assert (await asyncio.to_thread(puback, m, 9)).rc == 0
            await wait_until(lambda: len(requests) == 1, what="the permitted request")
            assert requests[0].data == b"ok"
            await requests[0].respond(b"answer")
            await svc.flush()
            await asyncio.sleep(0.3)
            assert leaked == [] and len(requests) == 1, (leaked, requests)
        finally:
            m.close()


@junction_only
@async_test(30)
async def test_bridge_subjects_are_random_and_reserved(start):
    srv = start(RR_USERS)
    async with Clients(srv) as cl:
        svc = await cl.connect(user="svc", password="svcpw")
        spy = await cl.connect(user="spy", password="spypw")
        requests, seen_by_spy = [], []

        async def serve_req(msg):
            requests.append(msg)
            await msg.respond(b"re:" + msg.data)

        await svc.subscribe("req.x", cb=serve_req)
        # A wildcard over everything sees the requests, never the bridge's replies.
        async def on_any(msg):
            seen_by_spy.append(msg.subject)

        await spy.subscribe(">", cb=on_any)
        await sync_subs(svc)
        await sync_subs(spy)
        m = raw5(srv, "req", "reqpw")
        try:
            assert m.subscribe([("replies/mine", 1)]).codes == [1]
            for i in range(2):
                m.publish("req/x", f"q{i}".encode(), qos=1, pid=10 + i,
                          props=[(P_RESPONSE_TOPIC, "replies/mine"), (P_CORRELATION_DATA, f"c{i}".encode())])
            got = []
            while len(got) < 2:
                p = await asyncio.to_thread(m.recv, TIMEOUT)
                if p.type == PUBLISH:
                    got.append(p)
                    if p.qos:
                        m.ack(PUBACK, p.pid)
            assert sorted((p.payload, p.props.get(P_CORRELATION_DATA)) for p in got) == \
                [(b"re:q0", b"c0"), (b"re:q1", b"c1")]
        finally:
            m.close()
        replies = [r.reply for r in requests]
        assert len(replies) == 2 and all(BRIDGE_REPLY.match(r) for r in replies), replies
        session0, token0 = replies[0].rsplit(".", 1)
        session1, token1 = replies[1].rsplit(".", 1)
        assert session0 == session1 and token0 != token1, replies
        await spy.flush()
        assert "req.x" in seen_by_spy, seen_by_spy
        assert not [s for s in seen_by_spy if s.startswith("$MQTT.rr")], seen_by_spy

    # No client may subscribe into the bridge's space, on either protocol.
    c = await RawClient.connect(srv, connect={"user": "spy", "pass": "spypw"})
    try:
        await c.send(b"SUB $MQTT.rr.> 1\r\nSUB $MQTT.rr.abc.* 2\r\n")
        errs = await c.ping()
        assert errs == [(b"-ERR 'Permissions Violation for Subscription to \"$MQTT.rr.>\"'",),
                        (b"-ERR 'Permissions Violation for Subscription to \"$MQTT.rr.abc.*\"'",)], errs
    finally:
        c.writer.close()
    s = raw5(srv, "spy", "spypw")
    try:
        assert s.subscribe([("$MQTT/rr/#", 1)]).codes == [0x87]
        s.publish("$MQTT/rr/x/y", b"spoof", qos=1, pid=3)
        assert (await asyncio.to_thread(puback, s, 3)).rc == 0x87
    finally:
        s.close()


@junction_only
@async_test(30)
async def test_guessed_bridge_replies_reach_nobody(start):
    """The attack of the issue: another user publishes to guessed bridge subjects (the old
    sequential form and random ones); the requester receives none of them."""
    srv = start(RR_USERS)
    m = raw5(srv, "req", "reqpw")
    try:
        assert m.subscribe([("replies/victim", 1)]).codes == [1]
        for i in range(3):
            m.publish("svc/none", b"q", qos=1, pid=20 + i,
                      props=[(P_RESPONSE_TOPIC, "replies/victim"), (P_CORRELATION_DATA, b"secret-corr")])
            await asyncio.to_thread(puback, m, 20 + i)
        async with Clients(srv) as cl:
            spy = await cl.connect(user="spy", password="spypw")
            for conn in range(1, 20):
                for n in range(1, 51):
                    await spy.publish(f"$MQTT.rr.{conn}.{n}", b"spoofed")
            for _ in range(200):
                await spy.publish(f"$MQTT.rr.{uuid.uuid4().hex[:22]}.{uuid.uuid4().hex[:22]}", b"spoofed")
            await spy.flush()
        got = await asyncio.to_thread(m.quiet, 0.5)
        assert [p for p in got if getattr(p, "type", None) == PUBLISH] == [], got
    finally:
        m.close()


@junction_only
@async_test(30)
async def test_response_topic_on_reserved_reply_prefix_is_refused(start):
    srv = start(RR_USERS)
    m = raw5(srv, "spy", "spypw")
    try:
        for pid, topic in ((30, "_R_/abc/def"), (31, "$JS/ACK/x"), (32, "_GR_/x")):
            m.publish("svc/x", b"q", qos=1, pid=pid,
                      props=[(P_RESPONSE_TOPIC, topic), (P_CORRELATION_DATA, b"c")])
            ack = await asyncio.to_thread(puback, m, pid)
            assert ack.rc == 0x87, (topic, ack)
            assert "reserved" in (ack.props.get(P_REASON_STRING) or ""), (topic, ack.props)
    finally:
        m.close()


# ==========================================================================
# 3. Subjects with empty tokens match nothing (as in nats-server)
# ==========================================================================

DENY_ONLY = """
authorization {
  users: [
    {user: u, password: p, permissions: { publish: { deny: ["secret.>"] } }}
    {user: watcher, password: w}
  ]
}
"""


@async_test(30)
async def test_invalid_subjects_reach_nobody(server_factory):
    srv = server_factory(config=DENY_ONLY)
    watcher = await RawClient.connect(srv, connect={"user": "watcher", "pass": "w"})
    pedantic = await RawClient.connect(srv, connect={"user": "u", "pass": "p", "pedantic": True})
    lax = await RawClient.connect(srv, connect={"user": "u", "pass": "p"})
    try:
        await watcher.send(b"SUB > 1\r\nSUB *.secret.x 2\r\nSUB secret.> 3\r\n")
        assert await watcher.ping() == []
        bad = [b".secret.x", b"secret..x", b"secret.x."]
        for s in bad:
            await pedantic.send(b"PUB " + s + b" 2\r\nhi\r\n")
            await lax.send(b"PUB " + s + b" 2\r\nhi\r\n")
        errs = await pedantic.ping()
        assert errs == [(b"-ERR 'Invalid Publish Subject'",)] * len(bad), errs
        assert await lax.ping() == []
        await lax.send(b"PUB fine.x 2\r\nok\r\n")
        assert await lax.ping() == []
        got = await watcher.ping()
        assert [(op[0], op[1]) for op in got] == [("MSG", b"fine.x")], got
    finally:
        for c in (watcher, pedantic, lax):
            c.writer.close()


# ==========================================================================
# 4. A storm of wrong bcrypt passwords does not slow connected clients
# ==========================================================================

BCRYPT_USER = """
authorization {
  users: [ {user: b, password: "$2b$10$GRckTinfNYb4g3v51bFwYOrEhrGBPjTd3bSw2PInc0/ENOzvSGCUy"} ]
}
"""


@junction_only
def test_bcrypt_storm_slows_only_authentication(server_factory):
    srv = server_factory(config=BCRYPT_USER)
    stop = threading.Event()
    attempts = [0]
    lock = threading.Lock()

    def attacker():
        import socket
        while not stop.is_set():
            try:
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
                s.recv(4096)
                s.sendall(b'CONNECT {"user":"b","pass":"wrong","verbose":false}\r\nPING\r\n')
                s.settimeout(30)
                data = b""
                while b"Authorization Violation" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                s.close()
                if b"Authorization Violation" in data:
                    with lock:
                        attempts[0] += 1
            except OSError:
                pass

    async def measure() -> list:
        c = await RawClient.connect(srv, connect={"user": "b", "pass": "s3cret-bcrypt"}, timeout=30)
        try:
            assert await c.ping(30) == []
            threads = [threading.Thread(target=attacker, daemon=True) for _ in range(16)]
            for t in threads:
                t.start()
            await asyncio.sleep(0.5)
            rtts = []
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                assert await c.ping(30) == []
                rtts.append(time.monotonic() - t0)
                await asyncio.sleep(0.05)
            stop.set()
            for t in threads:
                t.join(60)
            return rtts
        finally:
            c.writer.close()

    rtts = asyncio.run(measure())
    median = statistics.median(rtts)
    # With bcrypt on the reactor threads this was hundreds of milliseconds (a cost-10 hash per
    # attempt, sixteen at a time); off them, a PING is answered at once.
    assert median < 0.05, f"PING round trip median {median * 1000:.1f} ms during the storm; {len(rtts)} samples"
    assert attempts[0] > 0, "no attempt completed"
    failures = srv.varz()["auth_failures"]
    assert failures >= attempts[0], (failures, attempts[0])
    _, body = srv.http_get("/metrics")
    assert re.search(rb"^junction_auth_failures_total (\d+)$", body, re.M), body[:400]


# ==========================================================================
# 5. Full session queues: said loudly, counted, and optionally refused
# ==========================================================================


def queue_config(limit: int, policy: str | None) -> str:
    extra = f"  queue_full: {policy}\n" if policy else ""
    return f"mqtt {{\n  max_queued_messages: {limit}\n{extra}}}\n"


def away_subscriber(broker: Broker, cid: str, version: int) -> None:
    s = RawMqtt(broker, version)
    props = [(P_SESSION_EXPIRY, 3600)] if version == V5 else []
    s.connect(cid, clean=(version == V5), props=props)
    assert s.subscribe([("q/t", 1)]).codes == [1]
    s.disconnect()
    s.close()
    # The server handles the DISCONNECT on its own time: until it has, a publication still
    # goes to the connected session instead of its queue. Wait until /connz no longer lists it.
    if broker.http_port:
        url = f"http://127.0.0.1:{broker.http_port}/connz?mqtt_client={cid}"
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
                if json.load(r).get("num_connections", 0) == 0:
                    return
            time.sleep(0.01)
        raise AssertionError(f"{cid} still connected {TIMEOUT}s after DISCONNECT")


def drain(broker: Broker, cid: str, version: int) -> list:
    s = RawMqtt(broker, version)
    try:
        s.connect(cid, clean=False, props=[(P_SESSION_EXPIRY, 3600)] if version == V5 else [])
        got = []
        for p in s.quiet(1.0):
            if getattr(p, "type", None) == PUBLISH:
                got.append(p.payload)
                s.ack(PUBACK, p.pid)
        return got
    finally:
        s.close()


@junction_only
@VERSIONS
def test_full_queue_drops_oldest_with_warning_and_counter(start, version):
    srv = start(queue_config(5, None))
    cid = uniq("away")
    away_subscriber(srv.mqtt, cid, version)
    p = RawMqtt(srv.mqtt, version)
    try:
        p.connect(uniq("pub"))
        for i in range(8):
            p.publish("q/t", str(i).encode(), qos=1, pid=i + 1)
            assert p.expect(PUBACK).rc in (0, None)
    finally:
        p.close()
    warnings = [line for line in srv.log if "queue is full" in line]
    assert len(warnings) == 1, warnings
    s = RawMqtt(srv.mqtt, version)
    try:
        s.connect(cid, clean=False, props=[(P_SESSION_EXPIRY, 3600)] if version == V5 else [])
        _, body = srv.http_get("/connz")
        conns = [c for c in json.loads(body)["connections"] if c.get("name") == cid]
        assert conns and conns[0]["mqtt_dropped_msgs"] == 3, conns
        got = []
        for pkt in s.quiet(1.0):
            if getattr(pkt, "type", None) == PUBLISH:
                got.append(pkt.payload)
                s.ack(PUBACK, pkt.pid)
        assert got == [b"3", b"4", b"5", b"6", b"7"], got
    finally:
        s.close()
    assert srv.varz()["mqtt_queue_dropped"] == 3


@junction_only
@VERSIONS
def test_full_queue_refused_to_mqtt5_publishers(start, version):
    """queue_full: refuse keeps what was queued and refuses the rest: a 5.0 publisher hears
    0x97 (Quota exceeded); a 3.1.1 publisher, which has no code for it, is acknowledged."""
    srv = start(queue_config(5, "refuse"))
    cid = uniq("away")
    away_subscriber(srv.mqtt, cid, V311)
    p = RawMqtt(srv.mqtt, version)
    codes = []
    try:
        p.connect(uniq("pub"))
        for i in range(8):
            p.publish("q/t", str(i).encode(), qos=1, pid=i + 1)
            codes.append(p.expect(PUBACK).rc or 0)
        p.publish("q/t", b"two", qos=2, pid=20)
        rec = p.expect(5)  # PUBREC
        codes.append(rec.rc or 0)
        if rec.rc is None or rec.rc < 0x80:
            p.send(ack_packet(6, 20, version=version))
            p.expect(7)
    finally:
        p.close()
    if version == V5:
        assert codes == [0] * 5 + [0x97] * 4, codes
    else:
        assert codes == [0] * 9, codes
    assert drain(srv.mqtt, cid, V311) == [b"0", b"1", b"2", b"3", b"4"]


# ==========================================================================
# The MQTT listener's own connection limit (issue 11)
# ==========================================================================


@junction_only
@VERSIONS
def test_mqtt_max_connections(start, version):
    srv = start("mqtt {\n  max_connections: 2\n}\n")
    held = []
    try:
        for i in range(2):
            m = RawMqtt(srv.mqtt, version)
            m.connect(uniq(f"cap{i}"))
            held.append(m)
        extra = RawMqtt(srv.mqtt, version)
        held.append(extra)
        extra.connect(uniq("over"), expect_rc=None)
        assert extra.connack.rc == (0x97 if version == V5 else 3), extra.connack
        assert extra.read_until_closed() == []
        # One leaves: there is room again.
        held[0].disconnect()
        held[0].read_until_closed()
        time.sleep(0.2)
        again = RawMqtt(srv.mqtt, version)
        held.append(again)
        again.connect(uniq("again"))
    finally:
        for m in held:
            m.close()


# ==========================================================================
# JetStream's API queue is bounded
# ==========================================================================


@junction_only
@async_test(90)
async def test_a_flood_of_jetstream_api_requests_is_bounded(server_factory, tmp_path):
    """Requests past 10,000 waiting are dropped with a warning (as nats-server drops past its
    API queue limit), instead of queueing without bound; the service answers afterwards."""
    store = tmp_path / "js"
    store.mkdir()
    srv = server_factory(args=["-js", "-sd", str(store)])
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        # Streams to list: each list request costs the service a while (far longer than
        # reading it, in a debug build or not).
        for i in range(5):
            await js.add_stream(name=f"S{i}", subjects=[f"s.{i}"], storage="memory")
        for _ in range(40_000):
            await nc.publish("$JS.API.STREAM.LIST", b"")
        await nc.flush(timeout=30)
        await wait_until(lambda: any("JetStream API queue limit reached" in line for line in srv.log),
                         timeout=20, what="the queue limit warning")
        # Every request that waited is answered in time, and the service answers again.
        deadline = time.monotonic() + 60
        while True:
            try:
                info = await js.account_info()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        assert info.streams == 5
        # And the server as a whole: a fresh connection's round trip.
        await (await c.connect()).flush(timeout=5)
    assert srv.running()


@junction_only
@async_test(30)
async def test_jetstream_never_takes_its_own_deliveries_for_api_requests(server_factory, tmp_path):
    """A consumer's deliver subject and a stream's republish destination are a client's choice.
    Pointed at the JetStream API, what JetStream sends there is not a request: it would run
    with JetStream's own rights, past the client's permissions (here: delete and purge a
    stream the client may not touch). Junction only: nats-server 2.9.10 fails this test (the
    republished copy purges the stream)."""
    conf = tmp_path / "server.conf"
    conf.write_text(f"""
jetstream {{ store_dir: "{tmp_path / 'js'}" }}
accounts {{ A: {{ jetstream: enabled, users: [
  {{ user: admin, password: admin }}
  {{ user: limited, password: limited, permissions: {{
      publish: {{ allow: ["src.>", "$JS.API.INFO", "$JS.API.STREAM.CREATE.SRC", "$JS.API.CONSUMER.>"] }}
      subscribe: {{ allow: ["_INBOX.>"] }} }} }}
] }} }}
""")
    srv = server_factory(args=["-c", str(conf)])
    async with Clients(srv) as c:
        admin = await c.connect(user="admin", password="admin")
        await admin.jetstream().add_stream(name="VICTIM", subjects=["victim"])
        await admin.jetstream().publish("victim", b"kept")
        nc = await c.connect(user="limited", password="limited")
        js = nc.jetstream()
        await js.add_stream(name="SRC", subjects=["src.>"],
                            republish=api.RePublish(src="src.x", dest="$JS.API.STREAM.PURGE.VICTIM"))
        await js.add_consumer("SRC", durable_name="d", deliver_subject="$JS.API.STREAM.DELETE.VICTIM",
                              ack_policy=api.AckPolicy.NONE)
        for _ in range(3):
            await js.publish("src.x", b"{}")
        await asyncio.sleep(1)
        info = await admin.jetstream().stream_info("VICTIM")
        assert info.state.messages == 1
