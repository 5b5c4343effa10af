"""Stream settings nats-server 2.10 added: ``first_seq``, ``compression`` and
``consumer_limits``, with nats-server 2.10's defaults, errors and codes.

Junction only: the reference server here is nats-server 2.9.10, which has none of these (it
ignores the fields).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.js import api
from nats.js.errors import APIError

from conftest import IS_NATS_SERVER, Clients, async_test, wait_until

pytestmark = pytest.mark.skipif(IS_NATS_SERVER, reason="nats-server 2.10 settings; the reference is 2.9.10")

SECOND = 1_000_000_000


def js_args(tmp_path) -> list:
    store = tmp_path / "js"
    store.mkdir(exist_ok=True)
    return ["-js", "-sd", str(store)]


async def api_request(nc, subject: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else b""
    return json.loads((await nc.request(subject, data, timeout=3)).data)


def error_of(resp: dict) -> tuple:
    e = resp.get("error")
    assert e, resp
    return (e["code"], e["err_code"], e["description"])


@async_test(timeout=60)
async def test_first_seq_starts_a_stream_there_and_survives_a_restart(server_factory, tmp_path):
    args = js_args(tmp_path)
    srv = server_factory(args=args)
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        info = await js.add_stream(name="FS", subjects=["fs.>"], first_seq=100)
        assert info.config.first_seq == 100
        assert (info.state.first_seq, info.state.last_seq, info.state.messages) == (100, 99, 0)
        ack = await js.publish("fs.a", b"one")
        assert ack.seq == 100
        sub = await js.pull_subscribe("fs.>", "reader", stream="FS")
        [m] = await sub.fetch(1, timeout=3)
        assert (m.data, m.metadata.sequence.stream) == (b"one", 100)
        await m.ack_sync()
        # Empty at the restart: the starting point is kept all the same.
        await js.add_stream(name="EMPTY", subjects=["empty"], first_seq=50)
        mem = await js.add_stream(name="MEM", subjects=["mem"], first_seq=7, storage=api.StorageType.MEMORY)
        assert mem.state.last_seq == 6
        assert (await js.publish("mem", b"m")).seq == 7
        # A mirror copies its origin's sequences: it cannot start elsewhere.
        body = await api_request(nc, "$JS.API.STREAM.CREATE.M", {"name": "M", "mirror": {"name": "FS"}, "first_seq": 5})
        assert error_of(body) == (400, 10143, "stream mirrors can not have first sequence configured")
        # Past i64's range (what clients' sequence numbers hold) is refused.
        body = await api_request(nc, "$JS.API.STREAM.CREATE.HUGE", {"name": "HUGE", "subjects": ["huge"], "first_seq": 2**63})
        assert error_of(body)[:2] == (500, 10052), body
        # A stream that exists with the same settings is not a clash.
        again = await js.add_stream(name="FS", subjects=["fs.>"], first_seq=100)
        assert again.state.last_seq == 100
    srv.terminate()

    srv = server_factory(args=args)
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        assert (await js.publish("fs.b", b"two")).seq == 101
        assert (await js.publish("empty", b"first")).seq == 50
        info = await js.stream_info("EMPTY")
        assert (info.state.first_seq, info.state.last_seq, info.config.first_seq) == (50, 50, 50)
        assert (await js.get_msg("FS", 100)).data == b"one"


@async_test(timeout=60)
async def test_compression_is_kept_and_checked(server_factory, tmp_path):
    args = js_args(tmp_path)
    srv = server_factory(args=args)
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        info = await js.add_stream(name="Z", subjects=["z"], compression=api.StoreCompression.S2)
        assert info.config.compression == api.StoreCompression.S2
        payload = bytes(range(256)) * 64
        seq = (await js.publish("z", payload)).seq
        assert (await js.get_msg("Z", seq)).data == payload
        # nats-server 2.10 writes both settings even when the stream left them out.
        body = await api_request(nc, "$JS.API.STREAM.CREATE.PLAIN", {"name": "PLAIN", "subjects": ["plain"]})
        assert body["config"]["compression"] == "none"
        assert body["config"]["consumer_limits"] == {}
        for bad in ("zstd", "", None, 1):
            body = await api_request(nc, "$JS.API.STREAM.CREATE.BAD", {"name": "BAD", "subjects": ["bad"], "compression": bad})
            assert error_of(body) == (400, 10025, "invalid JSON"), bad
    srv.terminate()

    srv = server_factory(args=args)
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        info = await js.stream_info("Z")
        assert info.config.compression == api.StoreCompression.S2
        assert (await js.get_msg("Z", seq)).data == payload
        # The setting may change on an update.
        info.config.compression = api.StoreCompression.NONE
        info = await js.update_stream(info.config)
        assert info.config.compression == api.StoreCompression.NONE


@async_test(timeout=60)
async def test_consumer_limits_default_and_bound_the_consumers(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        limits = {"max_ack_pending": 10, "inactive_threshold": 2 * SECOND}
        body = await api_request(nc, "$JS.API.STREAM.CREATE.L", {"name": "L", "subjects": ["l.>"], "consumer_limits": limits})
        assert body["config"]["consumer_limits"] == limits

        # A consumer that sets neither gets both: a durable too is removed once idle that long.
        d = await js.add_consumer("L", durable_name="D", ack_policy=api.AckPolicy.EXPLICIT)
        assert (d.config.max_ack_pending, d.config.inactive_threshold) == (10, 2.0)
        kept = await js.add_consumer("L", durable_name="KEPT", ack_policy=api.AckPolicy.EXPLICIT,
                                     max_ack_pending=5, inactive_threshold=1.5)
        assert (kept.config.max_ack_pending, kept.config.inactive_threshold) == (5, 1.5)

        # More than the stream allows is refused, with nats-server's codes and words.
        with pytest.raises(APIError) as e:
            await js.add_consumer("L", durable_name="MANY", ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=11)
        assert (e.value.code, e.value.err_code) == (400, 10121)
        assert e.value.description == "consumer max ack pending exceeds system limit of 10"
        with pytest.raises(APIError) as e:
            await js.add_consumer("L", durable_name="LONG", ack_policy=api.AckPolicy.EXPLICIT, inactive_threshold=3.0)
        assert (e.value.code, e.value.err_code) == (400, 10153)
        assert e.value.description == "consumer inactive threshold exceeds system limit of 2s"

        # Limits below what a consumer has are refused, naming it; lifting them is not.
        lower = {"name": "L", "subjects": ["l.>"], "consumer_limits": {"max_ack_pending": 7, "inactive_threshold": 2 * SECOND}}
        body = await api_request(nc, "$JS.API.STREAM.UPDATE.L", lower)
        assert error_of(body) == (500, 10069, "change to limits violates consumers: D")
        body = await api_request(nc, "$JS.API.STREAM.UPDATE.L", {"name": "L", "subjects": ["l.>"]})
        assert body["config"]["consumer_limits"] == {}, body

        # Nobody pulls: both consumers go once their inactive thresholds pass.
        for _ in range(100):
            names = await api_request(nc, "$JS.API.CONSUMER.NAMES.L")
            if not names["consumers"]:
                break
            await asyncio.sleep(0.1)
        assert names["consumers"] == [], names


@async_test(timeout=120)
async def test_sourced_copies_name_their_origin_and_survive_sigkill_once(server_factory, tmp_path):
    """nats-server 2.10's sources: every copy carries ``Nats-Stream-Source: <origin> <seq>
    <filter> <destination>``, and loses the origin's ``Nats-Expected-*`` headers (they were
    checks of the origin's; 2.9.10 dropped such messages from the copy). The header also tells
    the copying stream after a crash how far it had got: SIGKILLs while it copies leave every
    origin message in the copy exactly once."""
    args = js_args(tmp_path)
    srv = server_factory(args=args)
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="ORIGIN", subjects=["o.>"])
        await js.add_stream(name="ALL", subjects=["mine"], sources=[api.StreamSource(name="ORIGIN")])
        await js.add_stream(name="EU", sources=[api.StreamSource(name="ORIGIN", filter_subject="o.eu")])
        await js.publish("o.eu", b"checked", stream="ORIGIN",
                         headers={"Nats-Expected-Last-Sequence": "0", "Nats-Msg-Id": "m1"})
        await js.publish("o.us", b"plain")
        await js.publish("mine", b"own")

        async def count(name, n):
            return (await js.stream_info(name)).state.messages >= n or None

        await wait_until(lambda: count("ALL", 3), what="copied")
        await wait_until(lambda: count("EU", 1), what="copied")
        first = await js.get_msg("ALL", 1)
        assert first.data == b"checked"
        assert first.headers["Nats-Stream-Source"] == "ORIGIN 1 > >"
        assert first.headers["Nats-Msg-Id"] == "m1"
        assert not any(k.startswith("Nats-Expected-") for k in first.headers), first.headers
        eu = await js.get_msg("EU", 1)
        assert (eu.data, eu.headers["Nats-Stream-Source"]) == (b"checked", "ORIGIN 1 o.eu >")
        # A message of the stream's own subjects carries none.
        own = [await js.get_msg("ALL", s) for s in (1, 2, 3)]
        assert [m.data for m in own if not (m.headers or {}).get("Nats-Stream-Source")] == [b"own"]
    srv.terminate()

    # SIGKILL the server while ALL copies, at a few moments.
    sent = 2  # what ORIGIN holds
    for delay in (0, 0.001, 0.002, 0.004, 0.008):
        srv = server_factory(args=args)
        async with Clients(srv) as c:
            nc = await c.connect()
            js = nc.jetstream()
            for _ in range(2000):
                await js.publish_async("o.us", b"x")
                sent += 1
            await js.publish_async_completed()
            await asyncio.sleep(delay)
            srv.crash()
    srv = server_factory(args=args)
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        origin = (await js.stream_info("ORIGIN")).state
        # Every acknowledged publication survived; ALL has each exactly once, and its own.
        assert origin.messages == sent
        await wait_until(lambda: count("ALL", sent + 1), what="everything copied")
        await asyncio.sleep(0.5)
        info = (await js.stream_info("ALL")).state
        seen = []
        for seq in range(1, info.last_seq + 1):
            m = await js.get_msg("ALL", seq)
            source = (m.headers or {}).get("Nats-Stream-Source")
            if source:
                seen.append(int(source.split(" ")[1]))
        assert sorted(seen) == list(range(1, sent + 1)), f"{len(seen)} copies of {sent}"
        assert info.messages == sent + 1


@async_test(timeout=60)
async def test_one_stream_sourced_twice_with_different_filters(server_factory, tmp_path):
    """nats-server 2.10 lets a stream take one stream twice with different filters: each keeps
    its own position (also across a restart), and the header names the filter."""
    args = js_args(tmp_path)
    srv = server_factory(args=args)
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="ORIG", subjects=["or.>"])
        await js.add_stream(name="TWICE", sources=[
            api.StreamSource(name="ORIG", filter_subject="or.a"),
            api.StreamSource(name="ORIG", filter_subject="or.b")])
        for subject in ("or.a", "or.b", "or.c", "or.a"):
            await js.publish(subject, b"x")

        async def count(n):
            return (await js.stream_info("TWICE")).state.messages >= n or None

        await wait_until(lambda: count(3), what="both filters copied")
        seen = sorted([(await js.get_msg("TWICE", s)).headers["Nats-Stream-Source"] for s in (1, 2, 3)])
        assert seen == ["ORIG 1 or.a >", "ORIG 2 or.b >", "ORIG 4 or.a >"]
    srv.terminate()
    srv = server_factory(args=args)
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.publish("or.b", b"y")
        await wait_until(lambda: count(4), what="the new one copied")
        await asyncio.sleep(0.5)
        assert (await js.stream_info("TWICE")).state.messages == 4
        assert (await js.get_msg("TWICE", 4)).headers["Nats-Stream-Source"] == "ORIG 5 or.b >"


@async_test(timeout=60)
async def test_far_gaps_stay_cheap_and_bounded(server_factory, tmp_path):
    """A filtered mirror keeps the origin's sequences, gaps included: a gap of half a million
    sequences costs little, and `deleted_details` lists at most 100,000 of them (all counted).
    A purge sequence past i64's range is refused (Junction keeps sequences within it, as it
    keeps `first_seq`)."""
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="FAR", subjects=["far.>"])
        await js.add_stream(name="FARM", mirror=api.StreamSource(name="FAR", filter_subject="far.a"))
        await js.publish("far.a", b"1")

        async def mirrored(n):
            return (await js.stream_info("FARM")).state.messages == n or None

        await wait_until(lambda: mirrored(1), what="mirrored")
        resp = await api_request(nc, "$JS.API.STREAM.PURGE.FAR", {"seq": 500_000})
        assert resp["success"] is True
        assert (await js.publish("far.a", b"2")).seq == 500_000
        await wait_until(lambda: mirrored(2), what="mirrored across the gap")
        info = await api_request(nc, "$JS.API.STREAM.INFO.FARM", {"deleted_details": True})
        state = info["state"]
        assert (state["first_seq"], state["last_seq"], state["num_deleted"]) == (1, 500_000, 499_998)
        assert len(state["deleted"]) == 100_000 and state["deleted"][:2] == [2, 3]
        resp = await api_request(nc, "$JS.API.STREAM.PURGE.FAR", {"seq": 2**63})
        assert error_of(resp) == (400, 10003, "bad request")
        assert (await js.publish("far.a", b"3")).seq == 500_001


@async_test(timeout=60)
async def test_a_mirror_starting_over_moves_its_consumers(server_factory, tmp_path):
    """Junction's own bound: a whole mirror whose origin skips more than 2^20 sequences starts
    over at the new one instead of keeping the gap. Its consumers take that as a purge: they
    stop waiting for acknowledgements of what went, instead of staying stuck at
    ``max_ack_pending`` until ``ack_wait``."""
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="MO", subjects=["mo.>"])
        await js.add_stream(name="MM", mirror=api.StreamSource(name="MO"))
        for i in range(3):
            await js.publish("mo.a", f"{i}".encode())

        async def mirrored(first, n):
            st = (await js.stream_info("MM")).state
            return (st.first_seq, st.messages) == (first, n) or None

        await wait_until(lambda: mirrored(1, 3), what="mirrored")
        await js.add_consumer("MM", durable_name="w", max_ack_pending=1, ack_wait=30)
        sub = await js.pull_subscribe_bind(durable="w", stream="MM")
        [m] = await sub.fetch(1, timeout=2)
        assert m.metadata.sequence.stream == 1
        far = 2**20 + 10
        resp = await api_request(nc, "$JS.API.STREAM.PURGE.MO", {"seq": far})
        assert resp["success"] is True
        assert (await js.publish("mo.a", b"far")).seq == far
        await wait_until(lambda: mirrored(far, 1), what="the mirror started over")
        ci = await js.consumer_info("MM", "w")
        assert (ci.num_ack_pending, ci.num_pending, ci.ack_floor.stream_seq) == (0, 1, far - 1)
        [m] = await sub.fetch(1, timeout=2)
        assert (m.data, m.metadata.sequence.stream) == (b"far", far)


@async_test(timeout=60)
async def test_a_filtered_purge_moves_the_consumers_it_covers(server_factory, tmp_path):
    """nats-server 2.10: after a purge with a filter, a consumer that takes nothing but what
    the filter covers moves to the first message left there; one that takes more keeps its
    place and stops waiting for acknowledgements of what went (2.9.10 moved every consumer to
    the end of the stream)."""
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="FP", subjects=["fp.*"])
        for subject in ("fp.a", "fp.b", "fp.a", "fp.b", "fp.a"):
            await js.publish(subject, b"x")
        only_a = await js.pull_subscribe("fp.a", durable="only_a", stream="FP")
        every = await js.pull_subscribe("fp.*", durable="every", stream="FP")
        got = await every.fetch(2, timeout=2)
        assert [m.metadata.sequence.stream for m in got] == [1, 2]
        resp = await api_request(nc, "$JS.API.STREAM.PURGE.FP", {"filter": "fp.a", "keep": 1})
        assert resp["purged"] == 2
        a = await js.consumer_info("FP", "only_a")
        assert (a.delivered.stream_seq, a.ack_floor.stream_seq, a.num_pending) == (4, 4, 1)
        [m] = await only_a.fetch(1, timeout=2)
        assert m.metadata.sequence.stream == 5
        # "every" waited for 1 (gone now) and 2 (still there).
        e = await js.consumer_info("FP", "every")
        assert (e.num_ack_pending, e.delivered.stream_seq, e.num_pending) == (1, 2, 2)
        rest = await every.fetch(2, timeout=2)
        assert [m.metadata.sequence.stream for m in rest] == [4, 5]
