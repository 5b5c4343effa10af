"""Auth, permissions and TLS across MQTT, NATS and WebSocket (issue 5).

Everything here drives the real broker over 127.0.0.1 with unmodified clients
(paho-mqtt 2.x, nats-py, the ``websockets`` library) or raw sockets where the
exact bytes matter (``mqtt_helpers.RawMqtt``, ``conftest.RawClient``). Certificates
come from ``tests/fixtures/tls`` (made by openssl, see its README).

Configs are in nats-server format:

* ``authorization { users: [...] }`` and ``accounts { ... }``: the same users for
  NATS and MQTT (MQTT username/password), with NATS-subject permissions that apply
  to MQTT on the mapped subject (``a/b`` <-> ``a.b``, ``+`` <-> ``*``, ``#`` <-> ``>``);
* top-level ``tls {}`` (NATS port), ``mqtt { tls {} }`` (MQTT port),
  ``websocket { tls {} }`` (wss), with ``verify`` and ``verify_and_map``.

Reference server. The parts nats-server 2.9.10 also supports (NATS over TLS with
verify and verify_and_map, MQTT 3.1.1 username/password) also run against it:

    JUNCTION_BIN=/usr/sbin/nats-server JUNCTION_EXPECT_EXIT=1 \\
        .venv/bin/python -m pytest tests/python/test_auth_mqtt_tls.py

(nats-server needs ``server_name`` and JetStream for MQTT; this module adds them to
its config). Tests marked ``junction_only`` cover what nats-server 2.9.10 lacks
(MQTT 5.0, ``handshake_first``) or where its MQTT differs by design (its MQTT
runs on JetStream); they are skipped against it.

MQTT CONNACK codes when authentication fails:

* 3.1.1: return code 5 (Not authorized) for every failure, as nats-server sends.
* 5.0: 0x86 (Bad User Name or Password) for a wrong password. For no credentials
  while auth is required, an unknown user, or a TLS certificate that maps to no
  user, MQTT 5.0 allows 0x86 or 0x87 (Not authorized). Observed and pinned:
  Junction sends 0x86 for no credentials and for an unknown user, and 0x87 for an
  unmapped certificate (verify_and_map).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import uuid

import nats
import pytest

from conftest import (
    BIN,
    REPO,
    RawClient,
    Server,
    async_test,
    serve,
    sync_subs,
)
from mqtt_helpers import (
    PINGRESP,
    CONNACK,
    HOST,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    TIMEOUT,
    V5,
    V311,
    Broker,
    Closed,
    MalformedFromServer,
    Mqtt,
    RawMqtt,
    Will,
    connect_packet,
)
from ws_helpers import ws_nats, ws_open

IS_NATS_SERVER = "nats-server" in os.path.basename(BIN)
junction_only = pytest.mark.skipif(IS_NATS_SERVER, reason="not supported the same way by nats-server 2.9.10")

TLS = REPO / "tests" / "fixtures" / "tls"
CA = TLS / "ca.pem"

# Junction: "HOST:PORT"; nats-server 2.9: "mqtt://HOST:PORT" or "tls://HOST:PORT".
_MQTT_RE = re.compile(r"Listening for MQTT clients on (?:[a-z]+://)?([0-9.]+):(\d+)")
_CLIENT_RE = re.compile(r"Listening for client connections on ([0-9.]+):(\d+)")

NOT_AUTHORIZED_311 = 5
BAD_USER_OR_PASSWORD = 0x86
NOT_AUTHORIZED = 0x87
SUBACK_FAILURE_311 = 0x80

AUTH_VIOLATION = b"-ERR 'Authorization Violation'"


# --------------------------------------------------------------------------
# Starting the broker (Junction, or nats-server for the reference run)
# --------------------------------------------------------------------------


class AuthServer(Server):
    """conftest.Server that also knows its MQTT port, and can start nats-server 2.9
    (which has no --mqtt-port/--ws-port flags: its listeners come from the config)."""

    mqtt_port: int | None = None

    def start(self) -> "AuthServer":
        super().start()
        for line in list(self.log):
            m = _MQTT_RE.search(line)
            if m:
                self.mqtt_port = int(m.group(2))
        return self

    @property
    def mqtt(self) -> Broker:
        """The MQTT listener as an mqtt_helpers.Broker (for Mqtt and RawMqtt)."""
        if self.mqtt_port is None:
            pytest.fail(f"no 'Listening for MQTT clients on HOST:PORT' in the log:\n{self.log_text()}")
        return Broker(kind="junction", port=self.mqtt_port, nats_port=self.port,
                      http_port=self.http_port, process=self)

    @property
    def wss(self) -> Broker:
        """The WebSocket listener, for paho with transport="websockets"."""
        if self.ws_port is None:
            pytest.fail(f"no 'Listening for websocket clients on ...' in the log:\n{self.log_text()}")
        return Broker(kind="junction", port=self.ws_port, nats_port=self.port, process=self)


@pytest.fixture
def start(tmp_path):
    """start(config) -> AuthServer; every server must exit with EXPECT_EXIT on SIGTERM."""
    serving = serve(tmp_path, AuthServer)
    start_server = next(serving)
    count = 0

    def _start(config: str) -> AuthServer:
        nonlocal count
        if IS_NATS_SERVER and "mqtt" in config:
            store = tmp_path / f"js-{count}"
            config = f'server_name: "ref-{count}"\njetstream {{ store_dir: "{store}" }}\n' + config
        count += 1
        return start_server(config)

    yield _start
    next(serving, None)


def tls_block(verify: bool = False, verify_and_map: bool = False, handshake_first: bool = False) -> str:
    lines = [f'cert_file: "{TLS / "server.pem"}"', f'key_file: "{TLS / "server-key.pem"}"',
             f'ca_file: "{CA}"', "timeout: 2"]
    if verify:
        lines.append("verify: true")
    if verify_and_map:
        lines.append("verify_and_map: true")
    if handshake_first:
        lines.append("handshake_first: true")
    return "tls {\n  " + "\n  ".join(lines) + "\n}\n"


def mqtt_block(tls: str = "") -> str:
    return "mqtt {\n  port: -1\n" + tls + "}\n"


def client_ctx(cert: str | None = None, ca=CA) -> ssl.SSLContext:
    """A client context trusting ``ca``, presenting tests/fixtures/tls/<cert>.pem if given."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(TLS / f"{cert}.pem"), str(TLS / f"{cert}-key.pem"))
    return ctx


def uniq(prefix: str = "c") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# Users shared by the MQTT and NATS permission tests.
PERM_USERS = """
authorization {
  users: [
    {user: admin, password: adminpw}
    {user: alice, password: alicepw, permissions: {
      publish:   {allow: ["a.>", "pub.ok"], deny: ["a.secret"]}
      subscribe: {allow: ["a.>", "pub.ok"], deny: ["a.secret"]}
    }}
    {user: narrow, password: narrowpw, permissions: {
      publish:   {allow: ["a.b"]}
      subscribe: {allow: ["a.b"]}
    }}
    {user: wide, password: widepw, permissions: {
      subscribe: {deny: ["a.secret"]}
    }}
  ]
}
"""


# --------------------------------------------------------------------------
# Client helpers
# --------------------------------------------------------------------------


