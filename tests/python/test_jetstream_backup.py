"""Stream snapshots and restores, driven the way the ``nats`` CLI's ``stream backup`` and
``stream restore`` drive them (jsm.go's exchange, with nats-py): the snapshot request names an
inbox, the chunks that come there are answered one by one, an empty message ends them; the
restore request names the config, its answer names where the chunks go, each chunk is a
request, and an empty one ends the upload with a stream create response.

A snapshot is only ever restored into the server that kind made it: nats-server's hold its file
store's files, Junction's its own records. Both kinds pass this file:

    JUNCTION_BIN=/usr/sbin/nats-server JUNCTION_EXPECT_EXIT=1 \\
        .venv/bin/python -m pytest tests/python/test_jetstream_backup.py

Where nats-server 2.9.10 differs (no status on the last chunk, no flow-control timeout, no
snapshots of memory streams), the test says so.
"""

from __future__ import annotations

import asyncio
import json
import os

import nats

from conftest import IS_NATS_SERVER, Clients, async_test
from test_jetstream_config import ask, js_args

CHUNK = 64 * 1024


async def backup(nc, stream: str, answer: bool = True, **req) -> tuple[dict, bytes, str | None, int]:
    """Snapshot ``stream``: (the answer, the data, the last message's status, chunks)."""
    inbox = nc.new_inbox()
    resp = await ask(nc, f"$JS.API.STREAM.SNAPSHOT.{stream}", {"deliver_subject": inbox, **req})
    if "error" in resp:
        return resp, b"", None, 0
    # As jsm.go does: the inbox is subscribed once the answer is in.
    sub = await nc.subscribe(inbox)
    data = bytearray()
    chunks = 0
    while True:
        msg = await sub.next_msg(timeout=10)
        if not msg.data:
            await sub.unsubscribe()
            return resp, bytes(data), (msg.headers or {}).get("Status"), chunks
        chunks += 1
        data += msg.data
        assert msg.reply, "every chunk asks for an answer"
        if answer:
            await nc.publish(msg.reply, b"")


async def restore(nc, stream: str, meta: dict, data: bytes) -> dict:
    """Restore ``data`` as ``stream``; the final stream create response."""
    resp = await ask(nc, f"$JS.API.STREAM.RESTORE.{stream}", {"config": meta["config"], "state": meta["state"]})
    assert "error" not in resp, resp
    assert resp["type"] == "io.nats.jetstream.api.v1.stream_restore_response"
    deliver = resp["deliver_subject"]
    for i in range(0, len(data), CHUNK):
        r = await nc.request(deliver, data[i:i + CHUNK], timeout=5)
        if r.data:
            return json.loads(r.data)
    final = await nc.request(deliver, b"", timeout=30)
    return json.loads(final.data)


def rnd(n: int) -> bytes:
    return os.urandom(n)


@async_test(timeout=90)
async def test_a_backup_restores_messages_sequences_and_consumers(server_factory, tmp_path):
    args = js_args(tmp_path)
    srv = server_factory(args=args)
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="S", subjects=["s.>"])
        sent = {}
        for i in range(1, 301):
            payload = rnd(200_000) if i == 150 else f"m{i}".encode()
            headers = {"K": str(i)} if i % 3 == 0 else None
            ack = await js.publish(f"s.{i % 7}", payload, headers=headers)
            sent[ack.seq] = (f"s.{i % 7}", payload, headers)
        for seq in (10, 11, 299):
            assert (await ask(nc, "$JS.API.STREAM.MSG.DELETE.S", {"seq": seq}))["success"]
            del sent[seq]
        # A durable part way through: 50 delivered, 40 of them acknowledged.
        psub = await js.pull_subscribe("s.>", durable="C")
        msgs = await psub.fetch(50, timeout=5)
        for m in msgs[:40]:
            await m.ack_sync()
        before = await js.consumer_info("S", "C")
        info = await js.stream_info("S")

        meta, data, status, chunks = await backup(nc, "S", chunk_size=CHUNK)
        assert meta["type"] == "io.nats.jetstream.api.v1.stream_snapshot_response"
        assert meta["config"]["name"] == "S"
        assert meta["state"]["messages"] == 297 and meta["state"]["last_seq"] == 300
        assert chunks > 1 and len(data) > 200_000
        # 2.9.10 ends without a status; 2.10 and Junction say 204.
        assert status == (None if IS_NATS_SERVER else "204")

        await js.delete_stream("S")
        done = await restore(nc, "S", meta, data)
        assert done["type"] == "io.nats.jetstream.api.v1.stream_create_response", done
        assert "error" not in done, done
        st = done["state"]
        assert (st["messages"], st["first_seq"], st["last_seq"]) == (297, 1, 300), st
        assert st["num_deleted"] == 3 and st["bytes"] == info.state.bytes, st

        # A name in use cannot be restored over.
        again = await ask(nc, "$JS.API.STREAM.RESTORE.S", {"config": meta["config"]})
        assert (again["error"]["code"], again["error"]["err_code"]) == (400, 10130), again

    # What was restored is as durable as anything stored: it survives a restart.
    srv.terminate()
    srv = server_factory(args=args)
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        for seq, (subject, payload, headers) in sent.items():
            m = await js.get_msg("S", seq)
            assert (m.subject, m.data) == (subject, payload), seq
            assert (m.headers or {}).get("K") == (headers or {}).get("K"), seq
        for seq in (10, 11, 299):
            r = await ask(nc, "$JS.API.STREAM.MSG.GET.S", {"seq": seq})
            assert r["error"]["err_code"] == 10037, r
        after = await js.consumer_info("S", "C")
        # 10 and 11 were deleted: 40 acknowledged end at 42, 50 delivered at 52.
        assert after.ack_floor.stream_seq == before.ack_floor.stream_seq == 42
        assert after.delivered.stream_seq == before.delivered.stream_seq == 52
        assert after.num_ack_pending == before.num_ack_pending == 10
        assert after.num_pending == before.num_pending
        # Nothing acknowledged comes again. Junction redelivers what was pending at once after
        # a restart; nats-server 2.9.10 once its ack_wait runs out, and sends the rest first.
        psub = await js.pull_subscribe("s.>", durable="C")
        got = [m.metadata.sequence.stream for m in await psub.fetch(20, timeout=5)]
        assert min(got) > 42, got
        if not IS_NATS_SERVER:
            assert got[:10] == list(range(43, 53)), got
        # The stream goes on from its last sequence.
        assert (await js.publish("s.new", b"x")).seq == 301


