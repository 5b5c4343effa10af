"""One account's JetStream used from another through exports and imports, as nats-server's
documentation sets it up: the API imported under a prefix, acknowledgements and flow control
imported as they are, a push consumer's deliver subject exported as a stream.

Runs against Junction and against nats-server 2.9.10 alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import nats
import pytest
from nats.js import api

from conftest import IS_NATS_SERVER, Clients, RawClient, async_test


def name_hash(name: str) -> str:
    """nats-server's 8-character hash of a name (``getHash``)."""
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "".join(digits[b % 62] for b in hashlib.sha256(name.encode()).digest()[:8])


def config(tmp_path) -> str:
    return f"""
jetstream {{ store_dir: "{tmp_path / 'js'}" }}
accounts {{
  A: {{
    jetstream: enabled
    users: [{{user: a, password: a}}]
    exports: [
      {{service: "$JS.API.>", response_type: stream}}
      {{service: "$JS.ACK.>"}}
      {{service: "$JS.FC.>"}}
      {{stream: "push.B.>"}}
      {{stream: "deliver.B.>"}}
      {{service: "svc.>"}}
    ]
  }}
  B: {{
    jetstream: enabled
    users: [{{user: b, password: b}}]
    imports: [
      {{service: {{account: A, subject: "$JS.API.>"}}, to: "JS.A.API.>"}}
      {{service: {{account: A, subject: "$JS.ACK.>"}}}}
      {{service: {{account: A, subject: "$JS.FC.>"}}}}
      {{stream: {{account: A, subject: "push.B.>"}}}}
      {{stream: {{account: A, subject: "deliver.B.>"}}}}
      {{service: {{account: A, subject: "svc.>"}}}}
    ]
  }}
}}
"""


def serve_accounts(server_factory, tmp_path):
    conf = tmp_path / "server.conf"
    conf.write_text(config(tmp_path))
    return server_factory(args=["-c", str(conf)])


@async_test(timeout=60)
async def test_another_account_pulls_pushes_and_acknowledges_through_imports(server_factory, tmp_path):
    srv = serve_accounts(server_factory, tmp_path)
    async with Clients(srv) as c:
        a = await c.connect(user="a", password="a")
        ja = a.jetstream()
        await ja.add_stream(name="S", subjects=["s.>"], allow_direct=True)
        for i in range(3):
            await ja.publish(f"s.{i}", f"m{i}".encode())
        b = await c.connect(user="b", password="b")
        jb = b.jetstream(prefix="JS.A.API")
        # Subscribed before the pull requests below: a fetch that times out can leave nats-py
        # matching a late PONG to its next flush, which then returns before the server has
        # seen the subscription.
        got: asyncio.Queue = asyncio.Queue()

        async def on(msg):
            await got.put(msg)

        await b.subscribe("push.B.in", cb=on)
        await b.flush()

        # The API answers under the prefix.
        assert (await jb.stream_info("S")).state.messages == 3
        m = await jb.get_last_msg("S", "s.1")
        assert (m.seq, m.data) == (2, b"m1")

        # A pull consumer: the messages come to B's inbox with their own subjects and
        # acknowledgement replies, and B's acknowledgements reach the consumer.
        sub = await jb.pull_subscribe("s.>", "puller", stream="S")
        msgs = await sub.fetch(3, timeout=5)
        assert [(x.subject, x.data) for x in msgs] == [("s.0", b"m0"), ("s.1", b"m1"), ("s.2", b"m2")]
        assert [x.metadata.sequence.stream for x in msgs] == [1, 2, 3]
        for x in msgs:
            await x.ack_sync()
        info = await jb.consumer_info("S", "puller")
        assert (info.ack_floor.stream_seq, info.num_ack_pending, info.num_pending) == (3, 0, 0)
        # Nothing left: the request expires with its status, not a hang.
        try:
            await sub.fetch(1, timeout=1)
            raise AssertionError("a fourth message")
        except nats.errors.TimeoutError:
            pass

        # A push consumer delivering to a subject A exports and B imports (B subscribed at
        # the start).
        await ja.add_consumer("S", durable_name="pusher", deliver_subject="push.B.in",
                              ack_policy=api.AckPolicy.EXPLICIT)
        pushed = [await asyncio.wait_for(got.get(), 5) for _ in range(3)]
        assert [(x.subject, x.data) for x in pushed] == [("s.0", b"m0"), ("s.1", b"m1"), ("s.2", b"m2")]
        assert all(x.reply.startswith("$JS.ACK.S.pusher.") for x in pushed), [x.reply for x in pushed]
        for x in pushed:
            await x.ack()
        await b.flush()
        for _ in range(50):
            info = await ja.consumer_info("S", "pusher")
            if info.ack_floor.stream_seq == 3:
                break
            await asyncio.sleep(0.1)
        assert (info.ack_floor.stream_seq, info.num_ack_pending) == (3, 0)

        # A key-value bucket read from B.
        kv = await ja.create_key_value(bucket="cfg")
        await kv.put("k", b"v1")
        kvb = await jb.key_value("cfg")
        assert (await kvb.get("k")).value == b"v1"