class TlsRawMqtt(RawMqtt):
    """mqtt_helpers.RawMqtt over TLS (or plain TCP when ``ctx`` is None) to ``port``."""

    def __init__(self, port: int, ctx: ssl.SSLContext | None, version: int = V311, timeout: float = TIMEOUT):
        self.version = version
        raw = socket.create_connection((HOST, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, server_hostname=HOST) if ctx is not None else raw
        self.buf = b""
        self.eof = False
        self.connack = None


def raw_mqtt(broker: Broker, version: int, user: str | None = None, password: str | None = None,
             expect_rc: int | None = 0, **kw) -> RawMqtt:
    c = RawMqtt(broker, version)
    c.connect(client_id=kw.pop("client_id", uniq("raw")), username=user,
              password=password.encode() if password is not None else None, expect_rc=expect_rc, **kw)
    return c


def connack_then_close(c: RawMqtt) -> int:
    """The CONNACK return/reason code of a refused connection, which must then be closed."""
    ack = c.connack
    assert ack is not None
    rest = c.read_until_closed(TIMEOUT)
    assert rest == [], f"after the refusing CONNACK the broker sent {rest!r} before closing"
    return ack.rc


def mqtt_tls_attempt(port: int, ctx: ssl.SSLContext | None, version: int = V311, **connect_kw):
    """Open TLS (or TCP) to ``port`` and send CONNECT.

    Returns ("connack", rc) when a CONNACK came back, or ("refused", detail) when the
    handshake failed or the connection was closed without a CONNACK. Fails the test if
    the broker neither answers nor closes within 5 s.
    """
    try:
        c = TlsRawMqtt(port, ctx, version)
    except TimeoutError:
        raise AssertionError("TLS handshake neither completed nor failed within 5 s") from None
    except (ssl.SSLError, OSError) as e:
        return "refused", f"handshake failed: {e!r}"
    try:
        c.send(connect_packet(connect_kw.pop("client_id", uniq("tls")), version, **connect_kw))
        pkt = c.recv(TIMEOUT)
    except TimeoutError:
        raise AssertionError("the broker neither answered CONNECT nor closed within 5 s") from None
    except Closed:
        return "refused", "closed without CONNACK"
    except MalformedFromServer:
        # Not MQTT at all (e.g. a TLS alert record sent to a plaintext client).
        return "refused", f"non-MQTT bytes: {c.buf[:40].hex() if c.buf else ''}"
    except (ssl.SSLError, OSError) as e:
        return "refused", f"TLS error after the handshake: {e!r}"
    finally:
        try:
            c.close()
        except Exception:
            pass
    assert pkt.type == CONNACK, f"first packet was {pkt!r}"
    return "connack", pkt.rc


def paho(broker: Broker, version: int, user: str | None = None, password: str | None = None,
         cert: str | None = None, tls: bool = False, transport: str = "tcp", **kw) -> Mqtt:
    m = Mqtt(broker, client_id=kw.pop("client_id", uniq("paho")), version=version, transport=transport, **kw)
    if user is not None:
        m.client.username_pw_set(user, password)
    if tls or cert is not None:
        if cert is not None:
            m.client.tls_set(ca_certs=str(CA), certfile=str(TLS / f"{cert}.pem"),
                             keyfile=str(TLS / f"{cert}-key.pem"))
        else:
            m.client.tls_set(ca_certs=str(CA))
    return m


class MqttClients:
    """paho clients closed at the end of a block."""

    def __init__(self):
        self.items: list = []

    def add(self, m):
        self.items.append(m)
        return m

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for m in self.items:
            try:
                m.close()
            except Exception:
                pass


async def nats_conn(srv, user=None, password=None, tls_ctx=None, **kw):
    async def on_error(e):
        pass

    url = f"tls://127.0.0.1:{srv.port}" if tls_ctx is not None else srv.url
    opts = dict(servers=[url], allow_reconnect=False, connect_timeout=5, max_reconnect_attempts=0,
                error_cb=on_error)
    if user is not None:
        opts.update(user=user, password=password)
    if tls_ctx is not None:
        opts["tls"] = tls_ctx
    opts.update(kw)
    return await nats.connect(**opts)


async def raw_nats(srv, user=None, password=None) -> RawClient:
    connect = {}
    if user is not None:
        connect = {"user": user, "pass": password}
    c = await RawClient.connect(srv, connect=connect)
    seen = await c.ping()
    assert seen == [], f"CONNECT as {user!r} answered {seen!r}"
    return c


async def nats_pub_allowed(c: RawClient, subject: str) -> bool:
    """PUB on a raw client with no subscriptions: True if no -ERR, False on the
    nats-server Permissions Violation text (anything else fails)."""
    await c.send(f"PUB {subject} 1\r\nx\r\n".encode())
    seen = await c.ping()
    if not seen:
        return True
    assert seen == [(f"-ERR 'Permissions Violation for Publish to \"{subject}\"'".encode(),)], seen
    return False


async def nats_sub_allowed(c: RawClient, subject: str, sid: int) -> bool:
    await c.send(f"SUB {subject} {sid}\r\n".encode())
    seen = await c.ping()
    if not seen:
        return True
    assert seen == [(f"-ERR 'Permissions Violation for Subscription to \"{subject}\"'".encode(),)], seen
    return False


async def raw_nats_tls(port: int, ctx: ssl.SSLContext, connect: dict | None = None,
                       handshake_first: bool = False, timeout: float = TIMEOUT) -> RawClient:
    """A RawClient over TLS: INFO in clear, then the TLS handshake (or handshake first)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port, limit=1 << 20), timeout)
    if handshake_first:
        await asyncio.wait_for(writer.start_tls(ctx, server_hostname=HOST), timeout)
        line = await asyncio.wait_for(reader.readline(), timeout)
    else:
        line = await asyncio.wait_for(reader.readline(), timeout)
        assert line.startswith(b"INFO {"), f"first line on the TLS port was {line!r}"
        await asyncio.wait_for(writer.start_tls(ctx, server_hostname=HOST), timeout)
    assert line.startswith(b"INFO {") and line.endswith(b"\r\n"), f"INFO line was {line!r}"
    client = RawClient(reader, writer, line.rstrip(b" \r\n"))
    opts = {"verbose": False, "pedantic": False, "lang": "raw", "version": "0", "protocol": 1,
            "headers": True, "no_responders": True, "tls_required": True}
    opts.update(connect or {})
    await client.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\n")
    return client


async def nats_tls_outcome(port: int, ctx: ssl.SSLContext, connect: dict | None = None):
    """("ok", b"") if CONNECT+PING over TLS got PONG, ("closed", bytes sent before the
    close) or ("tls-error", repr) otherwise. Bounded by 5 s."""
    try:
        c = await raw_nats_tls(port, ctx, connect)
    except (ssl.SSLError, ConnectionError, OSError, asyncio.IncompleteReadError) as e:
        if isinstance(e, TimeoutError):
            raise AssertionError("TLS handshake neither completed nor failed within 5 s") from None
        return "tls-error", repr(e)
    try:
        await c.send(b"PING\r\n")
        data = b""
        deadline = time.monotonic() + TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no PONG and no close within 5 s; got {data!r}")
            try:
                chunk = await asyncio.wait_for(c.reader.read(65536), remaining)
            except asyncio.TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return "closed", data
            if not chunk:
                return "closed", data
            data += chunk
            if b"PONG\r\n" in data:
                return "ok", data
    except (ssl.SSLError, ConnectionError, OSError) as e:
        return "tls-error", repr(e) + f" after {data!r}"
    finally:
        await c.close()


# ==========================================================================
# 1. MQTT username/password against the same users as NATS
# ==========================================================================

AUTH_USERS = """
authorization {
  users: [
    {user: alice, password: alicepw}
    {user: bob, password: bobpw}
  ]
}
"""


@pytest.mark.parametrize("version", [V311, pytest.param(V5, marks=junction_only)], ids=["3.1.1", "5.0"])
@async_test(30)
async def test_mqtt_good_credentials_connect_like_nats(start, version):
    """alice/alicepw connects over NATS and over MQTT (paho), and the two see each other."""
    srv = start(AUTH_USERS + mqtt_block())
    nc = await nats_conn(srv, "alice", "alicepw")
    try:
        sub = await nc.subscribe("t.>")
        await sync_subs(nc)
        with MqttClients() as mc:
            m = mc.add(paho(srv.mqtt, version, "bob", "bobpw"))
            await asyncio.to_thread(m.connect)
            assert m.connack_rc == 0
            await asyncio.to_thread(m.publish, "t/x", b"hello", 1)
            msg = await sub.next_msg(timeout=5)
            assert (msg.subject, msg.data) == ("t.x", b"hello")
    finally:
        await nc.close()


@pytest.mark.parametrize("version,expected", [(V311, NOT_AUTHORIZED_311),
                                              pytest.param(V5, BAD_USER_OR_PASSWORD, marks=junction_only)],
                         ids=["3.1.1", "5.0"])
def test_mqtt_wrong_password_refused(start, version, expected):
    """Wrong password: 3.1.1 CONNACK 5 (as nats-server), 5.0 CONNACK 0x86; then close.
    NATS refuses the same credentials with Authorization Violation."""
    srv = start(AUTH_USERS + mqtt_block())
    c = raw_mqtt(srv.mqtt, version, "alice", "wrong", expect_rc=None)
    try:
        assert connack_then_close(c) == expected
    finally:
        c.close()

    async def nats_side():
        c = await RawClient.connect(srv, connect={"user": "alice", "pass": "wrong"})
        data = await c.read_until_closed(TIMEOUT)
        await c.close()
        return data

    assert asyncio.run(nats_side()) == AUTH_VIOLATION + b"\r\n"


@pytest.mark.parametrize("version", [V311, pytest.param(V5, marks=junction_only)], ids=["3.1.1", "5.0"])
def test_mqtt_unknown_user_refused(start, version):
    """An unknown user: 3.1.1 CONNACK 5; 5.0 0x86 or 0x87 (recorded)."""
    srv = start(AUTH_USERS + mqtt_block())
    c = raw_mqtt(srv.mqtt, version, "mallory", "alicepw", expect_rc=None)
    try:
        rc = connack_then_close(c)
    finally:
        c.close()
    print(f"unknown user, MQTT {'5.0' if version == V5 else '3.1.1'}: CONNACK {rc:#x}")
    if version == V311:
        assert rc == NOT_AUTHORIZED_311
    else:
        # The spec allows 0x86 or 0x87; Junction sends 0x86 (Bad User Name or Password).
        assert rc == BAD_USER_OR_PASSWORD


@pytest.mark.parametrize("version", [V311, pytest.param(V5, marks=junction_only)], ids=["3.1.1", "5.0"])
def test_mqtt_no_credentials_when_auth_required(start, version):
    """No username/password while users are configured: 3.1.1 CONNACK 5;
    5.0 0x87 or 0x86 (the spec allows either; the value seen is printed)."""
    srv = start(AUTH_USERS + mqtt_block())
    c = raw_mqtt(srv.mqtt, version, expect_rc=None)
    try:
        rc = connack_then_close(c)
    finally:
        c.close()
    print(f"no credentials, MQTT {'5.0' if version == V5 else '3.1.1'}: CONNACK {rc:#x}")
    if version == V311:
        assert rc == NOT_AUTHORIZED_311
    else:
        # The spec allows 0x87 or 0x86; Junction sends 0x86 (Bad User Name or Password).
        assert rc == BAD_USER_OR_PASSWORD


def test_mqtt_paho_and_mosquitto_clients_see_the_refusal(start):
    """Unmodified clients: paho reports the refusal, mosquitto_pub exits non-zero with
    wrong credentials and succeeds with good ones."""
    srv = start(AUTH_USERS + mqtt_block())
    with MqttClients() as mc:
        m = mc.add(paho(srv.mqtt, V311, "alice", "nope"))
        m.connect(expect_rc=None)
        # paho 2.x (callback API 2) reports a 3.1.1 return code 5 as ReasonCode "Not authorized" (0x87).
        assert m.connack_rc == NOT_AUTHORIZED, f"paho saw CONNACK {m.connack_rc!r}"
    port = str(srv.mqtt_port)
    bad = subprocess.run(["/usr/bin/mosquitto_pub", "-h", HOST, "-p", port, "-V", "mqttv311", "-u", "alice",
                          "-P", "nope", "-t", "t/x", "-m", "x"], capture_output=True, timeout=10)
    assert bad.returncode != 0, bad
    assert b"not authori" in bad.stderr.lower() or b"refused" in bad.stderr.lower(), bad.stderr
    good = subprocess.run(["/usr/bin/mosquitto_pub", "-h", HOST, "-p", port, "-V", "mqttv311", "-u", "alice",
                           "-P", "alicepw", "-t", "t/x", "-m", "x", "-q", "1"], capture_output=True, timeout=10)
    assert good.returncode == 0, good


# ==========================================================================
# 2. MQTT permissions
# ==========================================================================


class Observers:
    """An unrestricted NATS subscriber on '>' and MQTT subscriber on '#' (user admin)."""

    def __init__(self, srv):
        self.srv = srv

    async def __aenter__(self):
        self.nc = await nats_conn(self.srv, "admin", "adminpw")
        self.sub = await self.nc.subscribe(">")
        await sync_subs(self.nc)
        self.m = paho(self.srv.mqtt, V5, "admin", "adminpw")
        await asyncio.to_thread(self.m.connect)
        codes = await asyncio.to_thread(self.m.subscribe, "#", 1)
        assert codes == [1], codes
        return self

    async def nats_until(self, subject: str) -> list:
        """NATS subjects received up to and including ``subject`` (the marker)."""
        got = []
        while True:
            msg = await self.sub.next_msg(timeout=5)
            if msg.subject.startswith("$"):
                continue
            got.append(msg.subject)
            if msg.subject == subject:
                return got

    def mqtt_until(self, topic: str) -> list:
        got = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            m = self.m.expect(max(0.01, deadline - time.monotonic()))
            got.append(m.topic)
            if m.topic == topic:
                return got

    async def __aexit__(self, *exc):
        self.m.close()
        await self.nc.close()


@junction_only
@async_test(40)
async def test_mqtt5_denied_publish_puback_pubrec_0x87(start):
    """5.0: QoS1 to a denied topic -> PUBACK 0x87, QoS2 -> PUBREC 0x87, QoS0 dropped;
    nobody (NATS '>' or MQTT '#') receives any of them; the allowed marker arrives."""
    srv = start(PERM_USERS)
    async with Observers(srv) as obs:
        c = await asyncio.to_thread(raw_mqtt, srv.mqtt, V5, "alice", "alicepw")
        try:
            c.publish("a/secret", b"q1", qos=1, pid=1)
            ack = c.expect(PUBACK)
            assert (ack.pid, ack.rc) == (1, NOT_AUTHORIZED), ack
            c.publish("other/x", b"q1", qos=1, pid=2)
            ack = c.expect(PUBACK)
            assert (ack.pid, ack.rc) == (2, NOT_AUTHORIZED), ack
            c.publish("a/secret", b"q2", qos=2, pid=3)
            rec = c.expect(PUBREC)
            assert (rec.pid, rec.rc) == (3, NOT_AUTHORIZED), rec
            c.publish("other/y", b"q0", qos=0)
            c.publish("a/secret", b"q0", qos=0)
            # The allowed marker, after them on the same connection.
            c.publish("a/ok", b"marker", qos=1, pid=4)
            ack = c.expect(PUBACK)
            assert ack.pid == 4 and ack.rc < 0x80, ack
            # Still connected: a denied publish does not close the connection.
            assert c.quiet(0.2) == []
        finally:
            c.close()
        assert await obs.nats_until("a.ok") == ["a.ok"]
        assert await asyncio.to_thread(obs.mqtt_until, "a/ok") == ["a/ok"]


@async_test(40)
async def test_mqtt311_denied_publish_acked_but_dropped(start):
    """3.1.1: a denied QoS1 publish gets a normal PUBACK, QoS2 the normal
    PUBREC/PUBREL/PUBCOMP, QoS0 nothing; none is delivered to anyone."""
    if IS_NATS_SERVER:
        pytest.skip("observers use MQTT 5.0")
    srv = start(PERM_USERS)
    async with Observers(srv) as obs:
        c = await asyncio.to_thread(raw_mqtt, srv.mqtt, V311, "alice", "alicepw")
        try:
            c.publish("a/secret", b"q1", qos=1, pid=1)
            ack = c.expect(PUBACK)
            assert ack.pid == 1 and ack.raw == b"\x40\x02\x00\x01", ack
            c.publish("other/x", b"q2", qos=2, pid=2)
            rec = c.expect(PUBREC)
            assert rec.raw == b"\x50\x02\x00\x02", rec
            c.ack(PUBREL, 2)
            comp = c.expect(PUBCOMP)
            assert comp.raw == b"\x70\x02\x00\x02", comp
            c.publish("a/secret", b"q0", qos=0)
            c.publish("a/ok", b"marker", qos=1, pid=3)
            ack = c.expect(PUBACK)
            assert ack.pid == 3
            assert c.quiet(0.2) == []
        finally:
            c.close()
        assert await obs.nats_until("a.ok") == ["a.ok"]
        assert await asyncio.to_thread(obs.mqtt_until, "a/ok") == ["a/ok"]


@pytest.mark.parametrize("version", [V311, V5], ids=["3.1.1", "5.0"])
@junction_only
def test_mqtt_subscribe_denied_filter(start, version):
    """Denied filters: SUBACK 0x80 (3.1.1) / 0x87 (5.0), per filter in one SUBSCRIBE."""
    srv = start(PERM_USERS)
    fail = SUBACK_FAILURE_311 if version == V311 else NOT_AUTHORIZED
    c = raw_mqtt(srv.mqtt, version, "alice", "alicepw")
    try:
        ack = c.subscribe([("other/x", 1), ("a/b", 1), ("a/secret", 0), ("pub/ok", 0)], pid=7)
        assert ack.codes == [fail, 1, fail, 0], ack
        # The connection stays usable.
        ack = c.subscribe([("a/c", 1)], pid=8)
        assert ack.codes == [1], ack
    finally:
        c.close()


@pytest.mark.parametrize("version", [V311, V5], ids=["3.1.1", "5.0"])
@junction_only
@async_test(40)
async def test_mqtt_wildcard_tricks_when_only_a_b_allowed(start, version):
    """subscribe allow ["a.b"]: '#', '+/b', 'a/#', 'a/+', '+/+', '$share/g/#',
    '$share/g/+/b' are refused; 'a/b' and '$share/g/a/b' granted; nothing but a/b
    is delivered."""
    srv = start(PERM_USERS)
    fail = SUBACK_FAILURE_311 if version == V311 else NOT_AUTHORIZED
    denied = ["#", "+/b", "a/#", "a/+", "+/+", "$share/g/#", "$share/g/+/b"]
    c = await asyncio.to_thread(raw_mqtt, srv.mqtt, version, "narrow", "narrowpw")
    try:
        for i, f in enumerate(denied, start=1):
            ack = c.subscribe([(f, 1)], pid=i)
            assert ack.codes == [fail], f"{f!r}: {ack!r}"
        ack = c.subscribe([("a/b", 1)], pid=50)
        assert ack.codes == [1], ack
        if version == V5:
            ack = c.subscribe([("$share/g/a/b", 0)], pid=51)
            assert ack.codes == [0], ack
        nc = await nats_conn(srv, "admin", "adminpw")
        try:
            for s in ["x.b", "a.c", "a.b.c", "a", "b"]:
                await nc.publish(s, b"no")
            await nc.publish("a.b", b"yes")
            await nc.flush()
        finally:
            await nc.close()
        got = await asyncio.to_thread(c.quiet, 1.0)
        topics = [p.topic for p in got if getattr(p, "type", None) == PUBLISH]
        # 'a/b' once for the plain subscription, once more for the shared one (5.0).
        assert sorted(set(topics)) == ["a/b"], got
        assert all(p.payload == b"yes" for p in got if getattr(p, "type", None) == PUBLISH), got
        for p in got:
            if p.type == PUBLISH and p.qos:
                c.ack(PUBACK, p.pid)
    finally:
        c.close()


@pytest.mark.parametrize("filt", ["#", "a/+", "a/#"])
@junction_only
@async_test(40)
async def test_mqtt_wildcard_over_narrower_deny_filters_delivery(start, filt):
    """subscribe deny ["a.secret"] only: a wildcard covering a/secret is granted, but
    a/secret (published from NATS and from MQTT) is never delivered; a/ok is."""
    srv = start(PERM_USERS)
    with MqttClients() as mc:
        m = mc.add(paho(srv.mqtt, V5, "wide", "widepw"))
        await asyncio.to_thread(m.connect)
        assert await asyncio.to_thread(m.subscribe, filt, 1) == [1]
        nc = await nats_conn(srv, "admin", "adminpw")
        pub = mc.add(paho(srv.mqtt, V5, "admin", "adminpw"))
        await asyncio.to_thread(pub.connect)
        try:
            await nc.publish("a.secret", b"nats-secret")
            await nc.flush()
            await asyncio.to_thread(pub.publish, "a/secret", b"mqtt-secret", 1)
            await nc.publish("a.ok", b"nats-ok")
            await nc.flush()
            await asyncio.to_thread(pub.publish, "a/ok", b"mqtt-ok", 1)
            got = await asyncio.to_thread(m.expect_n, 2)
            got += await asyncio.to_thread(m.drain, 0.5)
            assert sorted((x.topic, x.payload) for x in got) == [("a/ok", b"mqtt-ok"), ("a/ok", b"nats-ok")], \
                [(x.topic, x.payload) for x in got]
        finally:
            await nc.close()


@pytest.mark.parametrize("version,expected", [(V311, NOT_AUTHORIZED_311), (V5, NOT_AUTHORIZED)],
                         ids=["3.1.1", "5.0"])
@junction_only
def test_mqtt_will_to_forbidden_topic_refused_at_connect(start, version, expected):
    """A will on a topic the user may not publish to: CONNACK 5 / 0x87 and close;
    the same user with a will on an allowed topic connects."""
    srv = start(PERM_USERS)
    c = raw_mqtt(srv.mqtt, version, "alice", "alicepw", expect_rc=None, will=Will("other/will", b"bye"))
    try:
        assert connack_then_close(c) == expected
    finally:
        c.close()
    c = raw_mqtt(srv.mqtt, version, "alice", "alicepw", expect_rc=None, will=Will("a/secret", b"bye", qos=1))
    try:
        assert connack_then_close(c) == expected
    finally:
        c.close()
    c = raw_mqtt(srv.mqtt, version, "alice", "alicepw", expect_rc=0, will=Will("a/will", b"bye"))
    c.close()


ACCOUNTS = """
accounts {
  A: { users: [ {user: a1, password: pa} ] }
  B: { users: [ {user: b1, password: pb} ] }
}
"""


@junction_only
@async_test(40)
async def test_mqtt_accounts_are_isolated(start):
    """An MQTT subscriber on '#' in account B never sees account A's messages (from NATS
    or MQTT); an A subscriber on '#' sees both; B's own traffic reaches B."""
    srv = start(ACCOUNTS)
    with MqttClients() as mc:
        sub_b = mc.add(paho(srv.mqtt, V5, "b1", "pb"))
        sub_a = mc.add(paho(srv.mqtt, V311, "a1", "pa"))
        for m in (sub_b, sub_a):
            await asyncio.to_thread(m.connect)
            assert await asyncio.to_thread(m.subscribe, "#", 1) == [1]
        pub_a = mc.add(paho(srv.mqtt, V311, "a1", "pa"))
        await asyncio.to_thread(pub_a.connect)
        na = await nats_conn(srv, "a1", "pa")
        nb = await nats_conn(srv, "b1", "pb")
        try:
            await na.publish("x.from_nats", b"A")
            await na.flush()
            await asyncio.to_thread(pub_a.publish, "x/from_mqtt", b"A", 1)
            got_a = await asyncio.to_thread(sub_a.expect_n, 2)
            assert sorted(m.topic for m in got_a) == ["x/from_mqtt", "x/from_nats"]
            await nb.publish("x.b_marker", b"B")
            await nb.flush()
            got_b = await asyncio.to_thread(sub_b.expect, 5)
            assert (got_b.topic, got_b.payload) == ("x/b_marker", b"B")
            rest = await asyncio.to_thread(sub_b.drain, 0.5)
            assert rest == [], [(m.topic, m.payload) for m in rest]
            # And A never saw B's marker.
            assert await asyncio.to_thread(sub_a.drain, 0.3) == []
        finally:
            await na.close()
            await nb.close()