@async_test(timeout=60)
async def test_backups_without_consumers_and_of_an_empty_stream(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        events = []

        async def advisory(m):
            events.append((m.subject, json.loads(m.data)))

        adv = await nc.subscribe("$JS.EVENT.ADVISORY.STREAM.>", cb=advisory)
        await js.add_stream(name="E", subjects=["e"])
        await js.add_stream(name="I", subjects=["i"])
        await js.publish("i", b"1", headers={"Nats-Msg-Id": "one"})
        for _ in range(5):
            await js.publish("e", b"x")
        await js.purge_stream("E")
        await js.pull_subscribe("e", durable="D")
        meta, data, _, _ = await backup(nc, "E", no_consumers=True)
        await js.delete_stream("E")
        done = await restore(nc, "E", meta, data)
        assert "error" not in done, done
        st = done["state"]
        assert (st["messages"], st["first_seq"], st["last_seq"]) == (0, 6, 5), st
        assert st["consumer_count"] == 0
        assert (await js.publish("e", b"y")).seq == 6
        # Each step is told as nats-server tells it.
        await asyncio.sleep(0.2)
        told = [(subject, e["type"]) for subject, e in events if "SNAPSHOT" in subject or "RESTORE" in subject]
        kinds = "io.nats.jetstream.advisory.v1."
        assert told == [
            ("$JS.EVENT.ADVISORY.STREAM.SNAPSHOT_CREATE.E", kinds + "snapshot_create"),
            ("$JS.EVENT.ADVISORY.STREAM.SNAPSHOT_COMPLETE.E", kinds + "snapshot_complete"),
            ("$JS.EVENT.ADVISORY.STREAM.RESTORE_CREATE.E", kinds + "restore_create"),
            ("$JS.EVENT.ADVISORY.STREAM.RESTORE_COMPLETE.E", kinds + "restore_complete"),
        ], told
        complete = next(e for subject, e in events if "RESTORE_COMPLETE" in subject)
        assert complete["stream"] == "E" and complete["bytes"] == len(data) and complete["client"]["acc"]
        await adv.unsubscribe()
        # A restored stream knows the message ids of its duplicate window.
        meta, data, _, _ = await backup(nc, "I")
        await js.delete_stream("I")
        assert "error" not in await restore(nc, "I", meta, data)
        again = await js.publish("i", b"1", headers={"Nats-Msg-Id": "one"})
        assert (again.seq, again.duplicate) == (1, True)


@async_test(timeout=60)
async def test_snapshot_and_restore_requests_refused(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="R", subjects=["r"])
        await js.publish("r", b"1")

        def err(r):
            return (r["error"]["code"], r["error"]["err_code"])

        snap = "$JS.API.STREAM.SNAPSHOT."
        assert err(await ask(nc, snap + "NOPE", {"deliver_subject": "x"})) == (404, 10059)
        assert err(await ask(nc, snap + "R", b"")) == (400, 10003)
        assert err(await ask(nc, snap + "R", b"{nope")) == (400, 10025)
        for bad in ("", "a..b", "a b"):
            r = await ask(nc, snap + "R", {"deliver_subject": bad})
            assert err(r) == (400, 10015) and r["error"]["description"] == "deliver subject not valid", r

        rest = "$JS.API.STREAM.RESTORE."
        assert err(await ask(nc, rest + "R2", b"")) == (400, 10003)
        assert err(await ask(nc, rest + "R2", b"{nope")) == (400, 10025)
        r = await ask(nc, rest + "R", {"config": {"name": "R", "subjects": ["r"]}})
        assert err(r) == (400, 10130) and r["error"]["description"] == "stream name already in use, cannot restore"

        # Data that is no snapshot fails the restore as a whole, and leaves no stream.
        meta, data, _, _ = await backup(nc, "R")
        done = await restore(nc, "R9", {"config": {**meta["config"], "name": "R9", "subjects": ["r9"]},
                                        "state": meta["state"]}, b"\x00" * 100 + data[100:])
        assert err(done) == (500, 10062), done
        if not IS_NATS_SERVER:
            assert done["error"]["description"].startswith("restore failed: "), done
        info = await ask(nc, "$JS.API.STREAM.INFO.R9", b"")
        assert err(info) == (404, 10059), info
        # A snapshot cut short is refused alike.
        done = await restore(nc, "R8", {"config": {**meta["config"], "name": "R8", "subjects": ["r8"]},
                                        "state": meta["state"]}, data[: len(data) // 2])
        assert err(done) == (500, 10062), done


@async_test(timeout=60)
async def test_a_snapshot_nobody_answers_ends_with_no_flow_response(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="F", subjects=["f"])
        # More than the 8 MiB window, in data that does not compress.
        for _ in range(10):
            await js.publish("f", rnd(900_000))
        meta, data, status, chunks = await backup(nc, "F", answer=False)
        if IS_NATS_SERVER:
            # 2.9.10 waits 10 ms for an answer and sends on regardless: all of it comes.
            assert status is None and len(data) > 9_000_000
        else:
            assert status == "408", status
            assert 8 * 1024 * 1024 <= len(data) < 9_000_000, len(data)


@async_test(timeout=60)
async def test_memory_streams_back_up_too(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="M", subjects=["m.*"], storage="memory")
        for i in range(20):
            await js.publish(f"m.{i % 4}", f"v{i}".encode())
        meta, data, status, _ = await backup(nc, "M")
        if IS_NATS_SERVER:
            # nats-server's memory store has no snapshots.
            assert meta["error"]["err_code"] == 10064, meta
            return
        assert status == "204"
        await js.delete_stream("M")
        done = await restore(nc, "M", meta, data)
        assert "error" not in done and done["config"]["storage"] == "memory", done
        assert done["state"]["messages"] == 20
        assert (await js.get_last_msg("M", "m.3")).data == b"v19"


@async_test(timeout=60)
async def test_a_restore_nobody_feeds_is_dropped(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        resp = await ask(nc, "$JS.API.STREAM.RESTORE.Z", {"config": {"name": "Z", "subjects": ["z"]}})
        deliver = resp["deliver_subject"]
        assert deliver.startswith("$JS.SNAPSHOT.RESTORE.Z.")
        await nc.request(deliver, b"some", timeout=5)
        # Five seconds without a chunk drop it: nobody answers there any more.
        await asyncio.sleep(6)
        try:
            await nc.request(deliver, b"more", timeout=1)
            raise AssertionError("the dropped restore still answered")
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            pass
        # And the name is free again.
        again = await ask(nc, "$JS.API.STREAM.RESTORE.Z", {"config": {"name": "Z", "subjects": ["z"]}})
        assert "error" not in again, again


# ---- Junction's snapshot data, written here to try what a crafted upload can do ----

def _crc32c_table() -> list:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    c ^= 0xFFFFFFFF
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def snappy_framed(raw: bytes) -> bytes:
    """``raw`` in the Snappy framing format, as uncompressed chunks."""
    out = bytearray(b"\xff\x06\x00\x00sNaPpY")
    for i in range(0, len(raw), 65536):
        piece = raw[i:i + 65536]
        out += bytes([1]) + (len(piece) + 4).to_bytes(3, "little")
        out += _masked_crc32c(piece).to_bytes(4, "little") + piece
    return bytes(out)


def snapshot_data(meta: dict, msgs=(), consumers=()) -> bytes:
    """A Junction snapshot: ``msgs`` as (seq, subject, headers or None, payload)."""
    def record(kind: int, body: bytes) -> bytes:
        return bytes([kind]) + len(body).to_bytes(4, "little") + body

    raw = bytearray(b"JUNCTION STREAM SNAPSHOT 1\n")
    raw += record(1, json.dumps(meta).encode())
    for seq, subject, headers, payload in msgs:
        hdr = b"" if headers is None else headers
        body = seq.to_bytes(8, "little") + (1000).to_bytes(8, "little")
        body += len(subject).to_bytes(4, "little") + subject
        body += (0 if headers is None else len(hdr) + 1).to_bytes(4, "little") + hdr + payload
        raw += record(2, body)
    for name, rec in consumers:
        raw += record(3, json.dumps({"name": name, "record": rec}).encode())
    raw += record(4, len(msgs).to_bytes(8, "little"))
    return snappy_framed(bytes(raw))


@async_test(timeout=60)
async def test_crafted_snapshots_are_refused_whole(server_factory, tmp_path):
    if IS_NATS_SERVER:
        import pytest
        pytest.skip("Junction's snapshot data")
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        cfg = {"name": "X", "subjects": ["x.>"], "storage": "file"}
        ok_msg = (1, b"x.1", None, b"fine")
        consumer = {"config": {"durable_name": "C", "ack_policy": "explicit", "deliver_policy": "all",
                               "ack_wait": 30 * 10**9, "max_deliver": -1, "replay_policy": "instant"},
                    "created": 1, "delivered": [1, 1], "ack_floor": [0, 0], "next": 2,
                    "pending": [[1, 1]]}
        one = {"first_seq": 1, "last_seq": 1}
        bad_msg = "message 1 is not valid"
        bad_c = 'consumer "C" is not valid'
        cases = [
            ("a span of 2^40 sequences (gaps cost memory)", "spans more than",
             snapshot_data({"first_seq": 1, "last_seq": 2**40}, [ok_msg, (2**40, b"x.2", None, b"far")])),
            ("a last sequence at the end of u64", "first and last sequences are not valid",
             snapshot_data({"first_seq": 2**64 - 1, "last_seq": 2**64 - 1})),
            ("a subject that would inject protocol", bad_msg,
             snapshot_data(one, [(1, b"x.a 1 4\r\nPING", None, b"evil")])),
            ("a wildcard subject", bad_msg, snapshot_data(one, [(1, b"x.*", None, b"")])),
            ("a subject longer than the store keeps", bad_msg,
             snapshot_data(one, [(1, b"x." + b"a" * 70_000, None, b"")])),
            ("a header block that is none", bad_msg, snapshot_data(one, [(1, b"x.1", b"garbage", b"")])),
            ("messages out of order", "message 2 is out of order",
             snapshot_data({"first_seq": 1, "last_seq": 5}, [(3, b"x.1", None, b""), (2, b"x.1", None, b"")])),
            ("a message past the last sequence", "message 2 is out of order",
             snapshot_data(one, [(2, b"x.1", None, b"")])),
            ("a consumer delivering into the stream (a loop)", "consumer P: consumer deliver subject forms a cycle",
             snapshot_data(one, [ok_msg],
                           [("P", {**consumer, "config": {**consumer["config"], "durable_name": "P",
                                                          "deliver_subject": "x.loop"}})])),
            ("a consumer past the stream's end", bad_c,
             snapshot_data(one, [ok_msg], [("C", {**consumer, "delivered": [9, 9]})])),
            ("a consumer with 2^64-1 deliveries pending", bad_c,
             snapshot_data(one, [ok_msg], [("C", {**consumer, "pending": [[1, 2**64 - 1]]})])),
            ("a consumer redelivered 2^64-1 times", bad_c,
             snapshot_data(one, [ok_msg], [("C", {**consumer, "redelivered": 2**64 - 1})])),
            ("a consumer under another's name", 'consumer "D" is not valid',
             snapshot_data(one, [ok_msg], [("D", consumer)])),
            ("the same consumer twice", bad_c,
             snapshot_data(one, [ok_msg], [("C", consumer), ("C", consumer)])),
        ]
        for what, why, data in cases:
            done = await restore(nc, "X", {"config": cfg, "state": {}}, data)
            err = done.get("error", {})
            assert err.get("err_code") == 10062 and why in err.get("description", ""), (what, done)
            info = await ask(nc, "$JS.API.STREAM.INFO.X", b"")
            assert info["error"]["err_code"] == 10059, (what, info)
        # Nothing of them is counted against the account.
        usage = await ask(nc, "$JS.API.INFO", b"")
        assert (usage["streams"], usage["storage"], usage["memory"]) == (0, 0, 0), usage

        # The same consumer, once and sound, restores: what was pending comes again.
        good = snapshot_data({"first_seq": 1, "last_seq": 1}, [ok_msg], [("C", consumer)])
        done = await restore(nc, "X", {"config": cfg, "state": {}}, good)
        assert "error" not in done and done["state"]["consumer_count"] == 1, done
        psub = await js.pull_subscribe("x.>", durable="C")
        m = (await psub.fetch(1, timeout=5))[0]
        assert (m.data, m.metadata.num_delivered) == (b"fine", 2)
