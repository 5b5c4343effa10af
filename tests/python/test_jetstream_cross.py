"""JetStream beyond one NATS client: MQTT devices publishing into streams (the PUBACK waits for
the stream's commit), SIGKILL in the middle of publishing and of consuming (nothing
acknowledged lost, no message delivered past max_deliver), accounts that do not see each
other's streams, and permissions on the ``$JS.API`` subjects.

Junction only: the MQTT half needs Junction's MQTT listener, and the crash tests hold Junction
to a promise nats-server does not make (its acknowledgements precede the sync to disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import nats
import nats.errors
import pytest
from nats.js import api

from conftest import IS_NATS_SERVER, Clients, async_test, varz, wait_until
from mqtt_helpers import _MQTT_LISTEN_RE, Broker, Mqtt, V5

pytestmark = pytest.mark.skipif(IS_NATS_SERVER, reason="Junction's MQTT listener and durability promise")


def js_args(tmp_path, mqtt: bool = False) -> list:
    store = tmp_path / "js"
    store.mkdir(exist_ok=True)
    args = ["-js", "-sd", str(store)]
    if mqtt:
        args += ["--mqtt-port", "-1"]
    return args


async def publish_until_killed(srv, js, subject: str, prefix: str, seconds: float) -> dict[int, bytes]:
    """Publishes to ``subject.<n>`` with 256 PubAcks outstanding for ``seconds``, then SIGKILLs
    ``srv`` (at a moment unrelated to any commit); returns what was acknowledged, by
    sequence."""
    acked: dict[int, bytes] = {}

    async def one(i: int):
        payload = f"{prefix}-{i}".encode()
        try:
            ack = await js.publish(f"{subject}.{i % 7}", payload)
        except Exception:
            return
        acked[ack.seq] = payload

    loop = asyncio.get_running_loop()
    start = loop.time()
    pending: set = set()
    i = 0
    while loop.time() - start < seconds:
        while len(pending) < 256:
            pending.add(asyncio.ensure_future(one(i)))
            i += 1
        _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    srv.crash()
    await asyncio.gather(*pending, return_exceptions=True)
    return acked


def broker_of(srv) -> Broker:
    port = None
    for line in srv.log:
        m = _MQTT_LISTEN_RE.search(line)
        if m:
            port = int(m.group(2))
    assert port, srv.log_text()
    return Broker(kind="junction", port=port, nats_port=srv.port, http_port=srv.http_port, process=srv)


@async_test(timeout=60)
async def test_mqtt_publishes_are_stored_and_survive_a_crash(server_factory, tmp_path):
    args = js_args(tmp_path, mqtt=True)
    srv = server_factory(args=args)
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="SENSORS", subjects=["sensors.>"])
        # A NATS subscriber on the stream's subjects sees the device's messages as usual.
        live = await nc.subscribe("sensors.>")
        await nc.flush()
        dev = Mqtt(broker_of(srv), client_id="dev-1", version=V5).connect()
        for i in range(20):
            # wait=True: returns once the PUBACK arrived.
            dev.publish("sensors/t1", f"{i}".encode(), qos=1)
        dev.publish("sensors/t2", b"qos0", qos=0)
        first = await live.next_msg(timeout=2)
        assert (first.subject, first.data) == ("sensors.t1", b"0")
        # The QoS 0 message has no acknowledgement to wait for: it arrives when it arrives.
        async def all_stored():
            st = (await js.stream_info("SENSORS")).state
            return st if st.messages == 21 else None

        st = await wait_until(all_stored, what="21 messages stored")
        assert st.last_seq == 21
        dev.client.disconnect()
        dev.client.loop_stop()
    # Every PUBACK the device got promised a commit: the kill loses none of them.
    srv.crash()
    srv2 = server_factory(args=args)
    async with Clients(srv2) as c:
        nc = await c.connect()
        js = nc.jetstream()
        sub = await js.pull_subscribe("sensors.t1", durable="reader")
        msgs = await sub.fetch(20, timeout=3)
        assert [m.data for m in msgs] == [f"{i}".encode() for i in range(20)]
        # An MQTT subscriber gets what a NATS client publishes into the stream.
        watcher = Mqtt(broker_of(srv2), client_id="watcher", version=V5).connect()
        watcher.subscribe("sensors/#", qos=1)
        ack = await js.publish("sensors.t3", b"from-nats")
        assert ack.seq == 22
        got = watcher.expect(timeout=3)
        assert (got.topic, got.payload) == ("sensors/t3", b"from-nats")
        watcher.client.disconnect()
        watcher.client.loop_stop()


@async_test(timeout=90)
async def test_sigkill_mid_publish_loses_nothing_acknowledged(server_factory, tmp_path):
    args = js_args(tmp_path)
    rng = random.Random(11)
    for round_ in range(3):
        srv = server_factory(args=args)
        async with Clients(srv) as c:
            nc = await c.connect()
            js = nc.jetstream(timeout=5)
            if round_ == 0:
                await js.add_stream(name="CRASH", subjects=["crash.>"])
            acked = await publish_until_killed(srv, js, "crash", f"r{round_}", rng.uniform(0.2, 0.6))
        assert len(acked) > 100, f"round {round_}: only {len(acked)} publications acknowledged"
        check = server_factory(args=args)
        async with Clients(check) as c:
            nc = await c.connect()
            js = nc.jetstream()
            for seq, payload in sorted(acked.items()):
                m = await js.get_msg("CRASH", seq)
                assert m.data == payload, f"round {round_}: seq {seq} holds {m.data!r}, acked {payload!r}"
        check.terminate()


@async_test(timeout=60)
async def test_sigkill_mid_consume_keeps_positions_and_max_deliver(server_factory, tmp_path):
    args = js_args(tmp_path)
    srv = server_factory(args=args)
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="JOBS", subjects=["jobs"])
        for i in range(1, 21):
            await js.publish("jobs", f"{i}".encode())
        sub = await js.pull_subscribe(
            "jobs", durable="worker",
            config=api.ConsumerConfig(ack_wait=1.0, max_deliver=2))
        msgs = await sub.fetch(10, timeout=3)
        assert [m.metadata.sequence.stream for m in msgs] == list(range(1, 11))
        for m in msgs[:5]:
            await m.ack_sync()
        # 6..10 delivered once and never acknowledged.
    srv.crash()

    srv2 = server_factory(args=args)
    async with Clients(srv2) as c:
        nc = await c.connect()
        js = nc.jetstream()
        ci = await js.consumer_info("JOBS", "worker")
        assert ci.ack_floor.stream_seq == 5
        assert ci.delivered.stream_seq == 10
        sub = await js.pull_subscribe("jobs", durable="worker")
        # The unacknowledged ones come back first, as second deliveries.
        again = await sub.fetch(5, timeout=3)
        assert [(m.metadata.sequence.stream, m.metadata.num_delivered) for m in again] == \
            [(s, 2) for s in range(6, 11)]
        # Not acknowledged again: max_deliver 2 means they never come a third time.
        await asyncio.sleep(1.5)
        rest = await sub.fetch(10, timeout=3)
        assert [(m.metadata.sequence.stream, m.metadata.num_delivered) for m in rest] == \
            [(s, 1) for s in range(11, 21)]
        for m in rest:
            await m.ack_sync()
        await asyncio.sleep(1.5)
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=1)


ACCOUNTS_CONF = """
accounts {
  A { jetstream: enabled, users: [ { user: a, password: a } ] }
  B { jetstream: enabled, users: [ { user: b, password: b } ] }
  C { users: [ { user: c, password: c } ] }
}
jetstream { store_dir: "%s" }
"""


@async_test()
async def test_accounts_have_separate_jetstreams(server_factory, tmp_path):
    store = tmp_path / "acc-js"
    srv = server_factory(config=ACCOUNTS_CONF % store)
    url = f"nats://127.0.0.1:{srv.port}"
    a = await nats.connect(url, user="a", password="a")
    b = await nats.connect(url, user="b", password="b")
    cc = await nats.connect(url, user="c", password="c")
    try:
        ja, jb = a.jetstream(), b.jetstream()
        await ja.add_stream(name="S", subjects=["s.>"])
        await ja.publish("s.1", b"for a")
        with pytest.raises(nats.js.errors.NotFoundError):
            await jb.stream_info("S")
        # The same name and subjects in B are B's own.
        await jb.add_stream(name="S", subjects=["s.>"])
        await b.publish("s.1", b"b1")
        await b.publish("s.1", b"b2")
        await b.flush()
        assert (await jb.stream_info("S")).state.messages == 2
        assert (await ja.stream_info("S")).state.messages == 1
        assert (await ja.account_info()).streams == 1
        # C has no JetStream: its requests find no responder.
        with pytest.raises((nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError)):
            await cc.jetstream().account_info()
    finally:
        for n in (a, b, cc):
            await n.close()


PERMS_CONF = """
authorization {
  users: [
    { user: admin, password: admin }
    { user: app, password: app, permissions: {
        publish: { allow: [">"], deny: ["$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>"] } } }
  ]
}
jetstream { store_dir: "%s" }
"""


@async_test()
async def test_permissions_hold_on_the_jetstream_api(server_factory, tmp_path):
    srv = server_factory(config=PERMS_CONF % (tmp_path / "perm-js"))
    url = f"nats://127.0.0.1:{srv.port}"
    app = await nats.connect(url, user="app", password="app")
    admin = await nats.connect(url, user="admin", password="admin")
    try:
        js = app.jetstream(timeout=1)
        await js.add_stream(name="P", subjects=["p"])
        await js.publish("p", b"x")
        # The denied requests never reach JetStream: the client times out, the stream stays.
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.APIError)):
            await js.delete_stream("P")
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.APIError)):
            await js.purge_stream("P")
        st = await wait_until(lambda: admin.jetstream().stream_info("P"), what="stream info")
        assert st.state.messages == 1
        assert await admin.jetstream().delete_stream("P") is True
    finally:
        await app.close()
        await admin.close()


@async_test()
async def test_mirrors_and_sources_copy_local_streams(server_factory, tmp_path):
    args = js_args(tmp_path)
    srv = server_factory(args=args)
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="ORDERS", subjects=["orders.*"])
        await js.add_stream(name="RETURNS", subjects=["returns.*"])
        for i in range(1, 6):
            await js.publish(f"orders.{'eu' if i % 2 else 'us'}", f"o{i}".encode())
        await js.add_stream(name="BACKUP", mirror=api.StreamSource(name="ORDERS"))
        await js.add_stream(name="EU", sources=[
            api.StreamSource(name="ORDERS", filter_subject="orders.eu"),
            api.StreamSource(name="RETURNS")])
        await js.publish("orders.eu", b"o6")
        await js.publish("returns.eu", b"r1")

        async def messages(name, n):
            st = (await js.stream_info(name)).state
            return st if st.messages == n else None

        st = await wait_until(lambda: messages("BACKUP", 6), what="mirror caught up")
        # A mirror keeps the source's sequence numbers.
        assert (st.first_seq, st.last_seq) == (1, 6)
        assert (await js.get_msg("BACKUP", 6)).data == b"o6"
        await wait_until(lambda: messages("EU", 5), what="sources copied")
        sub = await js.pull_subscribe("", durable="all", stream="EU")
        got = sorted(m.data for m in await sub.fetch(5, timeout=3))
        assert got == [b"o1", b"o3", b"o5", b"o6", b"r1"]
        info = await js.stream_info("BACKUP")
        assert (info.mirror.name, info.mirror.lag) == ("ORDERS", 0)
        eu = await js.stream_info("EU")
        assert sorted((s.name, s.lag) for s in eu.sources) == [("ORDERS", 0), ("RETURNS", 0)]
    srv.terminate()

    # After a restart the sources go on from where they were: nothing is copied twice.
    srv = server_factory(args=args)
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.publish("orders.eu", b"o7")
        await wait_until(lambda: messages("EU", 6), what="the new message copied")
        await asyncio.sleep(0.5)
        assert (await js.stream_info("EU")).state.messages == 6
        assert (await js.stream_info("BACKUP")).state.messages == 7


@async_test(timeout=60)
async def test_large_backlogs_reach_push_and_pull_consumers(server_factory, tmp_path):
    """A backlog of several rounds' worth (4,096 messages a round per consumer) all arrives."""
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="BIG", subjects=["big"], storage="memory")
        n = 20_000
        futs = [await js.publish_async("big", b"x") for _ in range(n)]
        await asyncio.gather(*futs)
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await js.add_consumer("BIG", deliver_subject=inbox, ack_policy="none", durable_name="p")
        for i in range(n):
            m = await sub.next_msg(timeout=5)
            assert m.metadata.sequence.stream == i + 1
        # (Without acknowledgements a consumer stops at max_ack_pending: none is asked here.)
        pull = await js.pull_subscribe("big", durable="q", config=api.ConsumerConfig(ack_policy="none"))
        got = 0
        while got < n:
            got += len(await pull.fetch(5000, timeout=5))
        assert got == n