# ==========================================================================
# 3. Cross-protocol: one user, the same permissions on NATS and MQTT
# ==========================================================================

# (NATS subject, MQTT topic, allowed for alice)
PUB_TABLE = [("a.b", "a/b", True), ("a.b.c", "a/b/c", True), ("a.secret", "a/secret", False),
             ("pub.ok", "pub/ok", True), ("pub.no", "pub/no", False), ("other", "other", False),
             ("a", "a", False)]
SUB_TABLE = [("a.b", "a/b", True), ("a.*", "a/+", True), ("a.secret", "a/secret", False),
             ("pub.ok", "pub/ok", True), (">", "#", False), ("*.b", "+/b", False),
             ("other.x", "other/x", False), ("pub.*", "pub/+", False)]


@junction_only
@async_test(40)
async def test_same_permissions_for_nats_and_mqtt_client_of_one_user(start):
    srv = start(PERM_USERS)
    nc = await raw_nats(srv, "alice", "alicepw")
    m = await asyncio.to_thread(raw_mqtt, srv.mqtt, V5, "alice", "alicepw")
    try:
        rows = []
        for i, (subject, topic, expected) in enumerate(PUB_TABLE, start=1):
            n_ok = await nats_pub_allowed(nc, subject)
            m.publish(topic, b"x", qos=1, pid=i)
            ack = m.expect(PUBACK)
            assert ack.pid == i
            rows.append((subject, topic, expected, n_ok, ack.rc < 0x80))
        for i, (subject, topic, expected) in enumerate(SUB_TABLE, start=100):
            n_ok = await nats_sub_allowed(nc, subject, i)
            ack = m.subscribe([(topic, 0)], pid=i)
            rows.append((subject, topic, expected, n_ok, ack.codes == [0]))
            assert ack.codes in ([0], [NOT_AUTHORIZED]), ack
        wrong = [r for r in rows if not (r[2] == r[3] == r[4])]
        assert wrong == [], "(subject, topic, expected, NATS allowed, MQTT allowed): " + repr(wrong)
    finally:
        m.close()
        await nc.close()


