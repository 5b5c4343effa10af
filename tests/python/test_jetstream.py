"""JetStream end to end: streams, limits, deduplication and expected-headers, API errors,
retention policies, pull and push consumers, key-value and object stores, account info, and
durability across a SIGKILL.

Every test starts its own broker with JetStream on (``-js -sd <tmp dir>``, or a config file
``jetstream { store_dir: ... }``) and drives it with the unmodified nats-py client (2.16), or
with plain ``nc.request`` where the exact API reply matters.

The expectations (values, error codes and descriptions, status headers) were checked against
nats-server 2.9.10:

    JUNCTION_BIN=/usr/sbin/nats-server JUNCTION_EXPECT_EXIT=1 \
        .venv/bin/python -m pytest tests/python/test_jetstream.py

Comments marked "nats-server 2.9.10:" record behaviour of the reference that surprised us;
where it is a quirk rather than a contract, the test avoids depending on it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import time

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js import api
from nats.js.errors import APIError

from conftest import EXPECT_EXIT, IS_NATS_SERVER, Clients, async_test, wait_until

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def js_args(tmp_path, name: str = "js") -> list:
    """nats-server's flags to turn JetStream on with its store under ``tmp_path``."""
    store = tmp_path / name
    store.mkdir(exist_ok=True)
    return ["-js", "-sd", str(store)]


@pytest.fixture
def jsserver(server_factory, tmp_path):
    """A broker with JetStream enabled and a fresh store directory."""
    return server_factory(args=js_args(tmp_path))


@contextlib.asynccontextmanager
async def jsconn(server):
    """(nc, js) for one nats-py connection, closed at the end."""
    async with Clients(server) as c:
        nc = await c.connect()
        yield nc, nc.jetstream(timeout=5)


async def api_error(coro) -> APIError:
    """Await ``coro``, which must raise a JetStream APIError; return it."""
    with pytest.raises(APIError) as info:
        await coro
    return info.value


def check_error(err: APIError, code: int, err_code: int, description: str) -> None:
    assert (err.code, err.err_code, err.description) == (code, err_code, description), str(err)


def hdrs(msg) -> dict:
    """A message's headers with plain string keys (nats-py keys some with its Header enum)."""
    return {str(getattr(k, "value", k)): v for k, v in (msg.headers or {}).items()}


async def ci_matches(js, stream, consumer, **want):
    """consumer_info whose fields (dotted names allowed) equal ``want``, else falsy."""
    ci = await js.consumer_info(stream, consumer)
    for key, value in want.items():
        obj = ci
        for part in key.split("."):
            obj = getattr(obj, part)
        if obj != value:
            return None
    return ci


async def state(js, stream, **kw):
    return (await js.stream_info(stream, **kw)).state


@contextlib.asynccontextmanager
async def jsserver_clients(server):
    """Three JetStream contexts on three connections to ``server``."""
    async with Clients(server) as c:
        a = await c.connect()
        b = await c.connect()
        m = await c.connect()
        yield a.jetstream(timeout=5), b.jetstream(timeout=5), m.jetstream(timeout=5)


# ==========================================================================
# 1. Streams
# ==========================================================================


@async_test()
async def test_stream_create_publish_and_info(jsserver):
    async with jsconn(jsserver) as (nc, js):
        si = await js.add_stream(name="ORDERS", subjects=["orders.*", "ship.>"])
        assert si.config.name == "ORDERS"
        assert si.config.subjects == ["orders.*", "ship.>"]
        # The defaults nats-server fills in.
        cfg = si.config
        assert (cfg.retention, cfg.storage, cfg.discard) == ("limits", "file", "old")
        assert (cfg.max_msgs, cfg.max_bytes, cfg.max_msg_size, cfg.max_msgs_per_subject, cfg.max_consumers) == (
            -1, -1, -1, -1, -1)
        assert cfg.max_age == 0 and cfg.duplicate_window == 120.0 and cfg.num_replicas == 1
        assert si.did_create is True
        assert (si.state.messages, si.state.bytes, si.state.first_seq, si.state.last_seq) == (0, 0, 0, 0)

        acks = [
            await js.publish("orders.new", b"one"),
            await js.publish("ship.eu.fr", b"two"),
            await js.publish("orders.new", b"three"),
        ]
        assert [(a.stream, a.seq) for a in acks] == [("ORDERS", 1), ("ORDERS", 2), ("ORDERS", 3)]
        # nats-server leaves "duplicate" out unless it is true (nats-py: None).
        assert not any(a.duplicate for a in acks)

        st = await state(js, "ORDERS")
        assert (st.messages, st.first_seq, st.last_seq, st.consumer_count) == (3, 1, 3, 0)
        assert st.bytes > 0
        # Without a subjects_filter nats-server sends no per-subject counts.
        assert not st.subjects

        st = await state(js, "ORDERS", subjects_filter=">")
        assert st.subjects == {"orders.new": 2, "ship.eu.fr": 1}
        st = await state(js, "ORDERS", subjects_filter="ship.>")
        assert st.subjects == {"ship.eu.fr": 1}

        # A subject outside the stream gets no answer at all: nats-py reports "no responders".
        with pytest.raises(nats.js.errors.NoStreamResponseError):
            await js.publish("elsewhere", b"x")

        # Creating the same stream again with the identical config is accepted (idempotent).
        again = await js.add_stream(name="ORDERS", subjects=["orders.*", "ship.>"])
        assert again.state.messages == 3 and again.state.last_seq == 3


@async_test()
async def test_stream_subjects_default_to_its_name(jsserver):
    async with jsconn(jsserver) as (nc, js):
        # Raw request with no "subjects": the stream listens on its own name.
        reply = await nc.request("$JS.API.STREAM.CREATE.PLAIN", b'{"name":"PLAIN"}', timeout=5)
        body = json.loads(reply.data)
        assert body["type"] == "io.nats.jetstream.api.v1.stream_create_response"
        assert body["config"]["subjects"] == ["PLAIN"]
        assert body["did_create"] is True
        ack = await js.publish("PLAIN", b"x")
        assert (ack.stream, ack.seq) == ("PLAIN", 1)


@async_test()
async def test_stream_update_and_delete(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="UPD", subjects=["upd"])
        for i in range(10):
            await js.publish("upd", str(i).encode())
        si = await js.update_stream(name="UPD", subjects=["upd", "upd2"], max_msgs=4)
        assert si.config.max_msgs == 4 and si.config.subjects == ["upd", "upd2"]
        # Lowering the limit applies at once: the oldest go.
        assert (si.state.messages, si.state.first_seq, si.state.last_seq) == (4, 7, 10)
        assert (await js.publish("upd2", b"new")).seq == 11
        st = await state(js, "UPD")
        assert (st.messages, st.first_seq, st.last_seq) == (4, 8, 11)

        err = await api_error(js.update_stream(name="UPD", subjects=["upd"], storage="memory"))
        check_error(err, 500, 10052, "stream configuration update can not change storage type")
        err = await api_error(js.update_stream(name="GHOST", subjects=["ghost"]))
        assert isinstance(err, nats.js.errors.NotFoundError)
        check_error(err, 404, 10059, "stream not found")

        assert await js.delete_stream("UPD") is True
        err = await api_error(js.stream_info("UPD"))
        check_error(err, 404, 10059, "stream not found")
        err = await api_error(js.delete_stream("UPD"))
        check_error(err, 404, 10059, "stream not found")
        # Its subjects are free again.
        with pytest.raises(nats.js.errors.NoStreamResponseError):
            await js.publish("upd", b"x")


@async_test()
async def test_stream_listing(jsserver):
    async with jsconn(jsserver) as (nc, js):
        assert await js.streams_info() == []
        await js.add_stream(name="B", subjects=["b.>"])
        await js.add_stream(name="A", subjects=["a.>"])
        await js.add_stream(name="C", subjects=["c.*"], storage="memory")
        await js.publish("a.x", b"1")
        infos = await js.streams_info()
        # Sorted by name.
        assert [s.config.name for s in infos] == ["A", "B", "C"]
        assert [s.state.messages for s in infos] == [1, 0, 0]
        assert infos[2].config.storage == "memory"

        reply = await nc.request("$JS.API.STREAM.NAMES", b"", timeout=5)
        body = json.loads(reply.data)
        assert body["type"] == "io.nats.jetstream.api.v1.stream_names_response"
        assert (body["total"], body["offset"], body["streams"]) == (3, 0, ["A", "B", "C"])
        # With a subject: only the streams that would store it.
        reply = await nc.request("$JS.API.STREAM.NAMES", b'{"subject":"c.q"}', timeout=5)
        assert json.loads(reply.data)["streams"] == ["C"]
        assert await js.find_stream_name_by_subject("b.deep.er") == "B"


@async_test()
async def test_purge_whole_by_subject_and_keep(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="P", subjects=["p.*"])
        for i in range(1, 11):
            await js.publish("p.odd" if i % 2 else "p.even", str(i).encode())

        assert await js.purge_stream("P", subject="p.odd") is True
        st = await state(js, "P", subjects_filter=">")
        assert (st.messages, st.first_seq, st.last_seq) == (5, 2, 10)
        assert st.subjects == {"p.even": 5}
        assert st.num_deleted == 4  # 3, 5, 7 and 9 are gaps now (1 went with the head)

        assert await js.purge_stream("P") is True
        st = await state(js, "P")
        # An empty stream after a purge: first_seq is last_seq + 1.
        assert (st.messages, st.bytes, st.first_seq, st.last_seq) == (0, 0, 11, 10)
        assert (await js.publish("p.x", b"after")).seq == 11  # sequences go on

        # keep: only the newest N stay. (nats-server 2.9.10 counts "keep" back from last_seq,
        # gaps included: with interior deletes it keeps fewer than N, so this stream has none.)
        for i in range(12, 21):
            await js.publish("p.x", str(i).encode())
        assert await js.purge_stream("P", keep=3) is True
        st = await state(js, "P")
        assert (st.messages, st.first_seq, st.last_seq) == (3, 18, 20)
        # keep with a subject: the newest N of that subject.
        for i in range(21, 25):
            await js.publish("p.y", str(i).encode())
        reply = await nc.request("$JS.API.STREAM.PURGE.P", b'{"filter":"p.y","keep":1}', timeout=5)
        body = json.loads(reply.data)
        assert body == {"type": "io.nats.jetstream.api.v1.stream_purge_response", "success": True, "purged": 3}
        st = await state(js, "P", subjects_filter=">")
        assert st.subjects == {"p.x": 3, "p.y": 1}
        assert (await js.get_last_msg("P", "p.y")).seq == 24
        # keep without a subject, with gaps among the newest sequences (21 to 23): nats-server
        # 2.10's file store keeps the newest 3 messages; 2.9.10's counted back 3 sequences
        # from the last, gaps included, and kept one (reporting the gap at 22 as the first).
        assert await js.purge_stream("P", keep=3) is True
        st = await state(js, "P")
        if IS_NATS_SERVER:
            assert (st.messages, st.first_seq, st.last_seq) == (1, 22, 24)
        else:
            assert (st.messages, st.first_seq, st.last_seq) == (3, 19, 24)
        # A sequence past the end: the stream starts over there, and the next message gets it.
        reply = await nc.request("$JS.API.STREAM.PURGE.P", b'{"seq":100}', timeout=5)
        assert json.loads(reply.data)["purged"] == st.messages
        st = await state(js, "P")
        assert (st.messages, st.first_seq, st.last_seq) == (0, 100, 99)
        assert (await js.publish("p.x", b"later")).seq == 100
        # A memory stream compacts for keep too: the last 2 sequences, 4 being a gap.
        # (nats-server 2.9.10's memory store fails this compaction, 500 10051, as its point is
        # a gap; 2.10's goes on to the next message.)
        if IS_NATS_SERVER:
            return
        await js.add_stream(name="PM", subjects=["pm"], storage="memory")
        for _ in range(5):
            await js.publish("pm", b"m")
        # (no_erase: nats-server 2.9.10's memory store fails an erasing delete.)
        reply = await nc.request("$JS.API.STREAM.MSG.DELETE.PM", b'{"seq":4,"no_erase":true}', timeout=5)
        assert json.loads(reply.data)["success"] is True
        assert await js.purge_stream("PM", keep=2) is True
        st = await state(js, "PM")
        assert (st.messages, st.first_seq, st.last_seq) == (1, 5, 5)