@async_test()
async def test_push_flow_control_stalls_until_answered(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="FC", subjects=["fc"], storage="memory")
        payload = b"x" * 10_000
        for _ in range(300):  # 3 MB
            await js.publish("fc", payload)
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await js.add_consumer("FC", deliver_subject=inbox, ack_policy="none", durable_name="f",
                              flow_control=True, idle_heartbeat=1.0)
        # Deliveries up to about 1 MB, then a flow control request, then nothing until it is
        # answered (a heartbeat may come, naming the request as the stall).
        data, fc = 0, None
        while fc is None:
            m = await sub.next_msg(timeout=3)
            if m.headers and m.headers.get("Status") == "100" and m.reply:
                fc = m.reply
            else:
                data += 1
        assert 90 <= data < 300, data
        stalled = []
        loop = asyncio.get_running_loop()
        until = loop.time() + 2.5
        with contextlib.suppress(nats.errors.TimeoutError):
            while loop.time() < until:
                stalled.append(await sub.next_msg(timeout=max(0.01, until - loop.time())))
        assert stalled, "no heartbeat while stalled"
        assert all(m.headers and m.headers.get("Status") == "100" for m in stalled), stalled
        beats = [m for m in stalled if m.headers.get("Nats-Consumer-Stalled")]
        assert all(m.headers["Nats-Consumer-Stalled"] == fc for m in beats)
        # Answering releases the rest.
        await nc.publish(fc, b"")
        while data < 300:
            m = await sub.next_msg(timeout=3)
            if m.headers and m.headers.get("Status") == "100":
                if m.reply:
                    await nc.publish(m.reply, b"")
                continue
            data += 1