@junction_only
@async_test(40)
async def test_mqtt_publish_reaches_nats_only_where_nats_may_subscribe(start):
    """alice's MQTT publish to a/x reaches alice's NATS sub on a.>; the NATS client of the
    same user cannot subscribe to other.> and so never sees admin's other.x."""
    srv = start(PERM_USERS)
    nc = await nats_conn(srv, "alice", "alicepw")
    errors = []

    async def on_err(e):
        errors.append(e)

    nc2 = await nats_conn(srv, "alice", "alicepw", error_cb=on_err)
    try:
        sub = await nc.subscribe("a.>")
        denied = await nc2.subscribe("other.>")
        await sync_subs(nc)
        await sync_subs(nc2)
        await wait_errors(errors, 1)
        # nats-py lower-cases the server's -ERR text.
        assert 'permissions violation for subscription to "other.>"' in str(errors[0]).lower(), errors
        with MqttClients() as mc:
            m = mc.add(paho(srv.mqtt, V311, "alice", "alicepw"))
            await asyncio.to_thread(m.connect)
            await asyncio.to_thread(m.publish, "a/x", b"1", 1)
            admin = mc.add(paho(srv.mqtt, V311, "admin", "adminpw"))
            await asyncio.to_thread(admin.connect)
            await asyncio.to_thread(admin.publish, "other/x", b"2", 1)
        msg = await sub.next_msg(timeout=5)
        assert (msg.subject, msg.data) == ("a.x", b"1")
        with pytest.raises(nats.errors.TimeoutError):
            await denied.next_msg(timeout=0.5)
    finally:
        await nc.close()
        await nc2.close()


