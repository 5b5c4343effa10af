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

from conftest import IS_NATS_SERVER, Clients, async_test

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