@async_test()
async def test_consumers_move_past_a_purge_and_start_within_the_stream(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="CP", subjects=["cp.*"])
        for i in range(1, 5):
            await js.publish("cp.a", f"a{i}".encode())
        sub = await js.pull_subscribe("cp.a", durable="w", stream="CP",
                                      config=api.ConsumerConfig(max_ack_pending=2, ack_wait=30))
        msgs = await sub.fetch(2, timeout=2)
        assert [m.metadata.sequence.stream for m in msgs] == [1, 2]
        # Purged while waiting for acknowledgements: they wait no more, and the consumer goes
        # on with what comes next (it would be stuck at max_ack_pending otherwise).
        assert await js.purge_stream("CP") is True
        ci = await js.consumer_info("CP", "w")
        assert (ci.num_ack_pending, ci.num_pending) == (0, 0)
        assert (ci.ack_floor.stream_seq, ci.delivered.stream_seq) == (4, 4)
        assert (ci.ack_floor.consumer_seq, ci.delivered.consumer_seq) == (2, 2)
        await js.publish("cp.a", b"a5")
        [m] = await sub.fetch(1, timeout=2)
        assert (m.data, m.metadata.sequence.stream, m.metadata.sequence.consumer) == (b"a5", 5, 3)
        # Nothing acknowledged yet: the floor says 0, wherever the consumer starts.
        fresh = await js.add_consumer("CP", durable_name="fresh", deliver_policy=api.DeliverPolicy.NEW)
        assert (fresh.delivered.stream_seq, fresh.ack_floor.stream_seq) == (5, 0)
        # A start sequence past the end starts after the last message, not further on.
        late = await js.pull_subscribe("cp.*", durable="late", stream="CP",
                                       config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                                                 opt_start_seq=50))
        ci = await js.consumer_info("CP", "late")
        assert (ci.delivered.stream_seq, ci.num_pending) == (5, 0)
        await js.publish("cp.b", b"b6")
        [m] = await late.fetch(1, timeout=2)
        assert (m.data, m.metadata.sequence.stream) == (b"b6", 6)


@async_test()
async def test_a_rollup_moves_the_consumers_as_a_purge_does(jsserver):
    """A rollup is a purge that keeps the new message (nats-server purges with ``keep: 1``):
    the consumers that took what it removed stop waiting for their acknowledgements at once,
    instead of staying stuck at ``max_ack_pending`` until ``ack_wait`` runs out."""
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="RU", subjects=["ru.*"], allow_rollup_hdrs=True)
        for subject in ("ru.a", "ru.b", "ru.a", "ru.b"):
            await js.publish(subject, subject.encode())
        held = api.ConsumerConfig(max_ack_pending=1, ack_wait=30)
        only_a = await js.pull_subscribe("ru.a", durable="only_a", stream="RU", config=held)
        only_b = await js.pull_subscribe("ru.b", durable="only_b", stream="RU", config=held)
        [a1] = await only_a.fetch(1, timeout=2)
        [b1] = await only_b.fetch(1, timeout=2)
        assert (a1.metadata.sequence.stream, b1.metadata.sequence.stream) == (1, 2)

        # One subject rolled up: only the consumer of that subject is told.
        ack = await js.publish("ru.a", b"a-all", headers={"Nats-Rollup": "sub"})
        assert ack.seq == 5
        a = await js.consumer_info("RU", "only_a")
        assert (a.num_ack_pending, a.num_pending, a.ack_floor.stream_seq) == (0, 1, 4)
        [m] = await only_a.fetch(1, timeout=2)
        assert (m.data, m.metadata.sequence.stream) == (b"a-all", 5)
        b = await js.consumer_info("RU", "only_b")
        assert (b.num_ack_pending, b.num_pending, b.ack_floor.stream_seq) == (1, 1, 0)

        # The whole stream rolled up: every consumer is told.
        await js.add_consumer("RU", durable_name="every", max_ack_pending=1, ack_wait=30)
        every = await js.pull_subscribe_bind(durable="every", stream="RU")
        [m] = await every.fetch(1, timeout=2)
        assert m.metadata.sequence.stream == 2
        ack = await js.publish("ru.b", b"b-all", headers={"Nats-Rollup": "all"})
        assert ack.seq == 6
        assert (await state(js, "RU")).messages == 1
        e = await js.consumer_info("RU", "every")
        assert (e.num_ack_pending, e.num_pending, e.ack_floor.stream_seq) == (0, 1, 5)
        [m] = await every.fetch(1, timeout=2)
        assert (m.data, m.metadata.sequence.stream) == (b"b-all", 6)
        if not IS_NATS_SERVER:
            # nats-server 2.10; 2.9.10 tells no filtered consumer of a rollup of everything,
            # so "only_b" stays stuck there until ack_wait.
            b = await js.consumer_info("RU", "only_b")
            assert (b.num_ack_pending, b.num_pending, b.ack_floor.stream_seq) == (0, 1, 5)
            [m] = await only_b.fetch(1, timeout=2)
            assert (m.data, m.metadata.sequence.stream) == (b"b-all", 6)


@async_test()
async def test_direct_gets(jsserver):
    """``$JS.API.DIRECT.GET``: by sequence, next and last by subject, and the subject-in-token
    form, answered with the message and headers saying where it came from; 404 for what is not
    there; no answer at all for a stream that does not allow direct gets, or no stream (as
    from nats-server: the requester times out)."""
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="DG", subjects=["dg.*"], allow_direct=True)
        await js.add_stream(name="NODG", subjects=["nodg"])
        await js.publish("dg.a", b"a1", headers={"X-Trace": "t1"})
        await js.publish("dg.b", b"b1")
        await js.publish("dg.a", b"a2")
        await js.publish("nodg", b"n")
        m = await js.get_msg("DG", seq=1, direct=True)
        assert (m.subject, m.seq, m.data, m.headers["X-Trace"]) == ("dg.a", 1, b"a1", "t1")
        assert m.headers["Nats-Stream"] == "DG" and m.time is not None
        m = await js.get_msg("DG", subject="dg.a", direct=True)
        assert (m.seq, m.data) == (3, b"a2")
        m = await js.get_msg("DG", seq=2, subject="dg.a", next=True, direct=True)
        assert (m.seq, m.data) == (3, b"a2")
        m = await js.get_msg("DG", subject="dg.*", direct=True)
        assert m.seq == 3
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.get_msg("DG", seq=9, direct=True)
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.get_msg("DG", subject="dg.none", direct=True)
        for stream in ("NODG", "NOSUCH"):
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request(f"$JS.API.DIRECT.GET.{stream}", b'{"seq":1}', timeout=0.5)
        # Requests it cannot serve, answered with nats-server's statuses.
        for subject, body, status in (("DG", b"", "Empty Request"), ("DG", b"{}", "Empty Request"),
                                      ("DG", b"not json", "Malformed Request"),
                                      ("DG", b'{"seq":1,"last_by_subj":"dg.a"}', "Bad Request"),
                                      ("DG", b'{"last_by_subj":"dg.a","next_by_subj":"dg.a"}', "Bad Request"),
                                      ("DG.dg.a", b'{"seq":1}', "Bad Request")):
            r = await nc.request(f"$JS.API.DIRECT.GET.{subject}", body, timeout=2)
            assert (r.data, hdrs(r)) == (b"", {"Status": "408", "Description": status}), (subject, body)
        # The API's message get refuses the same as a bad request.
        for body in (b"", b"{}", b'{"seq":1,"last_by_subj":"dg.a"}'):
            r = json.loads((await nc.request("$JS.API.STREAM.MSG.GET.DG", body, timeout=2)).data)
            assert r["error"] == {"code": 400, "err_code": 10003, "description": "bad request"}, (body, r)


@async_test()
async def test_stream_info_pages_its_subjects(jsserver):
    """``subjects_filter`` lists the matching subjects and their counts, with nats-server's
    paging fields (``total``, ``offset``, ``limit``: at most 100,000 subjects a page, sorted
    when paged); none match, no list."""
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="SUBJ", subjects=["subj.>"])
        for subject in ("subj.e", "subj.c", "subj.a", "subj.d", "subj.b", "subj.a"):
            await js.publish(subject, b"x")

        async def info(**req):
            return json.loads((await nc.request("$JS.API.STREAM.INFO.SUBJ", json.dumps(req).encode(), timeout=2)).data)
        v = await info(subjects_filter=">")
        assert v["state"]["subjects"] == {"subj.a": 2, "subj.b": 1, "subj.c": 1, "subj.d": 1, "subj.e": 1}
        assert (v["total"], v["offset"], v["limit"]) == (5, 0, 100000)
        v = await info(subjects_filter="subj.*", offset=3)
        assert v["state"]["subjects"] == {"subj.d": 1, "subj.e": 1}
        assert (v["total"], v["offset"], v["limit"]) == (5, 3, 100000)
        v = await info(subjects_filter="other.>")
        assert "subjects" not in v["state"] and (v["total"], v["offset"], v["limit"]) == (0, 0, 0)
        v = await info()
        assert "subjects" not in v["state"] and (v["total"], v["offset"], v["limit"]) == (0, 0, 0)


@async_test()
async def test_get_msg_last_msg_and_delete_msg(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="G", subjects=["g.*"])
        await js.publish("g.a", b"a1")
        await js.publish("g.b", b"b1", headers={"X-Trace": "t-1"})
        await js.publish("g.a", b"a2")

        m = await js.get_msg("G", 2)
        assert (m.subject, m.seq, m.data) == ("g.b", 2, b"b1")
        assert m.headers == {"X-Trace": "t-1"}
        assert m.time is not None
        m = await js.get_last_msg("G", "g.a")
        assert (m.subject, m.seq, m.data) == ("g.a", 3, b"a2")
        m = await js.get_last_msg("G", "g.*")
        assert m.seq == 3

        err = await api_error(js.get_msg("G", 99))
        check_error(err, 404, 10037, "no message found")
        err = await api_error(js.get_last_msg("G", "g.none"))
        check_error(err, 404, 10037, "no message found")

        assert await js.delete_msg("G", 2) is True
        st = await state(js, "G")
        assert (st.messages, st.first_seq, st.last_seq, st.num_deleted) == (2, 1, 3, 1)
        err = await api_error(js.get_msg("G", 2))
        check_error(err, 404, 10037, "no message found")
        err = await api_error(js.delete_msg("G", 2))
        # nats-server 2.9.10: deleting an already deleted message inside the stream is a
        # 400 "sequence N not found"; at the edges it answers 500/10057 "no message found" or
        # (past the last sequence) "stream store EOF".
        check_error(err, 400, 10043, "sequence 2 not found")
        for seq, description in ((99, "stream store EOF"), (0, "no message found")):
            reply = await nc.request("$JS.API.STREAM.MSG.DELETE.G", json.dumps({"seq": seq}).encode(), timeout=5)
            error = json.loads(reply.data)["error"]
            assert (error["code"], error["err_code"], error["description"]) == (500, 10057, description)
        assert await js.delete_msg("G", 1) is True
        st = await state(js, "G")
        assert (st.messages, st.first_seq, st.last_seq) == (1, 3, 3)