async def wait_errors(errors: list, n: int, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while len(errors) < n:
        assert time.monotonic() < deadline, f"expected {n} async errors, got {errors!r}"
        await asyncio.sleep(0.02)


# ==========================================================================
# 4a. NATS over TLS
# ==========================================================================


@async_test(30)
async def test_nats_tls_nats_py_and_info(start):
    """nats-py over TLS (ca.pem trusted) round-trips; INFO (in clear) says tls_required."""
    srv = start(tls_block())
    nc = await nats_conn(srv, tls_ctx=client_ctx())
    try:
        sub = await nc.subscribe("tls.x")
        await sync_subs(nc)
        await nc.publish("tls.x", b"secure")
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"secure"
    finally:
        await nc.close()
    # nats:// plus tls= works too (nats-py upgrades when INFO says tls_required).
    nc = await nats_conn(srv, servers=[srv.url], tls=client_ctx())
    await nc.close()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, srv.port), 5)
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line.startswith(b"INFO {") and line.endswith(b"\r\n"), line
        info = json.loads(line[5:])
        assert info.get("tls_required") is True, info
    finally:
        writer.close()


@async_test(30)
async def test_nats_tls_plain_client_gets_info_then_is_closed(start):
    """A plaintext client on the TLS port gets INFO in clear and, after sending a
    plaintext CONNECT, is disconnected without service (no +OK, no PONG, no -ERR)."""
    srv = start(tls_block())
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, srv.port), 5)
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
        assert json.loads(line[5:]).get("tls_required") is True, line
        writer.write(b'CONNECT {"verbose":true,"pedantic":false}\r\nPING\r\nSUB x 1\r\n')
        await writer.drain()
        data = b""
        deadline = time.monotonic() + 5
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the server kept the plaintext connection open; got {data!r}"
            try:
                chunk = await asyncio.wait_for(reader.read(4096), remaining)
            except (ConnectionResetError, BrokenPipeError):
                break
            if not chunk:
                break
            data += chunk
        assert b"PONG" not in data and b"+OK" not in data and b"INFO" not in data, data
    finally:
        writer.close()


