"""Authorization table (issue 15): every mapping trick against deny and allow rules.

Permissions are written as NATS subjects and hold the same way on every protocol. This table
tries what an attacker would: MQTT topics with `/`, `.`, empty levels, leading `/`, `+`, `#`,
`$share`, response topics, wills and retained messages; NATS subjects with wildcards, empty
tokens and queue groups; the same over WebSocket. For each publication it checks what the
publisher hears (MQTT 5: 0x87 in PUBACK; NATS: `-ERR 'Permissions Violation ...'`) and what an
unrestricted subscriber on `>` actually receives; for each subscription, the grant and exactly
which publications reach it.

Users (nats-server format):

* ``deny``: may do everything but publish or subscribe to ``secret`` and ``secret.>``;
* ``allow``: may only publish and subscribe on ``open.>``;
* ``admin``: unrestricted; watches ``>`` and publishes the test traffic.

An MQTT topic maps to a subject rule for rule as nats-server maps it (``/`` -> ``.``, ``.`` ->
``//``, an empty level -> ``/``): ``/secret/x`` (subject ``/.secret.x``) and ``secret.x``
(subject ``secret//x``) are other topics than ``secret/x``, allowed, and delivered only under
their own subjects, never to a ``secret.>`` subscriber.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from conftest import BIN, RawClient, Server, serve
from mqtt_helpers import _MQTT_LISTEN_RE, V5, V311, Broker, Mqtt, Will
from ws_helpers import ws_nats

IS_NATS_SERVER = "nats-server" in os.path.basename(BIN)
junction_only = pytest.mark.skipif(IS_NATS_SERVER, reason="MQTT 5 / WebSocket: Junction only here")

USERS = """
authorization {
  users: [
    {user: admin, password: adminpw}
    {user: deny, password: denypw, permissions: {
      publish:   { deny: ["secret", "secret.>"] }
      subscribe: { deny: ["secret", "secret.>"] }
    }}
    {user: allow, password: allowpw, permissions: {
      publish:   { allow: ["open.>"] }
      subscribe: { allow: ["open.>"] }
    }}
  ]
}
"""
PASSWORDS = {"admin": "adminpw", "deny": "denypw", "allow": "allowpw"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    serving = serve(tmp_path_factory.mktemp("authz"), Server)
    start = next(serving)
    yield start(USERS)
    next(serving, None)


def broker(srv: Server, transport: str) -> Broker:
    if transport == "ws":
        return Broker(kind="junction", port=srv.ws_port, nats_port=srv.port, http_port=srv.http_port, process=srv)
    for line in srv.log:
        m = _MQTT_LISTEN_RE.search(line)
        if m:
            return Broker(kind="junction", port=int(m.group(2)), nats_port=srv.port, http_port=srv.http_port,
                          process=srv)
    pytest.fail("no MQTT listener")


def mqtt(srv: Server, user: str, version: int, transport: str, will: Will | None = None,
         expect_rc: int | None = 0) -> Mqtt:
    c = Mqtt(broker(srv, transport), f"authz-{uuid.uuid4().hex[:8]}", version, True, will=will,
             transport="websockets" if transport == "ws" else "tcp", ws_path="/mqtt")
    c.client.username_pw_set(user, PASSWORDS[user])
    c.connect(expect_rc=expect_rc)
    return c


async def shut(c: RawClient) -> None:
    closing = c.writer.close()
    if asyncio.iscoroutine(closing):
        await closing


async def watcher(srv: Server) -> RawClient:
    w = await RawClient.connect(srv, connect={"user": "admin", "pass": "adminpw"})
    await w.send(b"SUB > 1\r\n")
    assert await w.ping() == []
    return w


async def seen_until(w: RawClient, sentinel: bytes, timeout: float = 5.0) -> list:
    """Subjects the watcher received before ``sentinel`` (which must arrive)."""
    got = []
    while True:
        op = await w.read_op(timeout)
        assert op is not None, "the watcher was disconnected"
        if op[0] in ("MSG", "HMSG"):
            if op[1] == sentinel:
                return got
            got.append(op[1].decode())


TRANSPORTS = pytest.mark.parametrize("transport", ["tcp", "ws"])
VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["mqtt311", "mqtt5"])

# (user, topic, subject delivered to `>`, or None when the publication is refused)
MQTT_PUBLISH = [
    ("deny", "secret", None),
    ("deny", "secret/x", None),
    ("deny", "secret/", None),
    ("deny", "secret//x", None),
    ("deny", "secret/x.y", None),
    ("deny", "secret/x/y/z", None),
    ("deny", "/secret/x", "/.secret.x"),
    ("deny", "secret.x", "secret//x"),
    ("deny", "Secret/x", "Secret.x"),
    ("deny", "$share/g/secret/x", "$share.g.secret.x"),
    ("deny", "open/x", "open.x"),
    ("allow", "open/x", "open.x"),
    ("allow", "open/x/y", "open.x.y"),
    ("allow", "open", None),
    ("allow", "open/", "open./"),
    ("allow", "/open/x", None),
    ("allow", "open.x", None),
    ("allow", "x/open", None),
    ("allow", "secret/x", None),
]


@junction_only
@TRANSPORTS
@VERSIONS
@pytest.mark.parametrize("user,topic,delivered", MQTT_PUBLISH,
                         ids=[f"{u}:{t}" for u, t, _ in MQTT_PUBLISH])
def test_mqtt_publish(srv, transport, version, user, topic, delivered):
    async def run():
        w = await watcher(srv)
        c = await asyncio.to_thread(mqtt, srv, user, version, transport)
        try:
            info = await asyncio.to_thread(c.publish, topic, b"x", 1)
            rc = await asyncio.to_thread(c.puback_rc, info)
            if version == V5:
                assert rc == (0 if delivered else 0x87), f"PUBACK {rc:#x}"
            sentinel = "open/sentinel" if user == "allow" else "sentinel"
            await asyncio.to_thread(c.publish, sentinel, b"s", 1)
            got = await seen_until(w, sentinel.replace("/", ".").encode())
            assert got == ([delivered] if delivered else []), got
        finally:
            await asyncio.to_thread(c.close)
            await shut(w)

    asyncio.run(asyncio.wait_for(run(), 20))


@junction_only
@VERSIONS
def test_mqtt_retained_on_denied_topic_is_not_kept(srv, version):
    c = mqtt(srv, "deny", version, "tcp")
    try:
        info = c.publish("secret/retained", b"r", 1, retain=True)
        if version == V5:
            assert c.puback_rc(info) == 0x87
    finally:
        c.close()
    a = mqtt(srv, "admin", version, "tcp")
    try:
        assert a.subscribe("secret/#", 1) == [1]
        a.publish("secret/marker", b"m", 1)
        m = a.expect()
        assert (m.topic, m.retain) == ("secret/marker", False), m
    finally:
        a.close()


@junction_only
@VERSIONS
@pytest.mark.parametrize("user,topic,ok", [("deny", "secret/w", False), ("deny", "open/w", True),
                                           ("allow", "open/w", True), ("allow", "other/w", False)])
def test_mqtt_will_topic(srv, version, user, topic, ok):
    refused = 0x87  # paho reports 3.1.1's return code 5 as the reason code 0x87 too
    c = mqtt(srv, user, version, "tcp", will=Will(topic, b"bye"), expect_rc=None)
    try:
        assert c.connack_rc == (0 if ok else refused), c.connack_rc
    finally:
        c.close()


@junction_only
@pytest.mark.parametrize("user,response,ok", [("deny", "secret/r", False), ("deny", "open/r", True),
                                              ("allow", "open/r", True), ("allow", "other/r", False)])
def test_mqtt_response_topic(srv, user, response, ok):
    c = mqtt(srv, user, V5, "tcp")
    try:
        info = c.publish("open/request", b"q", 1, props={"ResponseTopic": response, "CorrelationData": b"c"})
        assert c.puback_rc(info) == (0 if ok else 0x87)
    finally:
        c.close()


# (user, filter, granted, [(subject the admin publishes, topic the subscriber receives)])
PUBLISHED = ["secret.x", "secret", "open.x", "other.y", "zz.x"]
MQTT_SUBSCRIBE = [
    ("deny", "secret/#", False, []),
    ("deny", "secret", False, []),
    ("deny", "secret/+", False, []),
    ("deny", "$share/g/secret/#", False, []),
    ("deny", "#", True, ["open/x", "other/y", "zz/x"]),
    ("deny", "+/x", True, ["open/x", "zz/x"]),
    ("deny", "+", True, []),
    ("deny", "$share/g/#", True, ["open/x", "other/y", "zz/x"]),
    ("allow", "open/#", False, []),
    ("allow", "#", False, []),
    ("allow", "+/x", False, []),
    ("allow", "open/+", True, ["open/x"]),
    ("allow", "$share/g/open/+", True, ["open/x"]),
]


@junction_only
@TRANSPORTS
@VERSIONS
@pytest.mark.parametrize("user,filt,granted,received", MQTT_SUBSCRIBE,
                         ids=[f"{u}:{f}" for u, f, _, _ in MQTT_SUBSCRIBE])
def test_mqtt_subscribe(srv, transport, version, user, filt, granted, received):
    c = mqtt(srv, user, version, transport)
    try:
        codes = c.subscribe(filt, 1)
        refused = 0x87 if version == V5 else 0x80
        assert codes == ([1] if granted else [refused]), codes
        if not granted:
            return

        async def publish_all():
            a = await RawClient.connect(srv, connect={"user": "admin", "pass": "adminpw"})
            try:
                for s in PUBLISHED:
                    await a.send(f"PUB {s} 1\r\nx\r\n".encode())
                # One of these ends the wait, whatever the filter (each comes after the test
                # traffic from the same connection, so in order).
                for end in ("zz.end", "zz", "end.x", "open.end"):
                    await a.send(f"PUB {end} 3\r\nend\r\n".encode())
                assert await a.ping() == []
            finally:
                await shut(a)

        asyncio.run(publish_all())
        got = []
        while True:
            m = c.expect()
            if m.payload == b"end":
                break
            got.append(m.topic)
        assert sorted(got) == sorted(received), got
    finally:
        c.close()


# NATS: (user, operation line, the errors the client hears, subject delivered to `>` or None)
NATS_PUBLISH = [
    ("deny", "secret.x", True, None),
    ("deny", "secret", True, None),
    ("deny", ".secret.x", False, None),
    ("deny", "secret..x", False, None),
    ("deny", "Secret.x", False, "Secret.x"),
    ("deny", "secretx", False, "secretx"),
    ("allow", "open.x", False, "open.x"),
    ("allow", "open", True, None),
    ("allow", "x.open", True, None),
    ("allow", "open..x", True, None),
]


@pytest.mark.parametrize("transport", ["tcp", "ws"])
@pytest.mark.parametrize("user,subject,refused,delivered", NATS_PUBLISH,
                         ids=[f"{u}:{s}" for u, s, _, _ in NATS_PUBLISH])
def test_nats_publish(srv, transport, user, subject, refused, delivered):
    if transport == "ws" and IS_NATS_SERVER:
        pytest.skip("nats-server is started here without a WebSocket listener")

    async def run():
        w = await watcher(srv)
        creds = {"user": user, "pass": PASSWORDS[user]}
        c = await (ws_nats(srv, connect=creds) if transport == "ws" else RawClient.connect(srv, connect=creds))
        try:
            await c.send(f"PUB {subject} 1\r\nx\r\n".encode())
            errs = await c.ping()
            want = [(f"-ERR 'Permissions Violation for Publish to \"{subject}\"'".encode(),)] if refused else []
            assert errs == want, errs
            sentinel = "open.sentinel" if user == "allow" else "sentinel"
            await c.send(f"PUB {sentinel} 1\r\ns\r\n".encode())
            assert await c.ping() == []
            got = await seen_until(w, sentinel.encode())
            assert got == ([delivered] if delivered else []), got
        finally:
            await shut(c)
            await shut(w)

    asyncio.run(asyncio.wait_for(run(), 20))


# (user, SUB arguments, refused, subjects of PUBLISHED received)
NATS_SUBSCRIBE = [
    ("deny", "secret.*", True, []),
    ("deny", "secret.>", True, []),
    ("deny", "secret", True, []),
    ("deny", "secret.> q", True, []),
    ("deny", ">", False, ["open.x", "other.y", "zz.x"]),
    ("deny", "*.x", False, ["open.x", "zz.x"]),
    ("deny", "*", False, []),
    ("deny", "> q", False, ["open.x", "other.y", "zz.x"]),
    ("allow", ">", True, []),
    ("allow", "open", True, []),
    ("allow", "*.x", True, []),
    ("allow", "open.>", False, ["open.x"]),
    ("allow", "open.* q", False, ["open.x"]),
]


@pytest.mark.parametrize("user,args,refused,received", NATS_SUBSCRIBE,
                         ids=[f"{u}:{a}" for u, a, _, _ in NATS_SUBSCRIBE])
def test_nats_subscribe(srv, user, args, refused, received):
    if IS_NATS_SERVER and (user, args) == ("deny", "*.x"):
        # nats-server 2.9.10 delivers `secret.x` to a `*.x` subscription of a user denied
        # `secret.>` (it filters `>`); Junction never delivers a denied subject.
        pytest.skip("nats-server 2.9.10 leaks the denied subject here")

    async def run():
        c = await RawClient.connect(srv, connect={"user": user, "pass": PASSWORDS[user]})
        a = await RawClient.connect(srv, connect={"user": "admin", "pass": "adminpw"})
        try:
            await c.send(f"SUB {args} 7\r\n".encode())
            errs = await c.ping()
            if refused:
                subject, _, queue = args.partition(" ")
                text = f"Permissions Violation for Subscription to \"{subject}\""
                if queue:
                    text += f" using queue \"{queue}\""
                assert errs == [(f"-ERR '{text}'".encode(),)], errs
                return
            assert errs == []
            for s in PUBLISHED:
                await a.send(f"PUB {s} 1\r\nx\r\n".encode())
            assert await a.ping() == []
            got = [op[1].decode() for op in await c.ping() if op[0] == "MSG"]
            assert sorted(got) == sorted(received), got
        finally:
            await shut(c)
            await shut(a)

    asyncio.run(asyncio.wait_for(run(), 20))