# ==========================================================================
# 2. Limits
# ==========================================================================


@async_test()
async def test_max_msgs_discard_old(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="L", subjects=["l"], max_msgs=3)
        for i in range(1, 6):
            assert (await js.publish("l", str(i).encode())).seq == i
        st = await state(js, "L")
        assert (st.messages, st.first_seq, st.last_seq) == (3, 3, 5)
        assert (await js.get_msg("L", 3)).data == b"3"
        err = await api_error(js.get_msg("L", 2))
        assert err.err_code == 10037


@async_test()
async def test_max_msgs_discard_new(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="N", subjects=["n"], max_msgs=2, discard="new")
        await js.publish("n", b"1")
        await js.publish("n", b"2")
        err = await api_error(js.publish("n", b"3"))
        # A 503, so nats-py raises ServiceUnavailableError (an APIError).
        assert isinstance(err, nats.js.errors.ServiceUnavailableError)
        check_error(err, 503, 10077, "maximum messages exceeded")
        st = await state(js, "N")
        assert (st.messages, st.first_seq, st.last_seq) == (2, 1, 2)
        # Room again after a delete.
        await js.delete_msg("N", 1)
        assert (await js.publish("n", b"3")).seq == 3


@async_test()
async def test_max_msgs_per_subject(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="PS", subjects=["ps.*"], max_msgs_per_subject=2)
        for i in range(5):
            await js.publish("ps.a", f"a{i}".encode())
            await js.publish("ps.b", f"b{i}".encode())
        st = await state(js, "PS", subjects_filter=">")
        assert (st.messages, st.first_seq, st.last_seq) == (4, 7, 10)
        assert st.subjects == {"ps.a": 2, "ps.b": 2}
        assert [(await js.get_msg("PS", s)).data for s in range(7, 11)] == [b"a3", b"b3", b"a4", b"b4"]


@async_test()
async def test_stored_bytes_are_counted_as_nats_server_counts_them(jsserver):
    """A stream's ``bytes`` (what ``max_bytes`` and account limits hold) is nats-server's
    record size: in a file stream 30 bytes around subject and payload, 4 more with headers; in
    a memory stream 16."""
    async with jsconn(jsserver) as (nc, js):
        header_block = len(b"NATS/1.0\r\nX: y\r\n\r\n")
        for storage, overhead, with_headers in (("file", 30, 34), ("memory", 16, 16)):
            name = f"SZ{storage}"
            await js.add_stream(name=name, subjects=[f"sz.{storage}"], storage=storage)
            subject = f"sz.{storage}"
            await js.publish(subject, b"x" * 10)
            plain = overhead + len(subject) + 10
            assert (await state(js, name)).bytes == plain
            await js.publish(subject, b"x" * 10, headers={"X": "y"})
            assert (await state(js, name)).bytes == plain + with_headers + len(subject) + header_block + 10


@async_test()
async def test_max_bytes(jsserver):
    # Sizes chosen so that nats-server's accounting and any reasonable per-message overhead
    # (< 50 bytes) agree: three 300-byte payloads fit into 1000 bytes, a fourth does not.
    # (nats-server 2.9.10 stores 30 + len(subject) + len(headers) + len(payload) bytes per
    # message, but its discard-new check adds only headers + payload of the new message.)
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="MBO", subjects=["mbo"], max_bytes=1000)
        for i in range(1, 6):
            assert (await js.publish("mbo", bytes([48 + i]) * 300)).seq == i
        st = await state(js, "MBO")
        assert (st.messages, st.first_seq, st.last_seq) == (3, 3, 5)
        assert 900 <= st.bytes <= 1000

        await js.add_stream(name="MBN", subjects=["mbn"], max_bytes=1000, discard="new")
        for i in range(1, 4):
            assert (await js.publish("mbn", b"x" * 300)).seq == i
        err = await api_error(js.publish("mbn", b"x" * 300))
        check_error(err, 503, 10077, "maximum bytes exceeded")
        st = await state(js, "MBN")
        assert (st.messages, st.first_seq, st.last_seq) == (3, 1, 3)


@async_test()
async def test_max_msg_size(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="MS", subjects=["ms"], max_msg_size=10)
        assert (await js.publish("ms", b"x" * 10)).seq == 1
        err = await api_error(js.publish("ms", b"x" * 11))
        check_error(err, 400, 10054, "message size exceeds maximum allowed")
        assert (await state(js, "MS")).messages == 1


@async_test()
async def test_max_age(jsserver):
    async with jsconn(jsserver) as (nc, js):
        si = await js.add_stream(name="AGE", subjects=["age"], max_age=1.0)
        assert si.config.max_age == 1.0
        # The duplicate window may not be longer than max_age: nats-server shrinks the default
        # 2 min window down to max_age.
        assert si.config.duplicate_window == 1.0
        for i in range(3):
            await js.publish("age", b"x")
        assert (await state(js, "AGE")).messages == 3
        start = time.monotonic()
        st = await wait_until(lambda: _expired(js), timeout=3.0, interval=0.05, what="messages to expire")
        elapsed = time.monotonic() - start
        assert (st.messages, st.bytes, st.first_seq, st.last_seq) == (0, 0, 4, 3)
        assert elapsed >= 0.5, f"messages vanished after {elapsed:.2f}s, before max_age"

        err = await api_error(js.add_stream(name="AGE2", subjects=["age2"], max_age=1.0, duplicate_window=5.0))
        # ("then" sic, as nats-server spells it.)
        check_error(err, 500, 10052, "duplicates window can not be larger then max age")


async def _expired(js):
    st = await state(js, "AGE")
    return st if st.messages == 0 else None


# ==========================================================================
# 3. Deduplication and expected-headers
# ==========================================================================


@async_test()
async def test_dedup_msg_id(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="DD", subjects=["dd"], duplicate_window=1.0)
        a = await js.publish("dd", b"x", headers={"Nats-Msg-Id": "id-1"})
        b = await js.publish("dd", b"x", headers={"Nats-Msg-Id": "id-1"})
        c = await js.publish("dd", b"y", headers={"Nats-Msg-Id": "id-2"})
        assert (a.seq, a.duplicate) == (1, None)
        assert (b.stream, b.seq, b.duplicate) == ("DD", 1, True)
        assert (c.seq, c.duplicate) == (2, None)
        assert (await state(js, "DD")).messages == 2
        # A purge empties the stream, not the duplicate window.
        assert await js.purge_stream("DD") is True
        e = await js.publish("dd", b"x", headers={"Nats-Msg-Id": "id-2"})
        assert (e.seq, e.duplicate) == (2, True)
        assert (await state(js, "DD")).messages == 0
        # Outside the window the same id is a new message. (nats-server forgets ids from a
        # timer, not when it checks a publish; so wait well past the 1 s window.)
        await asyncio.sleep(1.6)
        d = await js.publish("dd", b"x", headers={"Nats-Msg-Id": "id-1"})
        assert (d.seq, d.duplicate) == (3, None)


@async_test()
async def test_expected_headers(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="EX", subjects=["ex.*"])
        await js.publish("ex.a", b"1")
        await js.publish("ex.b", b"2")
        await js.publish("ex.a", b"3", headers={"Nats-Msg-Id": "m3"})

        # Nats-Expected-Last-Sequence: the stream's last sequence.
        err = await api_error(js.publish("ex.a", b"x", headers={"Nats-Expected-Last-Sequence": "2"}))
        check_error(err, 400, 10071, "wrong last sequence: 3")
        assert (await js.publish("ex.a", b"4", headers={"Nats-Expected-Last-Sequence": "3"})).seq == 4

        # Nats-Expected-Stream (nats-py's stream= argument).
        err = await api_error(js.publish("ex.a", b"x", stream="OTHER"))
        check_error(err, 400, 10060, "expected stream does not match")
        assert (await js.publish("ex.a", b"5", stream="EX")).seq == 5

        # Nats-Expected-Last-Subject-Sequence: the last sequence of the subject published to;
        # the error names it (same code and text as for the stream's last sequence).
        err = await api_error(js.publish("ex.b", b"x", headers={"Nats-Expected-Last-Subject-Sequence": "1"}))
        check_error(err, 400, 10071, "wrong last sequence: 2")
        ack = await js.publish("ex.b", b"6", headers={"Nats-Expected-Last-Subject-Sequence": "2"})
        assert ack.seq == 6
        # 0 means "no message on that subject yet".
        err = await api_error(js.publish("ex.a", b"x", headers={"Nats-Expected-Last-Subject-Sequence": "0"}))
        check_error(err, 400, 10071, "wrong last sequence: 5")
        assert (await js.publish("ex.c", b"7", headers={"Nats-Expected-Last-Subject-Sequence": "0"})).seq == 7

        # Nats-Expected-Last-Msg-Id: the Nats-Msg-Id of the stream's last message, which is ""
        # when that message had none (m3's id was "forgotten" by the publishes after it).
        err = await api_error(js.publish("ex.a", b"x", headers={"Nats-Expected-Last-Msg-Id": "m3"}))
        check_error(err, 400, 10070, "wrong last msg ID: ")
        assert (await js.publish("ex.a", b"8", headers={"Nats-Msg-Id": "m8"})).seq == 8
        err = await api_error(js.publish("ex.a", b"x", headers={"Nats-Expected-Last-Msg-Id": "nope"}))
        check_error(err, 400, 10070, "wrong last msg ID: m8")
        ack = await js.publish("ex.a", b"9", headers={"Nats-Expected-Last-Msg-Id": "m8", "Nats-Msg-Id": "m9"})
        assert ack.seq == 9
        err = await api_error(js.publish("ex.a", b"x", headers={"Nats-Expected-Last-Msg-Id": "m8"}))
        check_error(err, 400, 10070, "wrong last msg ID: m9")

        # None of the refused publishes was stored.
        st = await state(js, "EX")
        assert (st.messages, st.last_seq) == (9, 9)


# ==========================================================================
# 4. API errors
# ==========================================================================