@async_test(30)
async def test_nats_tls_verify_client_certs(start):
    """verify: client.pem and client2.pem connect; no certificate and the rogue CA's
    certificate are refused (no PONG); INFO says tls_verify."""
    srv = start(tls_block(verify=True))
    for cert in ("client", "client2"):
        nc = await nats_conn(srv, tls_ctx=client_ctx(cert))
        await nc.flush(timeout=5)
        await nc.close()
        outcome, detail = await nats_tls_outcome(srv.port, client_ctx(cert))
        assert outcome == "ok", (cert, outcome, detail)
    for cert in (None, "rogue-client"):
        outcome, detail = await nats_tls_outcome(srv.port, client_ctx(cert))
        assert outcome in ("closed", "tls-error") and b"PONG" not in (detail if isinstance(detail, bytes) else b""), \
            (cert, outcome, detail)
        print(f"verify, client cert {cert!r}: {outcome} {detail!r}")
        with pytest.raises(Exception):
            nc = await nats_conn(srv, tls_ctx=client_ctx(cert))
            await nc.flush(timeout=2)


@async_test(30)
async def test_nats_tls_verify_info_fields(start):
    """With verify, INFO carries tls_required and tls_verify (as nats-server)."""
    srv = start(tls_block(verify=True))
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, srv.port), 5)
    try:
        info = json.loads((await asyncio.wait_for(reader.readline(), 5))[5:])
    finally:
        writer.close()
    assert info.get("tls_required") is True and info.get("tls_verify") is True, info


@junction_only
@async_test(30)
async def test_nats_tls_handshake_first(start):
    """handshake_first: the server sends nothing in clear; nats-py with
    tls_handshake_first=True works, and INFO arrives inside TLS."""
    srv = start(tls_block(handshake_first=True))
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, srv.port), 5)
    try:
        with pytest.raises(asyncio.TimeoutError):
            early = await asyncio.wait_for(reader.read(100), 0.5)
            pytest.fail(f"the server sent {early!r} in clear before the TLS handshake")
    finally:
        writer.close()
    c = await raw_nats_tls(srv.port, client_ctx(), handshake_first=True)
    try:
        assert c.info.get("tls_required") is True, c.info
        assert await c.ping() == []
    finally:
        await c.close()
    nc = await nats_conn(srv, tls_ctx=client_ctx(), tls_handshake_first=True)
    try:
        sub = await nc.subscribe("hf")
        await sync_subs(nc)
        await nc.publish("hf", b"1")
        assert (await sub.next_msg(timeout=5)).data == b"1"
    finally:
        await nc.close()


MAP_ACCOUNTS = """
accounts {
  A: { users: [
    {user: "device1@example.com", permissions: {
      publish: {allow: ["dev.>"]}
      subscribe: {allow: ["dev.>", "_INBOX.>"]}
    }}
  ] }
  B: { users: [ {user: "CN=alice,O=Junction Tests"} ] }
}
"""


@async_test(40)
async def test_nats_verify_and_map_users_accounts_permissions(start):
    """verify_and_map: client.pem is device1@example.com (account A, may publish only
    dev.>), client2.pem is "CN=alice,O=Junction Tests" (account B, no limits). A user
    named in CONNECT is ignored."""
    srv = start(tls_block(verify_and_map=True) + MAP_ACCOUNTS)
    dev = await raw_nats_tls(srv.port, client_ctx("client"))
    # The cert decides, not the CONNECT user (alice's DN here).
    dev2 = await raw_nats_tls(srv.port, client_ctx("client"), connect={"user": "CN=alice,O=Junction Tests"})
    alice = await raw_nats_tls(srv.port, client_ctx("client2"))
    try:
        for c in (dev, dev2, alice):
            assert await c.ping() == []
        await alice.send(b"SUB > 1\r\n")
        assert await alice.ping() == []
        assert await nats_sub_allowed(dev, "dev.>", 1)
        assert not await nats_sub_allowed(dev, "other", 2)
        assert not await nats_pub_allowed(dev2, "other")
        assert not await nats_pub_allowed(dev2, "x.y")
        await dev2.send(b"PUB dev.x 2\r\nhi\r\n")
        assert await dev2.ping() == []
        op = await dev.read_op()
        assert op[:2] == ("MSG", b"dev.x") and op[4] == b"hi", op
        # Account B never sees A's dev.x.
        assert await alice.quiet(0.3) == []
        await alice.send(b"PUB other 1\r\nz\r\n")
        seen = await alice.ping()
        assert [o[:2] for o in seen] == [("MSG", b"other")], seen
    finally:
        for c in (dev, dev2, alice):
            await c.close()
    # nats-py with the certificate alone.
    nc = await nats_conn(srv, tls_ctx=client_ctx("client"))
    try:
        sub = await nc.subscribe("dev.y")
        await sync_subs(nc)
        await nc.publish("dev.y", b"1")
        assert (await sub.next_msg(timeout=5)).data == b"1"
    finally:
        await nc.close()


@async_test(40)
async def test_nats_verify_and_map_dn_in_any_order_and_unmapped_refused(start):
    """users "O=Junction Tests,CN=alice" (reversed RDNs) and a bare CN "device-1":
    client2.pem maps; client.pem maps to nobody (a bare CN never matches) and gets
    -ERR 'Authorization Violation'; the rogue certificate fails TLS."""
    srv = start(tls_block(verify_and_map=True) + """
authorization { users: [ {user: "O=Junction Tests,CN=alice"}, {user: "device-1"} ] }
""")
    outcome, detail = await nats_tls_outcome(srv.port, client_ctx("client2"))
    assert outcome == "ok", (outcome, detail)
    outcome, detail = await nats_tls_outcome(srv.port, client_ctx("client"))
    assert (outcome, detail) == ("closed", AUTH_VIOLATION + b"\r\n"), (outcome, detail)
    outcome, detail = await nats_tls_outcome(srv.port, client_ctx("rogue-client"))
    assert outcome in ("closed", "tls-error") and not (isinstance(detail, bytes) and b"PONG" in detail), \
        (outcome, detail)
    outcome, detail = await nats_tls_outcome(srv.port, client_ctx(None))
    assert outcome in ("closed", "tls-error") and not (isinstance(detail, bytes) and b"PONG" in detail), \
        (outcome, detail)


