"""Subject mappings (nats-server's `mappings` block, top level and per account), end to end
with nats-py and paho-mqtt over 127.0.0.1.

Every expectation here is nats-server's and passes against Debian's nats-server 2.9.10
(`JUNCTION_BIN=/usr/sbin/nats-server`; the MQTT test needs Junction's MQTT port flag and is
skipped there): a publication is routed under the mapped subject, weights split the traffic
(the rest keeps its subject), the publish permission applies to the mapped subject, and a bad
mapping stops the server at start with nats-server's wording.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter

import nats
import nats.errors

import pytest

from conftest import BIN, IS_NATS_SERVER, Clients, RawClient, async_test, sync_subs
from jwt_helpers import operator_config, user_creds

MAPPINGS = """
mappings = {
  "foo": "bar"
  "orders.*.*": "orders.$2.$1"
  "w": [
    { destination: "w.a", weight: 30% }
    { destination: "w.b", weight: 50 }
  ]
  "part.*": "part.{{partition(3,1)}}.$1"
}
"""


def fnv1a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


async def collect(nc, subject: str) -> list:
    got: list = []

    async def cb(m):
        got.append((m.subject, m.data))

    await nc.subscribe(subject, cb=cb)
    return got


@async_test()
async def test_publications_are_routed_under_the_mapped_subject(server_factory):
    srv = server_factory(config=MAPPINGS)
    async with Clients(srv) as c:
        sub = await c.connect()
        pub = await c.connect()
        bar = await collect(sub, "bar")
        foo = await collect(sub, "foo")
        orders = await collect(sub, "orders.>")
        parts = await collect(sub, "part.>")
        await sync_subs(sub)
        await pub.publish("foo", b"1")
        await pub.publish("orders.o1.eu", b"2")
        await pub.publish("orders.o1", b"3")  # no mapping matches two tokens
        for k in ("alpha", "beta", "gamma"):
            await pub.publish(f"part.{k}", k.encode())
        await pub.flush()
        await sub.flush()
        await asyncio.sleep(0.2)
        assert bar == [("bar", b"1")]
        assert foo == [], "the source subject itself gets nothing"
        assert sorted(orders) == [("orders.eu.o1", b"2"), ("orders.o1", b"3")]
        # The partition is the 32-bit FNV-1a of the token modulo 3.
        got = {data.decode(): subj for subj, data in parts}
        assert got == {k: f"part.{fnv1a(k.encode()) % 3}.{k}" for k in ("alpha", "beta", "gamma")}
        # A request through a mapping reaches a responder on the mapped subject.
        async def answer(m):
            await m.respond(b"answered on " + m.subject.encode())

        await sub.subscribe("bar", cb=answer)
        await sync_subs(sub)
        reply = await pub.request("foo", b"q", timeout=2)
        assert reply.data == b"answered on bar"


@async_test()
async def test_weights_split_the_traffic_and_the_rest_keeps_its_subject(server_factory):
    srv = server_factory(config=MAPPINGS)
    async with Clients(srv) as c:
        sub = await c.connect()
        pub = await c.connect()
        got = await collect(sub, "w.>")
        same = await collect(sub, "w")
        await sync_subs(sub)
        n = 2000
        for _ in range(n):
            await pub.publish("w", b"x")
        await pub.flush()
        for _ in range(100):
            if len(got) + len(same) >= n:
                break
            await asyncio.sleep(0.05)
        a = sum(1 for s, _ in got if s == "w.a")
        b = sum(1 for s, _ in got if s == "w.b")
        assert a + b + len(same) == n
        # 30%, 50%, and the remaining 20% under "w" itself.
        assert 450 <= a <= 750, (a, b, len(same))
        assert 850 <= b <= 1150, (a, b, len(same))
        assert 250 <= len(same) <= 550, (a, b, len(same))


ACCOUNT_MAPPINGS = """
accounts {
  A {
    users: [
      { user: a, password: a, permissions: { publish: ["allowed.>"], subscribe: ">" } }
      { user: watcher, password: w }
    ]
    mappings: { "in.x": "allowed.x", "in.y": "denied.y" }
  }
  B {
    users: [ { user: b, password: b } ]
  }
}
"""


@async_test()
async def test_account_mappings_stay_in_their_account_and_permissions_see_the_mapped_subject(
    server_factory,
):
    srv = server_factory(config=ACCOUNT_MAPPINGS)
    async with Clients(srv) as c:
        watcher = await c.connect(user="watcher", password="w")
        a = await c.connect(user="a", password="a")
        b = await c.connect(user="b", password="b")
        seen_a = await collect(watcher, ">")
        seen_b = await collect(b, ">")
        await sync_subs(watcher)
        await sync_subs(b)
        # "in.x" is not in a's publish permissions, but where it goes is.
        await a.publish("in.x", b"ok")
        await a.flush()
        # Mapped to "denied.y", which a may not publish to: nats-server names the mapped
        # subject in the violation, and the connection stays up.
        raw = await RawClient.connect(srv, {"user": "a", "pass": "a", "verbose": False})
        try:
            assert await raw.ping() == []
            await raw.send(b"PUB in.y 2\r\nno\r\n")
            assert await raw.ping() == [
                (b"-ERR 'Permissions Violation for Publish to \"denied.y\"'",)
            ]
        finally:
            await raw.close()
        await asyncio.sleep(0.3)
        assert ("allowed.x", b"ok") in seen_a
        assert not any(s in ("denied.y", "in.y", "in.x") for s, _ in seen_a), seen_a
        # Account B has no mappings: its "in.x" stays "in.x" (and A's traffic never shows).
        await b.publish("in.x", b"b")
        await b.flush()
        await asyncio.sleep(0.2)
        assert seen_b == [("in.x", b"b")]


@pytest.mark.parametrize(
    "mapping, words",
    [
        ('"a": [ {destination: "x", weight: 60}, {destination: "y", weight: 50} ]',
         "total weight needs to be <= 100"),
        ('"a.*": "x.$2"', "out of range"),
        ('"a": [ {destination: "x"} ]', "issing weight for mapping destination"),
    ],
)
def test_a_bad_mapping_stops_the_start(tmp_path, mapping, words):
    conf = tmp_path / "bad.conf"
    conf.write_text("mappings = {\n  %s\n}\n" % mapping)
    r = subprocess.run([BIN, "-c", str(conf), "-t"], capture_output=True, text=True, timeout=20)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    if IS_NATS_SERVER and "[" in mapping:
        # nats-server 2.9.10 fails to format its own error for a list of destinations (its
        # message reads "interface conversion: interface {} is []interface {}, not string").
        return
    assert words in out, out


@pytest.mark.skipif(IS_NATS_SERVER, reason="nats-server 2.9.10's MQTT needs JetStream and its own port flags")
def test_mqtt_publications_are_mapped_too(server_factory):
    import paho.mqtt.client as mqtt

    from mqtt_helpers import JUNCTION_MQTT_ARGS, _MQTT_LISTEN_RE

    srv = server_factory(config=MAPPINGS, args=JUNCTION_MQTT_ARGS)
    port = next(int(m.group(2)) for m in map(_MQTT_LISTEN_RE.search, srv.log) if m)

    async def run():
        async with Clients(srv) as c:
            sub = await c.connect()
            bar = await collect(sub, "bar")
            await sync_subs(sub)
            cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="mapper")
            cl.connect("127.0.0.1", port)
            cl.loop_start()
            try:
                cl.publish("foo", b"from mqtt", qos=1).wait_for_publish(5)
            finally:
                cl.loop_stop()
                cl.disconnect()
            for _ in range(50):
                if bar:
                    break
                await asyncio.sleep(0.05)
            assert bar == [("bar", b"from mqtt")]

    asyncio.run(asyncio.wait_for(run(), 30))


@async_test()
async def test_a_reload_applies_changed_mappings(server_factory):
    srv = server_factory(config='mappings = { "foo": "bar" }\n')
    path = srv.workdir / f"server-{id(srv)}.conf"
    async with Clients(srv) as c:
        sub = await c.connect()
        pub = await c.connect()
        got = await collect(sub, ">")
        await sync_subs(sub)
        await pub.publish("foo", b"1")
        await pub.flush()
        await asyncio.sleep(0.2)
        assert got == [("bar", b"1")]
        path.write_text('mappings = { "foo": "baz" }\n')
        await srv.reload()
        await pub.publish("foo", b"2")
        await pub.flush()
        await asyncio.sleep(0.2)
        assert got == [("bar", b"1"), ("baz", b"2")]
        # Mappings removed from the file are gone after the next reload.
        path.write_text("port: %d\n" % srv.port)
        await srv.reload()
        await pub.publish("foo", b"3")
        await pub.flush()
        await asyncio.sleep(0.2)
        assert got == [("bar", b"1"), ("baz", b"2"), ("foo", b"3")]


# --------------------------------------------------------------------------
# Mappings in an account JWT (operator mode)
# --------------------------------------------------------------------------

def _account_with_mappings(tmp_path, mappings: dict) -> tuple:
    """A dir-resolver config where account A's JWT (from the fixtures) carries ``mappings``,
    signed again by the operator, and the creds of a new user of A without limits."""
    config = operator_config(tmp_path, {"A": lambda c: c["nats"].__setitem__("mappings", mappings)})
    return config, user_creds(tmp_path, "A", "mapper")


@async_test()
async def test_account_jwt_mappings_route_and_one_the_server_cannot_make_is_left_out(
        server_factory, tmp_path):
    config, creds = _account_with_mappings(tmp_path, {
        "old.name": [{"subject": "new.name"}],  # no weight: 100
        "orders.*.*": [{"subject": "orders.$2.$1", "weight": 100}],
        "w": [{"subject": "w.a", "weight": 40}],  # the other 60% keep "w"
        "bad.*": [{"subject": "x.$2"}],  # one wildcard, not two: left out, the account works
    })
    srv = server_factory(config=config)
    async with Clients(srv) as c:
        sub = await c.connect(user_credentials=creds)
        pub = await c.connect(user_credentials=creds)
        got = await collect(sub, ">")
        await sync_subs(sub)
        await pub.publish("old.name", b"1")
        await pub.publish("orders.o1.eu", b"2")
        await pub.publish("bad.1", b"3")
        for _ in range(1000):
            await pub.publish("w", b"")
        await pub.flush()
        await sub.flush()
        for _ in range(50):
            if len(got) >= 1003:
                break
            await asyncio.sleep(0.1)
        named = [g for g in got if g[1]]
        assert named == [("new.name", b"1"), ("orders.eu.o1", b"2"), ("bad.1", b"3")]
        split = Counter(s for s, d in got if not d)
        assert set(split) == {"w", "w.a"} and sum(split.values()) == 1000, split
        # 40% of 1,000: outside 300..500 only with odds below one in a million.
        assert 300 <= split["w.a"] <= 500, split


@pytest.mark.parametrize("mappings", [
    {"w": [{"subject": "w.a", "weight": 60}, {"subject": "w.b", "weight": 60}]},
    {"w": [{"subject": "w.a"}, {"subject": "w.b"}]},  # no weight is 100 each
    pytest.param({"w": [{"subject": "w..a"}]}, marks=pytest.mark.skipif(
        IS_NATS_SERVER, reason="nats-server 2.9.10's JWT library did not check subjects yet")),
])
@async_test()
async def test_an_account_jwt_with_an_invalid_mapping_is_refused(server_factory, tmp_path,
                                                                  mappings):
    # The JWT library's checks fail, so the account cannot be used at all (nats-server logs
    # "account validation failed" and refuses its users).
    config, creds = _account_with_mappings(tmp_path, mappings)
    srv = server_factory(config=config)
    async with Clients(srv) as c:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await c.connect(user_credentials=creds)