@async_test(timeout=60)
async def test_a_stream_sources_another_accounts_stream_through_imports(server_factory, tmp_path):
    srv = serve_accounts(server_factory, tmp_path)
    async with Clients(srv) as c:
        a = await c.connect(user="a", password="a")
        ja = a.jetstream()
        await ja.add_stream(name="ORDERS", subjects=["orders.>"])
        for i in range(4):
            await ja.publish(f"orders.{i % 2}", f"o{i}".encode())
        b = await c.connect(user="b", password="b")
        jb = b.jetstream()
        external = {"api": "JS.A.API", "deliver": "deliver.B"}
        for body in ({"name": "COPY", "mirror": {"name": "ORDERS", "external": external}},
                     {"name": "ODD", "subjects": ["mine.>"],
                      "sources": [{"name": "ORDERS", "filter_subject": "orders.1", "external": external}]}):
            resp = json.loads((await b.request(f"$JS.API.STREAM.CREATE.{body['name']}",
                                               json.dumps(body).encode(), timeout=5)).data)
            assert "error" not in resp, resp

        async def counts():
            return ((await jb.stream_info("COPY")).state.messages, (await jb.stream_info("ODD")).state.messages)

        async def reach(expected):
            for _ in range(100):
                got = await counts()
                if got == expected:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"{got} != {expected}")

        await reach((4, 2))
        await ja.publish("orders.1", b"o4")
        await reach((5, 3))
        m = await jb.get_msg("COPY", 5)
        assert (m.subject, m.data) == ("orders.1", b"o4")
        assert [(await jb.get_msg("ODD", s)).data for s in (1, 2, 3)] == [b"o1", b"o3", b"o4"]
        # Each copy says where it came from: the origin, with nats-server's hash of the API
        # prefix, and its sequence there (nats-server 2.10 adds the filter and destination).
        origin = "ORDERS:" + name_hash("JS.A.API")
        for seq, from_seq in ((1, 2), (3, 5)):
            source = (await jb.get_msg("ODD", seq)).headers["Nats-Stream-Source"]
            assert source.split(" ")[:2] == [origin, str(from_seq)], source
            if not IS_NATS_SERVER:
                assert source == f"{origin} {from_seq} orders.1 >"
        # The stream's info tells where it copies from and how far behind it is.
        info = await jb.stream_info("COPY")
        assert (info.mirror.name, info.mirror.lag, info.mirror.error) == ("ORDERS", 0, None)
        assert 0 <= info.mirror.active < 10 * 10**9, info.mirror
        [src] = (await jb.stream_info("ODD")).sources
        assert (src.name, src.lag, src.error) == ("ORDERS", 0, None)
        # An origin that refuses: the info says why, and the stream keeps asking.
        body = {"name": "NONE", "mirror": {"name": "MISSING", "external": external}}
        resp = json.loads((await b.request("$JS.API.STREAM.CREATE.NONE", json.dumps(body).encode(), timeout=5)).data)
        assert "error" not in resp, resp
        for _ in range(100):
            info = await jb.stream_info("NONE")
            if info.mirror.error:
                break
            await asyncio.sleep(0.1)
        assert info.mirror.error["err_code"] == 10059, info.mirror
        assert info.mirror.active == -1 or info.mirror.active > 0, info.mirror

        # A client of the origin's account sees the deliver subjects. Whatever it sends there
        # as a flow control request is no request of B's: B's streams stay.
        spy = await a.subscribe("deliver.B.>")
        await ja.publish("orders.1", b"o5")
        seen = await spy.next_msg(5)
        raw = await RawClient.connect(srv, connect={"user": "a", "pass": "a"})
        hdr = b"NATS/1.0 100 FlowControl Request\r\nNats-Consumer-Stalled: $JS.API.STREAM.PURGE.ODD\r\n\r\n"
        for reply in (b"$JS.API.STREAM.DELETE.ODD", b"$JS.API.STREAM.DELETE.COPY"):
            await raw.send(b"HPUB %s %s %d %d\r\n%s\r\n" % (seen.subject.encode(), reply, len(hdr), len(hdr), hdr))
        await raw.ping()
        await reach((6, 4))
        assert sorted(await jb.streams_info(), key=lambda i: i.config.name)[0].config.name == "COPY"
        assert (await jb.stream_info("ODD")).state.messages == 4

        # Source and mirror settings are checked as nats-server 2.10 checks them (2.9 has
        # none of these checks).
        bad = [] if IS_NATS_SERVER else [
            ({"name": "X", "sources": [{"name": "ORDERS", "external": external},
                                        {"name": "ORDERS", "external": external}]}, 10140),
            ({"name": "X", "sources": [{"name": "a.b"}]}, 10141),
            ({"name": "X", "mirror": {"name": "a b"}}, 10142),
        ]
        for body, code in bad:
            resp = json.loads((await b.request("$JS.API.STREAM.CREATE.X", json.dumps(body).encode(), timeout=5)).data)
            assert resp.get("error", {}).get("err_code") == code, (body, resp)