@async_test()
async def test_stream_api_errors(jsserver):
    async with jsconn(jsserver) as (nc, js):
        err = await api_error(js.stream_info("MISSING"))
        assert isinstance(err, nats.js.errors.NotFoundError)
        check_error(err, 404, 10059, "stream not found")

        await js.add_stream(name="S1", subjects=["s1.>"])
        err = await api_error(js.add_stream(name="S1", subjects=["s1.>", "more"]))
        assert isinstance(err, nats.js.errors.BadRequestError)
        check_error(err, 400, 10058, "stream name already in use with a different configuration")

        err = await api_error(js.add_stream(name="S2", subjects=["s1.x"]))
        check_error(err, 400, 10065, "subjects overlap with an existing stream")
        err = await api_error(js.add_stream(name="S3", subjects=[">"]))
        if IS_NATS_SERVER:
            check_error(err, 400, 10065, "subjects overlap with an existing stream")
        else:
            # nats-server 2.10 refuses to capture everything (2.9.10 let the overlap refuse it).
            check_error(err, 500, 10052, "capturing all subjects requires no-ack to be true")

        err = await api_error(js.consumer_info("S1", "nobody"))
        check_error(err, 404, 10014, "consumer not found")
        err = await api_error(js.delete_consumer("S1", "nobody"))
        check_error(err, 404, 10014, "consumer not found")
        err = await api_error(js.consumer_info("MISSING", "nobody"))
        check_error(err, 404, 10059, "stream not found")

        # The raw replies, with their "type".
        reply = await nc.request("$JS.API.STREAM.INFO.MISSING", b"", timeout=5)
        body = json.loads(reply.data)
        assert body["type"] == "io.nats.jetstream.api.v1.stream_info_response"
        assert body["error"] == {"code": 404, "err_code": 10059, "description": "stream not found"}
        assert not reply.headers  # errors are in the JSON body, not in a status header


@async_test()
async def test_invalid_requests_raw(jsserver):
    async with jsconn(jsserver) as (nc, js):
        expect_invalid = {
            "type": "io.nats.jetstream.api.v1.stream_create_response",
            "error": {"code": 400, "err_code": 10025, "description": "invalid JSON"},
        }
        # Not JSON, empty, the wrong JSON type, a field of the wrong type, an unknown enum value.
        for body in [b"{not json", b"", b"[]", b'{"name":"x","max_msgs":"ten"}',
                     b'{"name":"x","subjects":["x"],"retention":"bogus"}']:
            reply = await nc.request("$JS.API.STREAM.CREATE.x", body, timeout=5)
            assert json.loads(reply.data) == expect_invalid, f"for {body!r}: {reply.data!r}"

        reply = await nc.request("$JS.API.STREAM.CREATE.x", b'{"name":"y","subjects":["y"]}', timeout=5)
        assert json.loads(reply.data)["error"] == {
            "code": 400, "err_code": 10056, "description": "stream name in subject does not match request"}

        reply = await nc.request("$JS.API.STREAM.CREATE.bad*name", b'{"name":"bad*name"}', timeout=5)
        assert json.loads(reply.data)["error"] == {
            "code": 500, "err_code": 10052,
            "description": "stream name is required and can not contain '.', '*', '>'"}
        # No stream was made by any of these.
        assert await js.streams_info() == []


@async_test()
async def test_cluster_operations_answer_that_a_cluster_is_required(jsserver):
    # What `nats stream cluster step-down` and friends send. One server is no cluster: the
    # answer is an error in the operation's own response type, for streams that exist or not.
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="S", subjects=["s.>"])
        await js.add_consumer("S", durable_name="C")
        for subject, kind in [
            ("$JS.API.STREAM.LEADER.STEPDOWN.S", "stream_leader_stepdown_response"),
            ("$JS.API.STREAM.LEADER.STEPDOWN.NOPE", "stream_leader_stepdown_response"),
            ("$JS.API.STREAM.PEER.REMOVE.S", "stream_remove_peer_response"),
            ("$JS.API.CONSUMER.LEADER.STEPDOWN.S.C", "consumer_leader_stepdown_response"),
        ]:
            reply = await nc.request(subject, b'{"peer":"x"}', timeout=5)
            assert json.loads(reply.data) == {
                "type": f"io.nats.jetstream.api.v1.{kind}",
                "error": {"code": 503, "err_code": 10010,
                          "description": "JetStream clustering support required"},
            }, f"{subject}: {reply.data!r}"
        # The system's own directives are not an account's to ask: no answer, as from
        # nats-server (its account API ignores them), and nothing purged or moved. (Without
        # accounts configured, nats-server 2.9.10 lets the global account purge itself, every
        # stream gone: Junction does not follow it there.)
        directives = ["$JS.API.META.LEADER.STEPDOWN", "$JS.API.SERVER.REMOVE",
                      "$JS.API.ACCOUNT.STREAM.MOVE.$G.S", "$JS.API.ACCOUNT.STREAM.CANCEL_MOVE.$G.S"]
        if not IS_NATS_SERVER:
            directives.append("$JS.API.ACCOUNT.PURGE.$G")
        for subject in directives:
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request(subject, b'{"peer":"x"}', timeout=0.5)
        # Nothing changed.
        assert (await js.stream_info("S")).config.subjects == ["s.>"]
        assert (await js.consumer_info("S", "C")).name == "C"


@async_test()
async def test_deny_delete_and_deny_purge(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="SAFE", subjects=["safe"], deny_delete=True, deny_purge=True)
        await js.publish("safe", b"1")
        await js.publish("safe", b"2")
        err = await api_error(js.delete_msg("SAFE", 1))
        check_error(err, 500, 10057, "message delete not permitted")
        err = await api_error(js.purge_stream("SAFE"))
        check_error(err, 500, 10110, "stream purge not permitted")
        assert (await state(js, "SAFE")).messages == 2
        # Deleting the whole stream is still allowed.
        assert await js.delete_stream("SAFE") is True


# ==========================================================================
# 5. Retention
# ==========================================================================


@async_test()
async def test_workqueue_retention(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="WQ", subjects=["wq.*"], retention="workqueue")
        for i in range(3):
            await js.publish("wq.a", str(i).encode())
        await js.publish("wq.b", b"b")
        sub = await js.pull_subscribe("wq.a", durable="workers", stream="WQ")
        msgs = await sub.fetch(3, timeout=2)
        assert [m.data for m in msgs] == [b"0", b"1", b"2"]
        await msgs[0].ack_sync()
        await msgs[2].ack_sync()
        # Acknowledged messages are gone; the un-acked one and the other subject stay.
        st = await state(js, "WQ")
        assert (st.messages, st.first_seq, st.last_seq) == (2, 2, 4)
        err = await api_error(js.get_msg("WQ", 1))
        assert err.err_code == 10037

        # A second consumer whose filter overlaps is refused ...
        err = await api_error(js.add_consumer("WQ", durable_name="dup", filter_subject="wq.*", ack_policy="explicit"))
        check_error(err, 400, 10100, "filtered consumer not unique on workqueue stream")
        err = await api_error(js.add_consumer("WQ", durable_name="dup", filter_subject="wq.a", ack_policy="explicit"))
        check_error(err, 400, 10100, "filtered consumer not unique on workqueue stream")
        # ... so is one with no filter at all ...
        err = await api_error(js.add_consumer("WQ", durable_name="all", ack_policy="explicit"))
        check_error(err, 400, 10099, "multiple non-filtered consumers not allowed on workqueue stream")
        # ... but a disjoint filter is fine.
        other = await js.pull_subscribe("wq.b", durable="others", stream="WQ")
        (m,) = await other.fetch(1, timeout=2)
        assert m.data == b"b"
        await m.ack_sync()
        st = await state(js, "WQ")
        assert (st.messages, st.first_seq, st.last_seq, st.consumer_count) == (1, 2, 4, 2)


@async_test()
async def test_interest_retention(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="INT", subjects=["int"], retention="interest")
        # No consumers: publishes are acknowledged but nothing is kept.
        for i in range(3):
            assert (await js.publish("int", b"lost")).seq == i + 1
        st = await state(js, "INT")
        assert (st.messages, st.first_seq, st.last_seq) == (0, 4, 3)

        s1 = await js.pull_subscribe("int", durable="one", stream="INT")
        s2 = await js.pull_subscribe("int", durable="two", stream="INT")
        for i in range(3):
            await js.publish("int", f"m{i}".encode())
        assert (await state(js, "INT")).messages == 3

        for m in await s1.fetch(3, timeout=2):
            await m.ack_sync()
        # Consumer "two" has not acknowledged anything yet: all stay.
        assert (await state(js, "INT")).messages == 3

        msgs2 = await s2.fetch(3, timeout=2)
        await msgs2[0].ack_sync()
        await msgs2[1].ack_sync()
        st = await wait_until(lambda: _messages_are(js, "INT", 1), timeout=3, what="two messages removed")
        assert (st.first_seq, st.last_seq) == (6, 6)

        # Removing the consumer that still held the last message releases it.
        await js.delete_consumer("INT", "two")
        st = await wait_until(lambda: _messages_are(js, "INT", 0), timeout=3, what="last message removed")
        assert (st.first_seq, st.last_seq, st.consumer_count) == (7, 6, 1)


@async_test()
async def test_interest_retention_skips_what_nobody_wants_between_kept_messages(jsserver):
    """A message no consumer is interested in, arriving while others are kept, leaves a gap:
    the kept ones before and after it are all delivered, and go once acknowledged."""
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="INTF", subjects=["intf.>"], retention="interest")
        sub = await js.pull_subscribe("intf.a", durable="a", stream="INTF")
        await js.publish("intf.a", b"a1")
        await js.publish("intf.b", b"nobody")
        await js.publish("intf.a", b"a2")
        st = await state(js, "INTF")
        assert (st.messages, st.first_seq, st.last_seq) == (2, 1, 3)
        msgs = await sub.fetch(2, timeout=2)
        assert [(m.data, m.metadata.sequence.stream) for m in msgs] == [(b"a1", 1), (b"a2", 3)]
        for m in msgs:
            await m.ack_sync()
        st = await wait_until(lambda: _messages_are(js, "INTF", 0), timeout=3, what="acknowledged removed")
        assert (st.first_seq, st.last_seq) == (4, 3)


async def _messages_are(js, stream, n):
    st = await state(js, stream)
    return st if st.messages == n else None


# ==========================================================================
# 6. Pull consumers
# ==========================================================================


@async_test()
async def test_pull_fetch_in_order_with_metadata(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="PULL", subjects=["pull.>"])
        for i in range(1, 11):
            await js.publish(f"pull.{i % 3}", f"m{i}".encode())
        sub = await js.pull_subscribe("pull.>", durable="worker")
        ci = await js.consumer_info("PULL", "worker")
        assert ci.name == "worker" and ci.stream_name == "PULL"
        assert ci.config.durable_name == "worker" and ci.config.ack_policy == "explicit"
        assert ci.config.deliver_policy == "all" and ci.config.ack_wait == 30.0
        assert ci.config.max_deliver == -1 and ci.config.filter_subject == "pull.>"
        assert ci.num_pending == 10 and ci.num_ack_pending == 0

        msgs = await sub.fetch(4, timeout=2)
        assert [m.data for m in msgs] == [b"m1", b"m2", b"m3", b"m4"]
        assert [m.subject for m in msgs] == ["pull.1", "pull.2", "pull.0", "pull.1"]
        md = [m.metadata for m in msgs]
        assert [(x.sequence.stream, x.sequence.consumer) for x in md] == [(1, 1), (2, 2), (3, 3), (4, 4)]
        assert [x.num_delivered for x in md] == [1, 1, 1, 1]
        # num_pending: what is left after this message.
        assert [x.num_pending for x in md] == [9, 8, 7, 6]
        assert {(x.stream, x.consumer) for x in md} == {("PULL", "worker")}
        # The reply subject: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        parts = msgs[0].reply.split(".")
        assert parts[:7] == ["$JS", "ACK", "PULL", "worker", "1", "1", "1"] and parts[8] == "9"

        # A bigger batch than what is left returns what is there.
        rest = await sub.fetch(20, timeout=2)
        assert [m.data for m in rest] == [f"m{i}".encode() for i in range(5, 11)]
        assert rest[-1].metadata.num_pending == 0

        ci = await js.consumer_info("PULL", "worker")
        assert (ci.delivered.consumer_seq, ci.delivered.stream_seq) == (10, 10)
        assert (ci.ack_floor.consumer_seq, ci.ack_floor.stream_seq) == (0, 0)
        assert (ci.num_pending, ci.num_ack_pending, ci.num_redelivered) == (0, 10, 0)