@async_test(timeout=90)
async def test_sync_interval_acknowledges_before_the_sync_and_a_sigkill_loses_nothing(server_factory, tmp_path):
    # nats-server's trade-off, asked for in its own terms: a PubAck (and an MQTT PUBACK) goes out
    # once the write is in the operating system's hands, and the log is synced every
    # sync_interval. A crash of the process still loses nothing acknowledged; a crash of the
    # machine could lose what the interval had not synced yet, as with nats-server.
    store = tmp_path / "js"
    relaxed = f'jetstream {{ store_dir: "{store}", sync_interval: "2m" }}\n'
    strict = f'jetstream {{ store_dir: "{store}", sync_interval: always }}\n'
    srv = server_factory(config=relaxed)
    config = (await varz(srv))["jetstream"]["config"]
    assert config.get("sync_interval") == 120 * 10**9 and not config.get("sync_always"), config
    # What the store itself was opened with, not only what the settings say.
    assert any("acknowledged once written, synced every 120s (sync_interval)" in line for line in srv.log), srv.log_text()

    async def holds(js, acked: dict[int, bytes], what: str) -> None:
        for seq, payload in sorted(acked.items()):
            m = await js.get_msg("RELAXED", seq)
            assert m.data == payload, f"{what}: seq {seq} holds {m.data!r}, acked {payload!r}"

    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream(timeout=5)
        await js.add_stream(name="RELAXED", subjects=["relaxed.>", "sensors.>"])
        dev = Mqtt(broker_of(srv), client_id="dev-relaxed", version=V5).connect()
        for i in range(10):
            dev.publish("sensors/t", f"m{i}".encode(), qos=1)  # returns once PUBACKed
        dev.client.disconnect()
        dev.client.loop_stop()
        first = await publish_until_killed(srv, js, "relaxed", "first", 0.4)
    assert len(first) > 100, f"only {len(first)} publications acknowledged"
    # The log of a relaxed run is replayed whole after the kill (checked before anything new
    # could take the sequences of lost messages); that run goes on relaxed and is killed again,
    # and the next start, back to syncing every write, replays it too.
    srv2 = server_factory(config=relaxed)
    async with Clients(srv2) as c:
        js = (await c.connect()).jetstream(timeout=5)
        await holds(js, first, "after the first kill")
        second = await publish_until_killed(srv2, js, "relaxed", "second", 0.3)
    assert second and min(second) > max(first), (min(second), max(first))
    srv3 = server_factory(config=strict)
    config = (await varz(srv3))["jetstream"]["config"]
    assert config.get("sync_always") is True and "sync_interval" not in config, config
    assert not any("synced every" in line for line in srv3.log), srv3.log_text()
    async with Clients(srv3) as c:
        js = (await c.connect()).jetstream()
        sub = await js.pull_subscribe("sensors.t", durable="devices")
        assert [m.data for m in await sub.fetch(10, timeout=3)] == [f"m{i}".encode() for i in range(10)]
        await holds(js, first, "after the second kill")
        await holds(js, second, "after the second kill")