@async_test(40)
async def test_nats_verify_and_map_unmapped_cert_authorization_violation(start):
    """Only device1@example.com configured: client2.pem (valid CA, unmapped) is refused
    with Authorization Violation; nats-py reports it."""
    srv = start(tls_block(verify_and_map=True) + 'authorization { users: [ {user: "device1@example.com"} ] }\n')
    outcome, detail = await nats_tls_outcome(srv.port, client_ctx("client"))
    assert outcome == "ok", (outcome, detail)
    outcome, detail = await nats_tls_outcome(srv.port, client_ctx("client2"))
    assert (outcome, detail) == ("closed", AUTH_VIOLATION + b"\r\n"), (outcome, detail)
    with pytest.raises(Exception) as ei:
        nc = await nats_conn(srv, tls_ctx=client_ctx("client2"))
        await nc.close()
    assert "Authorization Violation" in str(ei.value), repr(ei.value)


# ==========================================================================
# 4b. MQTT over TLS
# ==========================================================================


@pytest.mark.parametrize("version", [V311, pytest.param(V5, marks=junction_only)], ids=["3.1.1", "5.0"])
@async_test(40)
async def test_mqtt_tls_paho_roundtrip_and_plain_tcp_refused(start, version):
    """paho over TLS (ca.pem) connects and round-trips, also to a NATS subscriber;
    a plain-TCP MQTT CONNECT to the TLS port gets no CONNACK and is closed."""
    srv = start(mqtt_block(tls_block()))
    nc = await nats_conn(srv)
    try:
        sub = await nc.subscribe("sec.>")
        await sync_subs(nc)
        with MqttClients() as mc:
            m = mc.add(paho(srv.mqtt, version, tls=True))
            await asyncio.to_thread(m.connect)
            assert await asyncio.to_thread(m.subscribe, "sec/#", 1) == [1]
            await asyncio.to_thread(m.publish, "sec/a", b"tls", 1)
            got = await asyncio.to_thread(m.expect)
            assert (got.topic, got.payload) == ("sec/a", b"tls")
            msg = await sub.next_msg(timeout=5)
            assert (msg.subject, msg.data) == ("sec.a", b"tls")
    finally:
        await nc.close()
    outcome, detail = await asyncio.to_thread(mqtt_tls_attempt, srv.mqtt_port, None, version)
    assert outcome == "refused", (outcome, detail)


@pytest.mark.parametrize("version", [V311, pytest.param(V5, marks=junction_only)], ids=["3.1.1", "5.0"])
def test_mqtt_tls_verify_client_certs(start, version):
    """mqtt tls verify: client.pem / client2.pem connect (CONNACK 0); no certificate and
    the rogue certificate get no CONNACK."""
    srv = start(mqtt_block(tls_block(verify=True)))
    for cert in ("client", "client2"):
        assert mqtt_tls_attempt(srv.mqtt_port, client_ctx(cert), version) == ("connack", 0), cert
    for cert in (None, "rogue-client"):
        outcome, detail = mqtt_tls_attempt(srv.mqtt_port, client_ctx(cert), version)
        print(f"MQTT verify, client cert {cert!r}: {outcome} {detail}")
        assert outcome == "refused", (cert, outcome, detail)
    with MqttClients() as mc:
        m = mc.add(paho(srv.mqtt, version, cert="client"))
        m.connect()
        assert m.subscribe("v/t", 1) == [1]
        m.publish("v/t", b"1", 1)
        assert m.expect().payload == b"1"


MQTT_MAP_USERS = """
authorization {
  users: [
    {user: "device1@example.com", permissions: {
      publish: {allow: ["dev.>"]}
      subscribe: {allow: ["dev.>"]}
    }}
    {user: "O=Junction Tests,CN=alice"}
  ]
}
"""


@pytest.mark.parametrize("version", [V311, pytest.param(V5, marks=junction_only)], ids=["3.1.1", "5.0"])
@async_test(40)
async def test_mqtt_tls_verify_and_map(start, version):
    """mqtt tls verify_and_map: client.pem is device1@example.com (its permissions
    apply: dev/# only), client2.pem is alice by DN (reversed RDN order in the config)."""
    if IS_NATS_SERVER and version == V5:
        pytest.skip("MQTT 5.0")
    srv = start(MQTT_MAP_USERS + mqtt_block(tls_block(verify_and_map=True)))
    fail = SUBACK_FAILURE_311 if version == V311 else NOT_AUTHORIZED
    with MqttClients() as mc:
        dev = mc.add(paho(srv.mqtt, version, cert="client"))
        await asyncio.to_thread(dev.connect)
        assert await asyncio.to_thread(dev.subscribe, "other/x", 1) == [fail]
        # As in nats-server, 'dev/#' also subscribes to the parent 'dev', which
        # allow ["dev.>"] does not cover: refused. 'dev/+' is inside dev.>.
        assert await asyncio.to_thread(dev.subscribe, "dev/#", 1) == [fail]
        # QoS 0: nats-server 2.9 backs QoS 1 subscriptions with JetStream consumers on
        # internal $MQTT.sub.* subjects, which these permissions would forbid.
        assert await asyncio.to_thread(dev.subscribe, "dev/+", 0) == [0]
        alice = mc.add(paho(srv.mqtt, version, cert="client2"))
        await asyncio.to_thread(alice.connect)
        # (Not '#': nats-server 2.9 would deliver its internal $JS API traffic to it.)
        assert await asyncio.to_thread(alice.subscribe, "dev/#", 1) == [1]
        assert await asyncio.to_thread(alice.subscribe, "other/#", 1) == [1]
        # device1 may not publish to other/x: nobody gets it; dev/x arrives everywhere.
        info = await asyncio.to_thread(dev.publish, "other/x", b"no", 1)
        if version == V5:
            assert await asyncio.to_thread(dev.puback_rc, info) == NOT_AUTHORIZED
        await asyncio.to_thread(dev.publish, "dev/x", b"yes", 1)
        got = await asyncio.to_thread(dev.expect)
        assert (got.topic, got.payload) == ("dev/x", b"yes")
        got = await asyncio.to_thread(alice.expect)
        assert (got.topic, got.payload) == ("dev/x", b"yes")
        assert await asyncio.to_thread(alice.drain, 0.3) == []