@async_test()
async def test_pull_ack_nak_term_and_consumer_info(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="ACK", subjects=["ack"])
        for i in range(1, 11):
            await js.publish("ack", f"m{i}".encode())
        sub = await js.pull_subscribe("ack", durable="c")
        m1, m2, m3 = await sub.fetch(3, timeout=2)
        ci = await js.consumer_info("ACK", "c")
        assert (ci.delivered.stream_seq, ci.ack_floor.stream_seq, ci.num_pending, ci.num_ack_pending) == (3, 0, 7, 3)

        await m1.ack_sync()
        await m3.ack_sync()
        ci = await js.consumer_info("ACK", "c")
        # 2 is still out: the floor stops below it.
        assert (ci.ack_floor.consumer_seq, ci.ack_floor.stream_seq) == (1, 1)
        assert (ci.delivered.consumer_seq, ci.delivered.stream_seq) == (3, 3)
        assert (ci.num_pending, ci.num_ack_pending, ci.num_redelivered) == (7, 1, 0)

        # nak: redelivered at once, same stream sequence, a new consumer sequence. (Sent as a
        # request so that it is certainly applied before the next pull: every kind of ack
        # (+ACK, -NAK, +TERM, +WPI) sent with a reply subject gets an empty reply.)
        reply = await nc.request(m2.reply, b"-NAK", timeout=2)
        assert reply.data == b""
        (again,) = await sub.fetch(1, timeout=2)
        assert again.data == b"m2"
        assert (again.metadata.sequence.stream, again.metadata.sequence.consumer) == (2, 4)
        assert again.metadata.num_delivered == 2
        ci = await js.consumer_info("ACK", "c")
        assert (ci.num_ack_pending, ci.num_redelivered) == (1, 1)

        # term: never again, and it counts as done for the ack floor.
        await again.term()
        ci = await wait_until(lambda: ci_matches(js, "ACK", "c", num_ack_pending=0), timeout=3, what="term")
        assert (ci.ack_floor.consumer_seq, ci.ack_floor.stream_seq) == (4, 3)
        assert (ci.delivered.consumer_seq, ci.delivered.stream_seq) == (4, 3)
        assert ci.num_pending == 7

        (m4,) = await sub.fetch(1, timeout=2)
        assert (m4.data, m4.metadata.sequence.stream, m4.metadata.sequence.consumer) == (b"m4", 4, 5)
        # The plain ack (no reply wanted) is applied too.
        await m4.ack()
        await wait_until(lambda: ci_matches(js, "ACK", "c", **{"ack_floor.stream_seq": 4, "num_ack_pending": 0}),
                         timeout=3, what="ack of m4")

        # Acking twice is harmless; a double ack_sync still gets its reply.
        (m5,) = await sub.fetch(1, timeout=2)
        await m5.ack_sync()
        with pytest.raises(nats.errors.MsgAlreadyAckdError):
            await m5.ack_sync()  # nats-py itself refuses the second one


@async_test()
async def test_ack_wait_redelivery_and_in_progress(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="AW", subjects=["aw"])
        await js.publish("aw", b"only")
        sub = await js.pull_subscribe("aw", durable="slow", config=api.ConsumerConfig(ack_wait=1.0))
        (m,) = await sub.fetch(1, timeout=2)
        assert m.metadata.num_delivered == 1
        start = time.monotonic()
        # Not acked: delivered again once ack_wait has passed.
        (m,) = await sub.fetch(1, timeout=3)
        waited = time.monotonic() - start
        assert m.data == b"only"
        assert (m.metadata.sequence.stream, m.metadata.sequence.consumer, m.metadata.num_delivered) == (1, 2, 2)
        assert 0.5 <= waited <= 2.5, f"redelivered after {waited:.2f}s with ack_wait 1s"
        ci = await js.consumer_info("AW", "slow")
        assert (ci.num_redelivered, ci.num_ack_pending) == (1, 1)

        # in_progress ("+WPI") restarts the ack_wait clock.
        for _ in range(3):
            await asyncio.sleep(0.5)
            await m.in_progress()
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=0.5)  # ~0.5 s after the last +WPI: not yet
        (m,) = await sub.fetch(1, timeout=3)
        assert m.metadata.num_delivered == 3
        await m.ack_sync()
        ci = await js.consumer_info("AW", "slow")
        assert (ci.num_ack_pending, ci.ack_floor.stream_seq, ci.num_pending) == (0, 1, 0)


@async_test()
async def test_max_deliver(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="MD", subjects=["md"])
        await js.publish("md", b"poison")
        cfg = api.ConsumerConfig(ack_wait=0.5, max_deliver=2)
        sub = await js.pull_subscribe("md", durable="md", config=cfg)
        (m,) = await sub.fetch(1, timeout=2)
        assert m.metadata.num_delivered == 1
        (m,) = await sub.fetch(1, timeout=2)
        assert m.metadata.num_delivered == 2 and m.metadata.sequence.stream == 1
        # Third time: no.
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=1.5)
        ci = await js.consumer_info("MD", "md")
        assert ci.config.max_deliver == 2
        assert (ci.delivered.consumer_seq, ci.delivered.stream_seq) == (2, 1)
        # nats-server 2.9.10: the message is no longer pending, but the ack floor stays at 0.
        assert (ci.num_ack_pending, ci.num_pending, ci.num_redelivered) == (0, 0, 1)
        # A new message is delivered normally.
        await js.publish("md", b"fine")
        (m,) = await sub.fetch(1, timeout=2)
        assert (m.data, m.metadata.sequence.stream, m.metadata.num_delivered) == (b"fine", 2, 1)


@async_test()
async def test_fetch_on_empty_times_out_and_pull_status_headers(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="EMPTY", subjects=["empty"])
        sub = await js.pull_subscribe("empty", durable="e")
        start = time.monotonic()
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(1, timeout=1)
        assert 0.8 <= time.monotonic() - start < 2.5
        # With batch > 1, nats-py 2.16 raises either nats.errors.TimeoutError or a plain
        # asyncio.TimeoutError, depending on whether the server's 408 for its first pull request
        # or its own timer comes first; both are TimeoutError.
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            await sub.fetch(5, timeout=1)
        assert 0.8 <= time.monotonic() - start < 2.5

        # The raw pull requests and the status replies nats-py turns into that timeout.
        inbox = nc.new_inbox()
        raw = await nc.subscribe(inbox)
        await nc.publish("$JS.API.CONSUMER.MSG.NEXT.EMPTY.e", b'{"batch":1,"no_wait":true}', reply=inbox)
        st = await raw.next_msg(timeout=2)
        assert st.data == b""
        assert hdrs(st) == {"Status": "404", "Description": "No Messages"}

        await nc.publish("$JS.API.CONSUMER.MSG.NEXT.EMPTY.e", b'{"batch":1,"expires":300000000}', reply=inbox)
        start = time.monotonic()
        st = await raw.next_msg(timeout=2)
        assert 0.15 <= time.monotonic() - start <= 1.5
        assert st.data == b""
        assert hdrs(st) == {"Status": "408", "Description": "Request Timeout",
                            "Nats-Pending-Messages": "1", "Nats-Pending-Bytes": "0"}

        # A waiting pull request is served by the next publish.
        await nc.publish("$JS.API.CONSUMER.MSG.NEXT.EMPTY.e", b'{"batch":1,"expires":3000000000}', reply=inbox)
        await nc.flush()
        await asyncio.sleep(0.1)
        await js.publish("empty", b"late")
        got = await raw.next_msg(timeout=2)
        assert (got.subject, got.data) == ("empty", b"late")
        assert got.reply.startswith("$JS.ACK.EMPTY.e.1.1.1.")


@async_test()
async def test_no_wait_pull_requests_end_as_nats_server_ends_them(jsserver):
    """A pull request with ``no_wait`` ends with 408 and what it still asked for once it got
    something and the stream has nothing more; with nothing to send it is refused at once (404);
    when what is left would not reach it past the requests already waiting, 408 "Requests
    Pending"; at ``max_ack_pending`` it waits for room, like any other request."""
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="NW", subjects=["nw"])
        for _ in range(3):
            await js.publish("nw", b"x")
        await js.add_consumer("NW", durable_name="c", ack_policy="explicit", max_ack_pending=4)
        inbox = nc.new_inbox()
        raw = await nc.subscribe(inbox + ".>")
        acks = []

        async def pull(label: str, body: dict, wait: float = 0.3) -> list:
            await nc.publish("$JS.API.CONSUMER.MSG.NEXT.NW.c", json.dumps(body).encode(),
                             reply=f"{inbox}.{label}")
            got = []
            with contextlib.suppress(nats.errors.TimeoutError):
                while True:
                    m = await raw.next_msg(timeout=wait)
                    assert m.subject in ("nw", f"{inbox}.{label}"), m.subject
                    if m.subject == "nw":
                        acks.append(m.reply)
                    got.append(hdrs(m) if m.subject != "nw" else m.data)
            return got

        # Two of the three, then the end of the stream: 408 with the 3 it did not get.
        assert await pull("two", {"batch": 2, "no_wait": True}) == [b"x", b"x"]
        got = await pull("five", {"batch": 5, "no_wait": True})
        assert got == [b"x", {"Status": "408", "Description": "Request Timeout",
                              "Nats-Pending-Messages": "4", "Nats-Pending-Bytes": "0"}]
        # Nothing left and no expiry: refused at once.
        assert await pull("none", {"batch": 5, "no_wait": True}) == [{"Status": "404", "Description": "No Messages"}]
        # Two new messages: the request gets one, reaches max_ack_pending (4) and waits.
        await js.publish("nw", b"y")
        await js.publish("nw", b"z")
        assert await pull("held", {"batch": 5, "no_wait": True}) == [b"y"]
        # One message left, four asked for already: refused.
        assert await pull("more", {"batch": 1, "no_wait": True}) == [{"Status": "408", "Description": "Requests Pending"}]
        # Room again: the waiting request gets what is left, then ends.
        for reply in acks[:2]:
            await nc.publish(reply, b"+ACK")
        got = []
        with contextlib.suppress(nats.errors.TimeoutError):
            while len(got) < 2:
                m = await raw.next_msg(timeout=2)
                got.append((m.subject.rsplit(".", 1)[-1], hdrs(m) if m.subject != "nw" else m.data))
        assert got == [("nw", b"z"),
                       ("held", {"Status": "408", "Description": "Request Timeout",
                                 "Nats-Pending-Messages": "3", "Nats-Pending-Bytes": "0"})]
        if not IS_NATS_SERVER:
            # Batches as large as a client may ask for: what the waiting requests still ask for
            # adds up without overflowing (nats-server's int wraps, and it queues the request).
            await js.add_consumer("NW", durable_name="big", ack_policy="explicit", max_ack_pending=1)
            for label in ("big1", "big2"):
                await nc.publish("$JS.API.CONSUMER.MSG.NEXT.NW.big",
                                 json.dumps({"batch": 2**63 - 1, "expires": 5_000_000_000}).encode(),
                                 reply=f"{inbox}.{label}")
            await nc.flush()
            await asyncio.sleep(0.3)
            while True:  # what the first request got
                try:
                    await raw.next_msg(timeout=0.2)
                except nats.errors.TimeoutError:
                    break
            await nc.publish("$JS.API.CONSUMER.MSG.NEXT.NW.big", b'{"batch":1,"no_wait":true}',
                             reply=f"{inbox}.bigger")
            st = await raw.next_msg(timeout=2)
            assert (st.subject, hdrs(st)) == (f"{inbox}.bigger", {"Status": "408", "Description": "Requests Pending"})