@pytest.mark.skipif(IS_NATS_SERVER, reason="nats-server 2.9.10 does not deliver here at all")
@async_test(timeout=60)
async def test_a_push_consumer_delivers_to_an_imported_service(server_factory, tmp_path):
    """B's push consumer delivers to a subject B imports as a service from A: A's service gets
    the messages with their own subjects and acknowledgement replies, as nats-server routes a
    JetStream delivery through a service import. (nats-server 2.9.10 does not deliver at all:
    its push consumer does not count a service import as interest.)"""
    srv = serve_accounts(server_factory, tmp_path)
    async with Clients(srv) as c:
        a = await c.connect(user="a", password="a")
        b = await c.connect(user="b", password="b")
        sub = await a.subscribe("svc.>")
        await a.flush()
        jb = b.jetstream()
        await jb.add_stream(name="WORK", subjects=["work.>"])
        await jb.add_consumer("WORK", durable_name="to_a", deliver_subject="svc.work",
                              ack_policy=api.AckPolicy.NONE)
        for i in range(3):
            await jb.publish(f"work.{i}", f"w{i}".encode())
        got = [await sub.next_msg(5) for _ in range(3)]
        assert [(m.subject, m.data) for m in got] == [("work.0", b"w0"), ("work.1", b"w1"), ("work.2", b"w2")]
        assert all(m.reply.startswith("$JS.ACK.WORK.to_a.") for m in got), [m.reply for m in got]


def purge_config(tmp_path) -> str:
    return f"""
jetstream {{ store_dir: "{tmp_path / 'js'}" }}
system_account: SYS
accounts {{
  SYS: {{
    users: [{{user: sys, password: sys}}]
    exports: [{{service: "$JS.API.ACCOUNT.PURGE.*"}}]
  }}
  A: {{ jetstream: enabled, users: [{{user: a, password: a}}] }}
  B: {{ jetstream: enabled, users: [{{user: b, password: b}}] }}
  C: {{
    users: [{{user: c, password: c}}]
    imports: [{{service: {{account: SYS, subject: "$JS.API.ACCOUNT.PURGE.*"}}}}]
  }}
}}
"""