@pytest.mark.parametrize("version", [V311, pytest.param(V5, marks=junction_only)], ids=["3.1.1", "5.0"])
def test_mqtt_tls_verify_and_map_unmapped_and_rogue_refused(start, version):
    """Only device1@example.com configured: client2.pem gets CONNACK 5 (3.1.1) /
    0x87 or 0x86 (5.0) and is closed; rogue and no certificate fail TLS; plain TCP too."""
    srv = start('authorization { users: [ {user: "device1@example.com"} ] }\n'
                + mqtt_block(tls_block(verify_and_map=True)))
    assert mqtt_tls_attempt(srv.mqtt_port, client_ctx("client"), version) == ("connack", 0)
    outcome, rc = mqtt_tls_attempt(srv.mqtt_port, client_ctx("client2"), version)
    print(f"MQTT verify_and_map, unmapped cert: {outcome} {rc!r}")
    assert outcome == "connack", (outcome, rc)
    if version == V311:
        assert rc == NOT_AUTHORIZED_311
    else:
        # 0x86 or 0x87 are both allowed; Junction sends 0x87 (Not authorized): no
        # user name or password was involved.
        assert rc == NOT_AUTHORIZED
    for ctx in (client_ctx("rogue-client"), client_ctx(None), None):
        outcome, detail = mqtt_tls_attempt(srv.mqtt_port, ctx, version)
        assert outcome == "refused", (outcome, detail)


# ==========================================================================
# 4c. WebSocket over TLS (wss): NATS and MQTT
# ==========================================================================


def wss_config() -> str:
    return AUTH_USERS.replace("{user: bob, password: bobpw}",
                              '{user: bob, password: bobpw, permissions: {publish: {deny: ["secret.>"]}}}') + \
        "websocket {\n  port: -1\n" + tls_block() + "}\n"


@junction_only
@async_test(40)
async def test_wss_nats_with_auth(start):
    """NATS over wss (websockets client trusting ca.pem): good user works and shares
    the bus with TCP NATS; wrong password -> Authorization Violation; permissions apply."""
    srv = start(wss_config())
    assert srv.ws_scheme == "wss", srv.ws_scheme
    ctx = client_ctx()
    c = await ws_nats(srv, ssl=ctx, connect={"user": "alice", "pass": "alicepw"})
    tcp = await nats_conn(srv, "alice", "alicepw")
    try:
        assert c.info.get("auth_required") is True, c.info
        await c.send(b"SUB w.> 1\r\n")
        assert await c.ping() == []
        await tcp.publish("w.x", b"over-tcp")
        await tcp.flush()
        op = await c.read_op()
        assert op[:2] == ("MSG", b"w.x") and op[4] == b"over-tcp", op
    finally:
        await c.close()
        await tcp.close()
    bad = await ws_nats(srv, ssl=ctx, connect={"user": "alice", "pass": "nope"})
    data = await bad.read_until_closed(5)
    await bad.close()
    assert data == AUTH_VIOLATION + b"\r\n", data
    bob = await ws_nats(srv, ssl=ctx, connect={"user": "bob", "pass": "bobpw"})
    try:
        assert await bob.ping() == []
        assert not await nats_pub_allowed(bob, "secret.x")
        assert await nats_pub_allowed(bob, "open.x")
    finally:
        await bob.close()
    # ws:// (no TLS) to the wss port does not open.
    with pytest.raises(Exception):
        ws = await ws_open(f"ws://{HOST}:{srv.ws_port}/", open_timeout=3)
        await ws.close()


@pytest.mark.parametrize("version", [V311, V5], ids=["3.1.1", "5.0"])
@junction_only
@async_test(40)
async def test_wss_mqtt_paho_with_auth(start, version):
    """MQTT over wss with paho (transport="websockets", tls_set(ca.pem)): good credentials
    connect and reach NATS; a wrong password is refused with 5 / 0x86."""
    srv = start(wss_config())
    nc = await nats_conn(srv, "alice", "alicepw")
    try:
        sub = await nc.subscribe("w.>")
        await sync_subs(nc)
        with MqttClients() as mc:
            m = mc.add(paho(srv.wss, version, "bob", "bobpw", tls=True, transport="websockets"))
            await asyncio.to_thread(m.connect)
            await asyncio.to_thread(m.publish, "w/mqtt", b"wss", 1)
            msg = await sub.next_msg(timeout=5)
            assert (msg.subject, msg.data) == ("w.mqtt", b"wss")
            if version == V5:
                info = await asyncio.to_thread(m.publish, "secret/x", b"no", 1)
                assert await asyncio.to_thread(m.puback_rc, info) == NOT_AUTHORIZED
            bad = mc.add(paho(srv.wss, version, "bob", "wrong", tls=True, transport="websockets"))
            await asyncio.to_thread(bad.connect, expect_rc=None)
            # paho (callback API 2) reports 3.1.1 return code 5 as ReasonCode 0x87 "Not authorized".
            expected = NOT_AUTHORIZED if version == V311 else BAD_USER_OR_PASSWORD
            assert bad.connack_rc == expected, bad.connack_rc
    finally:
        await nc.close()


@junction_only
@async_test(40)
async def test_wss_verify_and_map_uses_the_websocket_block(start):
    """`websocket { tls { verify_and_map } }` maps the browser's certificate to its user on the
    WebSocket listener itself (the NATS port here has no TLS at all): client.pem is
    device1@example.com (account A, may publish dev.> only), client2.pem is alice (account B),
    a certificate from another CA never gets through the handshake."""
    srv = start(MAP_ACCOUNTS + "websocket {\n  port: -1\n" + tls_block(verify_and_map=True) + "}\n")
    assert srv.ws_scheme == "wss", srv.ws_scheme
    dev = await ws_nats(srv, ssl=client_ctx("client"), connect={})
    try:
        assert await dev.ping() == []
        assert not await nats_pub_allowed(dev, "other")
        assert await nats_pub_allowed(dev, "dev.x")
    finally:
        await dev.close()
    alice = await ws_nats(srv, ssl=client_ctx("client2"), connect={})
    try:
        assert await alice.ping() == []
        assert await nats_pub_allowed(alice, "other")
    finally:
        await alice.close()
    # rogue-client is signed by another CA: the TLS handshake itself fails.
    with pytest.raises(Exception):
        rogue = await ws_nats(srv, ssl=client_ctx("rogue-client"), connect={})
        await rogue.close()


@junction_only
@pytest.mark.parametrize("timeout", [None, 1], ids=["default-2s", "configured-1s"])
def test_mqtt_client_without_connect_is_closed(start, timeout):
    """A socket that never sends CONNECT is closed after the auth timeout (nats-server's
    `authorization { timeout }`, 2 s by default), as NATS clients are, rather than held
    forever; a client that connects in time stays."""
    conf = AUTH_USERS + mqtt_block()
    if timeout is not None:
        conf = conf.replace("authorization {", f"authorization {{\n  timeout: {timeout}", 1)
    srv = start(conf)
    limit = 2.0 if timeout is None else float(timeout)
    silent = socket.create_connection((HOST, srv.mqtt_port), timeout=10)
    t0 = time.monotonic()
    try:
        assert silent.recv(16) == b""
        elapsed = time.monotonic() - t0
        # The sweep runs once a second.
        assert limit - 0.3 <= elapsed <= limit + 2.0, f"closed after {elapsed:.2f}s, timeout {limit}s"
    finally:
        silent.close()
    m = RawMqtt(srv.mqtt, V311)
    try:
        m.connect("in-time", username="alice", password=b"alicepw")
        time.sleep(limit + 1.5)
        m.send(bytes([0xC0, 0x00]))  # PINGREQ
        assert m.expect(PINGRESP) is not None
    finally:
        m.close()