@async_test()
async def test_a_pull_request_whose_requester_left_gets_nothing(jsserver):
    """A waiting pull request whose requester went away (no interest in its reply any more)
    is dropped before a message would go to it, as nats-server drops it: the message goes to
    the next requester at once instead of waiting out its ack_wait."""
    async with Clients(jsserver) as c:
        gone = await c.connect()
        nc = await c.connect()
        js = nc.jetstream(timeout=5)
        await js.add_stream(name="GONE", subjects=["gone"])
        await js.add_consumer("GONE", durable_name="w", ack_policy="explicit", ack_wait=30)
        inbox = gone.new_inbox()
        await gone.subscribe(inbox)
        await gone.publish("$JS.API.CONSUMER.MSG.NEXT.GONE.w", b'{"batch":1,"expires":20000000000}', reply=inbox)
        await gone.flush()
        await wait_until(lambda: ci_matches(js, "GONE", "w", num_waiting=1), timeout=3, what="the request waits")
        await gone.close()
        await asyncio.sleep(0.5)
        await js.publish("gone", b"for the living")
        sub = await js.pull_subscribe_bind(durable="w", stream="GONE")
        [m] = await sub.fetch(1, timeout=2)
        assert (m.data, m.metadata.num_delivered) == (b"for the living", 1)


@async_test()
async def test_ack_policy_all(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="AA", subjects=["aa"])
        for i in range(1, 9):
            await js.publish("aa", str(i).encode())
        sub = await js.pull_subscribe("aa", durable="all", config=api.ConsumerConfig(ack_policy="all"))
        msgs = await sub.fetch(5, timeout=2)
        ci = await js.consumer_info("AA", "all")
        assert ci.config.ack_policy == "all"
        assert (ci.num_ack_pending, ci.ack_floor.stream_seq, ci.num_pending) == (5, 0, 3)
        # Acking the 4th acknowledges 1..4.
        await msgs[3].ack_sync()
        ci = await js.consumer_info("AA", "all")
        assert (ci.ack_floor.consumer_seq, ci.ack_floor.stream_seq) == (4, 4)
        assert (ci.num_ack_pending, ci.num_pending) == (1, 3)


@async_test()
async def test_deliver_policies_and_filter(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="DP", subjects=["dp.*"])
        for i in range(1, 10):
            await js.publish(f"dp.{'abc'[i % 3]}", f"m{i}".encode())
        # Subjects by sequence: 1 b, 2 c, 3 a, 4 b, 5 c, 6 a, 7 b, 8 c, 9 a.

        async def first_batch(durable, subject="dp.*", **cfg):
            sub = await js.pull_subscribe(subject, durable=durable, stream="DP",
                                          config=api.ConsumerConfig(**cfg))
            try:
                msgs = await sub.fetch(20, timeout=1)
            except TimeoutError:  # see test_fetch_on_empty_times_out_and_pull_status_headers
                msgs = []
            return sub, [(m.metadata.sequence.stream, m.metadata.sequence.consumer, m.metadata.num_pending)
                         for m in msgs]

        _, got = await first_batch("all", deliver_policy="all")
        assert [s for s, _, _ in got] == list(range(1, 10))

        _, got = await first_batch("last", deliver_policy="last")
        assert got == [(9, 1, 0)]

        sub_new, got = await first_batch("new", deliver_policy="new")
        assert got == []
        await js.publish("dp.b", b"m10")
        (m,) = await sub_new.fetch(1, timeout=2)
        assert (m.data, m.metadata.sequence.stream, m.metadata.sequence.consumer) == (b"m10", 10, 1)

        _, got = await first_batch("bss", deliver_policy="by_start_sequence", opt_start_seq=7)
        assert got == [(7, 1, 3), (8, 2, 2), (9, 3, 1), (10, 4, 0)]

        _, got = await first_batch("lps", deliver_policy="last_per_subject")
        # The last message of each subject, in stream order: 8 (c), 9 (a), 10 (b).
        assert got == [(8, 1, 2), (9, 2, 1), (10, 3, 0)]

        sub_f, got = await first_batch("only_b", subject="dp.b")
        assert got == [(1, 1, 3), (4, 2, 2), (7, 3, 1), (10, 4, 0)]
        ci = await js.consumer_info("DP", "only_b")
        assert ci.config.filter_subject == "dp.b" and ci.num_pending == 0
        await js.publish("dp.a", b"not for b")
        await js.publish("dp.b", b"for b")
        (m,) = await sub_f.fetch(1, timeout=2)
        seq = m.metadata.sequence
        assert (m.subject, m.data, seq.stream, seq.consumer) == ("dp.b", b"for b", 12, 5)

        _, got = await first_batch("last_b", subject="dp.b", deliver_policy="last")
        assert got == [(12, 1, 0)]

        names = sorted(c.name for c in await js.consumers_info("DP"))
        assert names == ["all", "bss", "last", "last_b", "lps", "new", "only_b"]
        assert (await state(js, "DP")).consumer_count == 7


@async_test()
async def test_consumer_config_errors(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="CE", subjects=["ce.*"])
        err = await api_error(js.add_consumer("CE", durable_name="x", deliver_policy="by_start_sequence"))
        check_error(err, 400, 10094,
                    "consumer delivery policy is deliver by start sequence, but optional start sequence is not set")
        if IS_NATS_SERVER:
            # 2.9.10 refuses a filter outside the stream's subjects; 2.10 takes it (and takes
            # nothing with it), as Junction does.
            err = await api_error(js.add_consumer("CE", durable_name="x", filter_subject="other"))
            check_error(err, 400, 10093, "consumer filter subject is not a valid subset of the interest subjects")
        else:
            info = await js.add_consumer("CE", durable_name="x", filter_subject="other")
            assert (info.config.filter_subject, info.num_pending) == ("other", 0)
            assert await js.delete_consumer("CE", "x") is True
        err = await api_error(js.add_consumer("NOPE", durable_name="x"))
        check_error(err, 404, 10059, "stream not found")
        await js.add_consumer("CE", durable_name="dur", deliver_policy="all", ack_policy="explicit")
        # Same name, other deliver policy: nats-server treats it as an update, and refuses it.
        err = await api_error(js.add_consumer("CE", durable_name="dur", deliver_policy="new", ack_policy="explicit"))
        check_error(err, 500, 10012, "deliver policy can not be updated")
        assert await js.delete_consumer("CE", "dur") is True
        err = await api_error(js.consumer_info("CE", "dur"))
        check_error(err, 404, 10014, "consumer not found")


# ==========================================================================
# 7. Push consumers
# ==========================================================================


@async_test()
async def test_push_durable(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="PUSH", subjects=["push.>"])
        for i in range(1, 6):
            await js.publish("push.a", f"m{i}".encode())
        sub = await js.subscribe("push.>", durable="pd", manual_ack=True)
        got = []
        for _ in range(5):
            m = await sub.next_msg(timeout=2)
            got.append((m.data, m.metadata.sequence.stream, m.metadata.num_pending))
            await m.ack_sync()
        assert got == [(b"m1", 1, 4), (b"m2", 2, 3), (b"m3", 3, 2), (b"m4", 4, 1), (b"m5", 5, 0)]
        ci = await js.consumer_info("PUSH", "pd")
        assert ci.config.deliver_subject and ci.config.deliver_subject.startswith("_INBOX.")
        assert ci.push_bound is True
        assert (ci.num_ack_pending, ci.num_pending, ci.ack_floor.stream_seq) == (0, 0, 5)

        # Live messages arrive as they are published.
        await js.publish("push.b", b"live")
        m = await sub.next_msg(timeout=2)
        seq = m.metadata.sequence
        assert (m.subject, m.data, seq.stream, seq.consumer) == ("push.b", b"live", 6, 6)
        await m.ack_sync()

        await sub.unsubscribe()
        await wait_until(lambda: ci_matches(js, "PUSH", "pd", push_bound=None), timeout=3, what="push_bound cleared")
        # The durable keeps its place: a new subscriber resumes after 6.
        await js.publish("push.c", b"after")
        sub2 = await js.subscribe("push.>", durable="pd", manual_ack=True)
        m = await sub2.next_msg(timeout=2)
        assert (m.data, m.metadata.sequence.stream, m.metadata.sequence.consumer) == (b"after", 7, 7)


@async_test(timeout=30)
async def test_push_rate_limit_paces_deliveries(jsserver):
    """``rate_limit_bps``: a push consumer sends at most that many bits a second after a burst
    of one message (the stream's ``max_msg_size``); a pull consumer cannot have one (10086)."""
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="RL", subjects=["rl.>"], max_msg_size=1_000)
        # Smaller than the burst with its subject and reply (nats-server waits forever for a
        # message larger than its burst).
        body = b"r" * 800
        for _ in range(25):
            await js.publish("rl.a", body)
        # 80,000 bits/s = 10,000 bytes/s: the first message goes at once, the other 24 (about
        # 20 KB with their subjects) take about 2 s.
        got = []
        started = time.monotonic()
        sub = await js.subscribe(
            "rl.>",
            durable="paced",
            config=api.ConsumerConfig(rate_limit_bps=80_000, ack_policy=api.AckPolicy.NONE),
        )
        for _ in range(25):
            m = await sub.next_msg(timeout=5)
            got.append(time.monotonic() - started)
        assert got[0] < 1.0, got
        assert 1.5 < got[-1] < 6.0, got
        # Evenly: the second half takes about as long as the first.
        assert got[12] > 0.6, got

        # Without a limit the same messages come at once.
        fast = await js.subscribe("rl.>", durable="fast", config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE))
        started = time.monotonic()
        for _ in range(25):
            await fast.next_msg(timeout=2)
        assert time.monotonic() - started < 1.0

        err = await api_error(js.add_consumer("RL", durable_name="pulled", rate_limit_bps=1000, ack_policy="explicit"))
        check_error(err, 400, 10086, "consumer in pull mode can not have rate limit set")