@async_test(timeout=60)
async def test_the_system_account_purges_an_accounts_jetstream(server_factory, tmp_path):
    # `$JS.API.ACCOUNT.PURGE.<account>` is the system account's: every stream of the account
    # goes, with its consumers and messages; the other accounts keep theirs.
    srv = server_factory(config=purge_config(tmp_path))
    async with Clients(srv) as c:
        a = await c.connect(user="a", password="a")
        ja = a.jetstream()
        b = await c.connect(user="b", password="b")
        jb = b.jetstream()
        for name, subject in [("S1", "one.>"), ("S2", "two.>")]:
            await ja.add_stream(name=name, subjects=[subject])
        await ja.publish("one.x", b"a1")
        await ja.add_consumer("S1", durable_name="C")
        await jb.add_stream(name="S1", subjects=["one.>"])
        await jb.publish("one.x", b"b1")
        # An account cannot purge itself, nor another: it hears nothing. (nats-server 2.9.10
        # lets any account with JetStream purge any account; 2.10.27 checks that the request
        # comes from the system account, commit 406f83666 "Improved request account
        # validation". Junction checks it.)
        if not IS_NATS_SERVER:
            for subject in ["$JS.API.ACCOUNT.PURGE.A", "$JS.API.ACCOUNT.PURGE.B"]:
                with pytest.raises(nats.errors.TimeoutError):
                    await a.request(subject, b"", timeout=0.5)
            # Nor through an import of the system account's subject: the request is C's, not
            # the system account's, and nobody answers it.
            cc = await c.connect(user="c", password="c")
            with pytest.raises(nats.errors.TimeoutError):
                await cc.request("$JS.API.ACCOUNT.PURGE.A", b"", timeout=0.5)
        assert sorted(s.config.name for s in await ja.streams_info()) == ["S1", "S2"]
        deleted = await a.subscribe("$JS.EVENT.ADVISORY.STREAM.DELETED.>")
        await a.flush()
        sys = await c.connect(user="sys", password="sys")
        reply = await sys.request("$JS.API.ACCOUNT.PURGE.A", b"", timeout=5)
        assert json.loads(reply.data) == {
            "type": "io.nats.jetstream.api.v1.account_purge_response",
            "initiated": True,
        }
        gone = sorted([(await deleted.next_msg(timeout=2)).subject for _ in range(2)])
        assert gone == ["$JS.EVENT.ADVISORY.STREAM.DELETED.S1", "$JS.EVENT.ADVISORY.STREAM.DELETED.S2"]
        assert await ja.streams_info() == []
        with pytest.raises(nats.js.errors.NotFoundError):
            await ja.consumer_info("S1", "C")
        # B keeps its stream of the same name, and A starts afresh.
        assert (await jb.stream_info("S1")).state.messages == 1
        await ja.add_stream(name="S1", subjects=["one.>"])
        assert (await ja.publish("one.x", b"a2")).seq == 1
        # An account without streams (C), or one that does not exist, is purged all the same.
        for target in ["C", "NOPE"]:
            reply = await sys.request(f"$JS.API.ACCOUNT.PURGE.{target}", b"", timeout=5)
            assert json.loads(reply.data)["initiated"] is True
    # What the purge took stays gone after a restart.
    srv.terminate()
    again = server_factory(config=purge_config(tmp_path))
    async with Clients(again) as c:
        ja = (await c.connect(user="a", password="a")).jetstream()
        infos = await ja.streams_info()
        assert [(s.config.name, s.state.messages) for s in infos] == [("S1", 1)]
        assert (await ja.get_msg("S1", 1)).data == b"a2"
        with pytest.raises(nats.js.errors.NotFoundError):
            await ja.consumer_info("S1", "C")
        jb = (await c.connect(user="b", password="b")).jetstream()
        assert (await jb.stream_info("S1")).state.messages == 1