@async_test(timeout=30)
async def test_replay_original_keeps_the_gaps_between_messages(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="RP", subjects=["rp.>"])
        for i in range(4):
            if i:
                await asyncio.sleep(0.4)
            await js.publish("rp.a", f"{i}".encode())
        for replay, durable in ((api.ReplayPolicy.ORIGINAL, "orig"), (api.ReplayPolicy.INSTANT, "inst")):
            sub = await js.subscribe(
                "rp.>",
                durable=durable,
                config=api.ConsumerConfig(replay_policy=replay, ack_policy=api.AckPolicy.NONE),
            )
            times = []
            for i in range(4):
                m = await sub.next_msg(timeout=5)
                assert m.data == f"{i}".encode()
                times.append(time.monotonic())
            gaps = [b - a for a, b in zip(times, times[1:])]
            if replay == api.ReplayPolicy.ORIGINAL:
                assert all(0.25 < g < 0.9 for g in gaps), gaps
            else:
                assert all(g < 0.2 for g in gaps), gaps


@async_test()
async def test_push_queue_group(jsserver):
    async with jsserver_clients(jsserver) as (js1, js2, js):
        await js.add_stream(name="Q", subjects=["q.>"])
        # nats-py: the queue name is also the durable name and the deliver_group.
        q1 = await js1.subscribe("q.>", queue="workers", manual_ack=True)
        q2 = await js2.subscribe("q.>", queue="workers", manual_ack=True)
        ci = await js.consumer_info("Q", "workers")
        assert ci.config.deliver_group == "workers"
        n = 40
        for i in range(1, n + 1):
            await js.publish("q.job", str(i).encode())
        seen = {1: [], 2: []}

        async def drain(sub, key):
            while len(seen[1]) + len(seen[2]) < n:
                try:
                    m = await sub.next_msg(timeout=0.5)
                except nats.errors.TimeoutError:
                    continue
                seen[key].append(m.metadata.sequence.stream)
                await m.ack()

        await asyncio.wait_for(asyncio.gather(drain(q1, 1), drain(q2, 2)), 8)
        # Each message to exactly one member; both members got some.
        assert sorted(seen[1] + seen[2]) == list(range(1, n + 1))
        assert seen[1] and seen[2], f"one member got everything: {seen}"
        await wait_until(lambda: ci_matches(js, "Q", "workers", num_ack_pending=0), timeout=3, what="all acked")



@async_test()
async def test_ordered_consumer(jsserver):
    async with jsconn(jsserver) as (nc, js):
        await js.add_stream(name="ORD", subjects=["ord.*"])
        for i in range(1, 31):
            await js.publish(f"ord.{i % 2}", f"{i}".encode())
        sub = await js.subscribe("ord.*", ordered_consumer=True)
        got = [await sub.next_msg(timeout=2) for _ in range(30)]
        assert [m.data for m in got] == [str(i).encode() for i in range(1, 31)]
        assert [(m.metadata.sequence.stream, m.metadata.sequence.consumer) for m in got] == [
            (i, i) for i in range(1, 31)]
        ci = await sub.consumer_info()
        # What nats-py asks for, as the server reports it.
        assert ci.config.ack_policy == "none" and ci.config.flow_control is True
        assert ci.config.mem_storage is True and ci.config.max_deliver == 1
        assert ci.config.durable_name is None
        await js.publish("ord.1", b"31")
        m = await sub.next_msg(timeout=2)
        assert (m.data, m.metadata.sequence.stream) == (b"31", 31)


# ==========================================================================
# 8. Key-value
# ==========================================================================


@async_test()
async def test_kv_put_get_update_create(jsserver):
    async with jsconn(jsserver) as (nc, js):
        kv = await js.create_key_value(bucket="cfg", history=5)
        si = await js.stream_info("KV_cfg")
        assert si.config.subjects == ["$KV.cfg.>"]
        assert si.config.max_msgs_per_subject == 5 and si.config.discard == "new"
        assert si.config.allow_rollup_hdrs is True and si.config.deny_delete is True

        assert await kv.put("a", b"1") == 1
        assert await kv.put("a", b"2") == 2
        e = await kv.get("a")
        assert (e.bucket, e.key, e.value, e.revision) == ("cfg", "a", b"2", 2)
        assert (await kv.get("a", revision=1)).value == b"1"

        assert await kv.update("a", b"3", last=2) == 3
        with pytest.raises(nats.js.errors.KeyWrongLastSequenceError) as info:
            await kv.update("a", b"4", last=2)
        assert info.value.description == "wrong last sequence: 3"

        # create: only if the key does not exist.
        with pytest.raises(nats.js.errors.KeyWrongLastSequenceError) as info:
            await kv.create("a", b"x")
        assert info.value.description == "wrong last sequence: 3"
        assert await kv.create("b", b"B") == 4
        assert (await kv.get("a")).value == b"3"

        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get("never")

        # The raw message of a KV entry, as get_last_msg sees it.
        raw = await js.get_last_msg("KV_cfg", "$KV.cfg.a")
        assert (raw.seq, raw.data) == (3, b"3")


@async_test()
async def test_kv_delete_purge_history_keys(jsserver):
    async with jsconn(jsserver) as (nc, js):
        kv = await js.create_key_value(bucket="hist", history=5)
        await kv.put("a", b"1")
        await kv.put("a", b"2")
        await kv.put("a", b"3")
        await kv.put("b", b"B")
        assert sorted(await kv.keys()) == ["a", "b"]
        hist = await kv.history("a")
        assert [(h.key, h.value, h.revision, h.operation) for h in hist] == [
            ("a", b"1", 1, None), ("a", b"2", 2, None), ("a", b"3", 3, None)]

        assert await kv.delete("a") is True
        # nats-py's get() turns the delete marker into KeyNotFoundError (a KeyDeletedError
        # inside); the entry and the operation are on the error.
        with pytest.raises(nats.js.errors.KeyNotFoundError) as info:
            await kv.get("a")
        assert info.value.op == "DEL" and info.value.entry.revision == 5
        assert await kv.keys() == ["b"]
        hist = await kv.history("a")
        assert [(h.value, h.revision, h.operation) for h in hist] == [
            (b"1", 1, None), (b"2", 2, None), (b"3", 3, None), (b"", 5, "DEL")]

        # create works again on a deleted key.
        assert await kv.create("a", b"again") == 6
        assert (await kv.get("a")).value == b"again"

        # purge: a rollup that leaves only the PURGE marker.
        assert await kv.purge("a") is True
        hist = await kv.history("a")
        assert [(h.value, h.revision, h.operation) for h in hist] == [(b"", 7, "PURGE")]
        with pytest.raises(nats.js.errors.KeyNotFoundError) as info:
            await kv.get("a")
        assert info.value.op == "PURGE"

        # history=5 keeps the last 5 values of a key.
        for i in range(7):
            await kv.put("h", str(i).encode())
        assert [(h.value, h.revision) for h in await kv.history("h")] == [
            (b"2", 10), (b"3", 11), (b"4", 12), (b"5", 13), (b"6", 14)]

        empty = await js.create_key_value(bucket="empty")
        with pytest.raises(nats.js.errors.NoKeysError):
            await empty.keys()
        assert await js.delete_key_value("empty") is True
        with pytest.raises(nats.js.errors.BucketNotFoundError):
            await js.key_value("empty")


@async_test()
async def test_kv_watch(jsserver):
    async with jsconn(jsserver) as (nc, js):
        kv = await js.create_key_value(bucket="w", history=5)
        await kv.put("a", b"1")
        await kv.put("b", b"2")
        await kv.put("a", b"3")
        w = await kv.watchall()
        initial = []
        while True:
            u = await w.updates(timeout=2)
            if u is None:  # end of the initial values
                break
            initial.append((u.key, u.value, u.revision, u.operation, u.delta))
        # The latest value of each key, in stream order; delta counts what follows.
        assert initial == [("b", b"2", 2, None, 1), ("a", b"3", 3, None, 0)]

        await kv.put("c", b"C")
        u = await w.updates(timeout=2)
        assert (u.key, u.value, u.revision, u.operation) == ("c", b"C", 4, None)
        await kv.delete("a")
        u = await w.updates(timeout=2)
        assert (u.key, u.value, u.revision, u.operation) == ("a", b"", 5, "DEL")
        await kv.purge("b")
        u = await w.updates(timeout=2)
        assert (u.key, u.value, u.revision, u.operation) == ("b", b"", 6, "PURGE")
        await w.stop()

        # A watcher of one key sees only that key.
        wc = await kv.watch("c")
        u = await wc.updates(timeout=2)
        assert (u.key, u.value, u.revision) == ("c", b"C", 4)
        assert await wc.updates(timeout=2) is None
        await kv.put("other", b"x")
        await kv.put("c", b"C2")
        u = await wc.updates(timeout=2)
        assert (u.key, u.value, u.revision) == ("c", b"C2", 8)
        await wc.stop()

        # A watcher on an empty bucket gets the end-of-initial marker at once.
        empty = await js.create_key_value(bucket="nothing")
        we = await empty.watchall()
        assert await we.updates(timeout=2) is None
        await we.stop()


@async_test()
async def test_kv_status(jsserver):
    async with jsconn(jsserver) as (nc, js):
        kv = await js.create_key_value(bucket="stat", history=3, ttl=60)
        for i in range(5):
            await kv.put("k", str(i).encode())
        await kv.put("j", b"j")
        st = await kv.status()
        assert st.bucket == "stat"
        assert st.values == 4  # 3 of k (history) + 1 of j
        assert st.history == 3
        assert st.ttl == 60.0
        assert st.stream_info.config.name == "KV_stat"
        assert st.stream_info.config.duplicate_window == 60.0  # nats-py: min(2 min, ttl)


# ==========================================================================
# 9. Object store
# ==========================================================================


@async_test(timeout=60)
async def test_object_store(jsserver):
    async with jsconn(jsserver) as (nc, js):
        obs = await js.create_object_store(bucket="files")
        si = await js.stream_info("OBJ_files")
        assert sorted(si.config.subjects) == ["$O.files.C.>", "$O.files.M.>"]

        data = os.urandom(3 * 1024 * 1024 + 123)
        digest = "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
        info = await obs.put("big.bin", data)
        assert (info.name, info.bucket, info.size, info.digest) == ("big.bin", "files", len(data), digest)
        assert info.chunks == 25  # 128 KiB chunks
        await obs.put("small.txt", b"hello")

        res = await obs.get("big.bin")
        assert res.data == data
        assert (res.info.size, res.info.digest, res.info.chunks) == (len(data), digest, 25)
        assert (await obs.get("small.txt")).data == b"hello"

        listed = sorted((o.name, o.size) for o in await obs.list())
        assert listed == [("big.bin", len(data)), ("small.txt", 5)]
        st = await state(js, "OBJ_files")
        assert st.messages == 25 + 1 + 1 + 1  # chunks of both and one meta message each
        assert st.bytes > len(data)

        await obs.delete("big.bin")
        with pytest.raises(nats.js.errors.ObjectNotFoundError):
            await obs.get("big.bin")
        gone = await obs.get_info("big.bin", show_deleted=True)
        assert gone.deleted is True and gone.size == 0
        # The chunks were purged: the small object and the deletion marker remain.
        st = await state(js, "OBJ_files")
        assert st.messages == 3
        assert st.bytes < 10_000
        with pytest.raises(nats.js.errors.ObjectNotFoundError):
            await obs.get("never.existed")


# ==========================================================================
# 10. Account info
# ==========================================================================


@async_test()
async def test_account_info(jsserver):
    async with jsconn(jsserver) as (nc, js):
        ai = await js.account_info()
        assert (ai.memory, ai.storage, ai.streams, ai.consumers) == (0, 0, 0, 0)
        lim = ai.limits
        assert (lim.max_memory, lim.max_storage, lim.max_streams, lim.max_consumers) == (-1, -1, -1, -1)

        await js.add_stream(name="F1", subjects=["f1"])
        await js.add_stream(name="F2", subjects=["f2"])
        await js.add_stream(name="M1", subjects=["m1"], storage="memory")
        for _ in range(10):
            await js.publish("f1", b"a" * 50)
            await js.publish("f2", b"b" * 10)
            await js.publish("m1", b"c" * 20)
        await js.add_consumer("F1", durable_name="c1", ack_policy="explicit")
        await js.add_consumer("F1", durable_name="c2", ack_policy="explicit")
        await js.add_consumer("M1", durable_name="c3", ack_policy="explicit")

        sizes = {s.config.name: s.state.bytes for s in await js.streams_info()}
        ai = await js.account_info()
        assert (ai.streams, ai.consumers) == (3, 3)
        assert ai.memory == sizes["M1"] > 0
        assert ai.storage == sizes["F1"] + sizes["F2"] > 0

        await js.delete_stream("F2")
        ai = await js.account_info()
        assert (ai.streams, ai.consumers, ai.storage, ai.memory) == (2, 3, sizes["F1"], sizes["M1"])
        # Deleting a stream takes its consumers along.
        await js.delete_stream("F1")
        ai = await js.account_info()
        assert (ai.streams, ai.consumers, ai.storage) == (1, 1, 0)
        # (nats-server 2.9.10 does not lower "storage" after a purge with a subject filter, so
        # this test does not look at that case.)

        # The raw reply.
        reply = await nc.request("$JS.API.INFO", b"", timeout=5)
        body = json.loads(reply.data)
        assert body["type"] == "io.nats.jetstream.api.v1.account_info_response"
        assert (body["memory"], body["storage"], body["streams"], body["consumers"]) == (sizes["M1"], 0, 1, 1)
        assert body["limits"]["max_memory"] == -1 and body["limits"]["max_streams"] == -1
        assert body["api"]["total"] > 0 and body["api"]["errors"] == 0


@async_test()
async def test_jetstream_disabled(server_factory):
    server = server_factory()  # no -js
    async with jsconn(server) as (nc, js):
        # Nobody answers $JS.API.*: nats-py maps "no responders" to ServiceUnavailableError.
        with pytest.raises(nats.js.errors.ServiceUnavailableError):
            await js.account_info()
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request("$JS.API.INFO", b"", timeout=2)


# ==========================================================================
# 11. Configuration file and durability
# ==========================================================================


@async_test()
async def test_jetstream_from_config_file(server_factory, tmp_path):
    store = tmp_path / "conf-store"
    config = f"jetstream {{\n  store_dir: {json.dumps(str(store))}\n}}\n"
    server = server_factory(config)
    async with jsconn(server) as (nc, js):
        await js.add_stream(name="CONF", subjects=["conf"])
        await js.add_stream(name="VOLATILE", subjects=["vol"], storage="memory")
        for i in range(1, 4):
            await js.publish("conf", str(i).encode())
        await js.publish("vol", b"v")
        kv = await js.create_key_value(bucket="settings")
        await kv.put("mode", b"fast")
    assert store.exists() and any(store.rglob("*")), "nothing was written under store_dir"
    assert server.terminate() == EXPECT_EXIT

    again = server_factory(config)
    async with jsconn(again) as (nc, js):
        st = await state(js, "CONF")
        assert (st.messages, st.first_seq, st.last_seq) == (3, 1, 3)
        assert (await js.get_msg("CONF", 2)).data == b"2"
        kv = await js.key_value("settings")
        assert (await kv.get("mode")).value == b"fast"
        # A memory stream does not survive a restart.
        err = await api_error(js.stream_info("VOLATILE"))
        check_error(err, 404, 10059, "stream not found")
        assert (await js.publish("conf", b"4")).seq == 4


@async_test(timeout=60)
async def test_sequences_removed_at_the_end_are_not_handed_out_again_after_a_restart(server_factory, tmp_path):
    """The last sequences of a stream may be held by no message (deleted, or on an interest
    stream never kept): after a restart the next message still gets the next sequence, and is
    found there."""
    args = js_args(tmp_path, "tail")
    first = server_factory(args=args)
    async with jsconn(first) as (nc, js):
        await js.add_stream(name="TAIL", subjects=["tail"])
        for i in range(1, 4):
            await js.publish("tail", f"t{i}".encode())
        assert await js.delete_msg("TAIL", 3) is True
        await js.add_stream(name="INTR", subjects=["intr.>"], retention="interest")
        sub = await js.pull_subscribe("intr.a", durable="a", stream="INTR")
        await js.publish("intr.a", b"kept")
        await js.publish("intr.b", b"nobody wants this")
        # Touch the configuration: its metadata is written again.
        await js.update_stream(api.StreamConfig(name="TAIL", subjects=["tail"], max_msgs=100))
    first.terminate()

    second = server_factory(args=args)
    async with jsconn(second) as (nc, js):
        assert (await js.publish("tail", b"t4")).seq == 4
        assert (await js.get_msg("TAIL", 4)).data == b"t4"
        assert [(await js.get_msg("TAIL", s)).data for s in (1, 2)] == [b"t1", b"t2"]
        st = await state(js, "TAIL")
        assert (st.messages, st.first_seq, st.last_seq) == (3, 1, 4)
        assert (await js.publish("intr.a", b"after")).seq == 3
        sub = await js.pull_subscribe("intr.a", durable="a", stream="INTR")
        msgs = await sub.fetch(2, timeout=3)
        assert [(m.data, m.metadata.sequence.stream) for m in msgs] == [(b"kept", 1), (b"after", 3)]


@async_test(timeout=90)
async def test_a_consumer_info_never_overtakes_deliveries(server_factory, tmp_path):
    """A consumer whose deliveries wait for the commit that counts them (max_deliver on a
    stream on disk, as nats-py's KV watchers create them) is not reported as having delivered
    what the client has not received yet: nats-py's `kv.keys()` reads `num_pending` and its
    own count of deliveries from one consumer info, and saw no keys when the answer overtook
    them."""
    srv = server_factory(args=js_args(tmp_path, "overtake"))
    async with jsconn(srv) as (nc, js):
        await js.add_stream(name="OT", subjects=["ot.>"])
        for r in range(40):
            for k in ("a", "b", "c"):
                await js.publish(f"ot.{r}.{k}", b"v")
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            cfg = {"deliver_subject": inbox, "max_deliver": 1, "ack_policy": "none",
                   "deliver_policy": "last_per_subject", "filter_subject": f"ot.{r}.>",
                   "inactive_threshold": 300 * 10**9, "flow_control": True,
                   "idle_heartbeat": 5 * 10**9}
            created = json.loads((await nc.request("$JS.API.CONSUMER.CREATE.OT",
                                                   json.dumps({"stream_name": "OT", "config": cfg}).encode(),
                                                   timeout=5)).data)
            name = created["name"]
            info = json.loads((await nc.request(f"$JS.API.CONSUMER.INFO.OT.{name}", b"", timeout=5)).data)
            seen = sub.delivered
            assert info["delivered"]["consumer_seq"] <= seen, (r, info["delivered"], info["num_pending"], seen)
            await sub.unsubscribe()
            await nc.request(f"$JS.API.CONSUMER.DELETE.OT.{name}", b"", timeout=5)


@async_test(timeout=60)
async def test_the_duplicate_window_survives_a_sigkill(server_factory, tmp_path):
    """A publication repeated within the duplicate window after a crash is still a duplicate,
    and the last message id still answers Nats-Expected-Last-Msg-Id: the ids are read back
    from the stored messages, as nats-server reads them."""
    args = js_args(tmp_path, "dedup")
    first = server_factory(args=args)
    async with jsconn(first) as (nc, js):
        await js.add_stream(name="DD", subjects=["dd.*"], duplicate_window=60.0)
        for i in range(1, 6):
            await js.publish(f"dd.{i}", f"v{i}".encode(), headers={"Nats-Msg-Id": f"id-{i}"})
        await js.publish("dd.x", b"no id")
        await js.publish("dd.6", b"v6", headers={"Nats-Msg-Id": "id-6"})
        if IS_NATS_SERVER:
            await asyncio.sleep(0.5)  # 2.9.10 syncs on a timer
    first.kill()
    first.terminate()

    second = server_factory(args=args)
    async with jsconn(second) as (nc, js):
        again = await js.publish("dd.3", b"again", headers={"Nats-Msg-Id": "id-3"})
        assert (again.seq, again.duplicate) == (3, True)
        last = await js.publish("dd.7", b"v7", headers={"Nats-Msg-Id": "id-7",
                                                        "Nats-Expected-Last-Msg-Id": "id-6"})
        assert (last.seq, last.duplicate) == (8, None)
        with pytest.raises(nats.js.errors.BadRequestError) as e:
            await js.publish("dd.8", b"v8", headers={"Nats-Expected-Last-Msg-Id": "id-6"})
        assert e.value.err_code == 10070


@async_test(timeout=60)
async def test_durability_after_sigkill(server_factory, tmp_path):
    args = js_args(tmp_path, "durable-store")
    first = server_factory(args=args)
    n = 500
    async with jsconn(first) as (nc, js):
        await js.add_stream(name="DUR", subjects=["dur.>"], storage="file")
        acks = [await js.publish(f"dur.{i % 5}", f"{i}".encode()) for i in range(1, n + 1)]
        assert [a.seq for a in acks] == list(range(1, n + 1))
        sub = await js.pull_subscribe("dur.>", durable="reader")
        msgs = await sub.fetch(100, timeout=5)
        assert [m.metadata.sequence.stream for m in msgs] == list(range(1, 101))
        for m in msgs:
            await m.ack_sync()
        ci = await js.consumer_info("DUR", "reader")
        assert (ci.ack_floor.stream_seq, ci.num_ack_pending, ci.num_pending) == (100, 0, 400)
        if IS_NATS_SERVER:
            # nats-server 2.9.10 writes consumer state (acks) lazily: killed within a few ms of
            # the last +ACK it comes back with ack_floor 0 and 100 acks pending (the stream's
            # messages do survive). Give it a moment. Junction gets no such grace.
            await asyncio.sleep(0.5)
    first.kill()
    first.terminate()  # records the exit status so the fixture does not expect a clean stop

    second = server_factory(args=args)
    async with jsconn(second) as (nc, js):
        st = await state(js, "DUR")
        assert (st.messages, st.first_seq, st.last_seq) == (n, 1, n)
        ci = await js.consumer_info("DUR", "reader")
        assert (ci.ack_floor.stream_seq, ci.ack_floor.consumer_seq) == (100, 100)
        assert (ci.delivered.stream_seq, ci.num_ack_pending, ci.num_pending) == (100, 0, 400)
        sub = await js.pull_subscribe("dur.>", durable="reader")
        msgs = await sub.fetch(10, timeout=3)
        assert [m.metadata.sequence.stream for m in msgs] == list(range(101, 111))
        assert [m.data for m in msgs] == [str(i).encode() for i in range(101, 111)]
        assert all(m.metadata.num_delivered == 1 for m in msgs)
        assert (await js.get_msg("DUR", n)).data == str(n).encode()
        # Sequences continue after the restart.
        assert (await js.publish("dur.x", b"next")).seq == n + 1
