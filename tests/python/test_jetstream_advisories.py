"""JetStream's advisories and metrics (`$JS.EVENT.*`), in the account, as applications use
them: dead-letter handling on `MAX_DELIVERIES`, `MSG_TERMINATED` and `MSG_NAKED`, stream and
consumer actions, and sampled acknowledgements (`sample_freq`).

Every expectation here is nats-server 2.9.10's; the tests pass against it too:

    JUNCTION_BIN=/usr/sbin/nats-server JUNCTION_EXPECT_EXIT=1 \\
        .venv/bin/python -m pytest tests/python/test_jetstream_advisories.py
"""

from __future__ import annotations

import asyncio
import json

import nats.errors
import pytest
from nats.js import api
from nats.js.errors import APIError

from conftest import Clients, async_test

PREFIX = "io.nats.jetstream."


def js_args(tmp_path) -> list:
    store = tmp_path / "js"
    store.mkdir(exist_ok=True)
    return ["-js", "-sd", str(store)]


class Events:
    """What arrives on a subject (with wildcards), decoded."""

    def __init__(self):
        self.got: list = []

    async def cb(self, m):
        self.got.append((m.subject, json.loads(m.data)))

    async def wait(self, n: int, timeout: float = 5.0) -> list:
        for _ in range(int(timeout / 0.05)):
            if len(self.got) >= n:
                break
            await asyncio.sleep(0.05)
        return self.got


async def listening(c: Clients, *subjects: str):
    """A connection, its JetStream context, and what arrives on ``subjects``."""
    nc = await c.connect()
    events = Events()
    for s in subjects:
        await nc.subscribe(s, cb=events.cb)
    await nc.flush()
    return nc, nc.jetstream(), events


def check_event(body: dict, kind: str) -> None:
    assert body["type"] == PREFIX + kind
    assert body["id"] and body["timestamp"].endswith("Z")


@async_test(timeout=60)
async def test_dead_letters_terminations_and_naks_are_advised(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc, js, events = await listening(c, "$JS.EVENT.ADVISORY.CONSUMER.>")
        await js.add_stream(name="ORDERS", subjects=["orders.>"])
        sub = await js.pull_subscribe("orders.>", durable="worker",
                                      config=api.ConsumerConfig(max_deliver=2, ack_wait=30))
        await js.publish("orders.1", b"poison")
        for _ in range(2):
            [m] = await sub.fetch(1, timeout=2)
            await m.nak()
        # The third attempt finds the message past max_deliver: nothing, and an advisory.
        try:
            await sub.fetch(1, timeout=1)
        except nats.errors.TimeoutError:
            pass
        await js.publish("orders.2", b"bad")
        [m] = await sub.fetch(1, timeout=2)
        await m.term()
        got = await events.wait(5)
        by_subject = {}
        for subject, body in got:
            by_subject.setdefault(subject, []).append(body)

        [created] = by_subject["$JS.EVENT.ADVISORY.CONSUMER.CREATED.ORDERS.worker"]
        check_event(created, "advisory.v1.consumer_action")
        assert (created["stream"], created["consumer"], created["action"]) == ("ORDERS", "worker", "create")

        naks = by_subject["$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.ORDERS.worker"]
        for body in naks:
            check_event(body, "advisory.v1.nak")
        assert [(n["stream_seq"], n["consumer_seq"], n["deliveries"]) for n in naks] == [(1, 1, 1), (1, 2, 2)]

        [dead] = by_subject["$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.ORDERS.worker"]
        check_event(dead, "advisory.v1.max_deliver")
        assert (dead["stream"], dead["consumer"], dead["stream_seq"], dead["deliveries"]) == (
            "ORDERS", "worker", 1, 2)

        [term] = by_subject["$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.ORDERS.worker"]
        check_event(term, "advisory.v1.terminated")
        assert (term["stream_seq"], term["consumer_seq"], term["deliveries"]) == (2, 3, 1)
        # The dead letter is still in the stream, for whoever handles it.
        assert (await js.get_msg("ORDERS", dead["stream_seq"])).data == b"poison"


@async_test(timeout=60)
async def test_stream_and_consumer_actions_are_advised(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc, js, events = await listening(c, "$JS.EVENT.ADVISORY.STREAM.>", "$JS.EVENT.ADVISORY.CONSUMER.>")
        await js.add_stream(name="S", subjects=["s"])
        await js.update_stream(api.StreamConfig(name="S", subjects=["s"], max_msgs=10))
        await js.add_consumer("S", durable_name="d")
        await js.delete_consumer("S", "d")
        await js.delete_stream("S")
        got = await events.wait(5)
        seen = [(s, b["type"][len(PREFIX):], b.get("action")) for s, b in got]
        assert seen == [
            ("$JS.EVENT.ADVISORY.STREAM.CREATED.S", "advisory.v1.stream_action", "create"),
            ("$JS.EVENT.ADVISORY.STREAM.UPDATED.S", "advisory.v1.stream_action", "modify"),
            ("$JS.EVENT.ADVISORY.CONSUMER.CREATED.S.d", "advisory.v1.consumer_action", "create"),
            ("$JS.EVENT.ADVISORY.CONSUMER.DELETED.S.d", "advisory.v1.consumer_action", "delete"),
            ("$JS.EVENT.ADVISORY.STREAM.DELETED.S", "advisory.v1.stream_action", "delete"),
        ], seen
        for _, body in got:
            assert body["stream"] == "S" and body["id"]


@async_test(timeout=60)
async def test_sampled_acknowledgements_are_measured(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc, js, events = await listening(c, "$JS.EVENT.METRIC.CONSUMER.ACK.>")
        await js.add_stream(name="M", subjects=["m"])
        sampled = await js.pull_subscribe("m", durable="all", config=api.ConsumerConfig(sample_freq="100%"))
        quiet = await js.pull_subscribe("m", durable="none")
        for i in range(3):
            await js.publish("m", str(i).encode())
        for m in await sampled.fetch(3, timeout=2):
            await asyncio.sleep(0.01)
            await m.ack()
        for m in await quiet.fetch(3, timeout=2):
            await m.ack()
        got = await events.wait(3)
        await asyncio.sleep(0.3)
        assert [s for s, _ in got] == ["$JS.EVENT.METRIC.CONSUMER.ACK.M.all"] * 3
        for i, (_, body) in enumerate(got):
            check_event(body, "metric.v1.consumer_ack")
            assert (body["stream_seq"], body["consumer_seq"], body["deliveries"]) == (i + 1, i + 1, 1)
            assert body["ack_time"] > 0
        with pytest.raises(APIError) as e:
            await js.add_consumer("M", durable_name="bad", sample_freq="often")
        assert (e.value.code, e.value.err_code) == (400, 10095)
        assert e.value.description == ('failed to parse consumer sampling configuration: '
                                       'strconv.Atoi: parsing "often": invalid syntax')


@async_test(timeout=60)
async def test_api_requests_are_audited_with_their_client(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        _, _, events = await listening(c, "$JS.EVENT.ADVISORY.API")
        nc = await c.connect()
        js = nc.jetstream()
        await js.add_stream(name="S", subjects=["s"])
        with pytest.raises(APIError):
            await js.stream_info("MISSING")
        await js.publish("s", b"x")
        sub = await js.pull_subscribe("s", durable="d")
        await sub.fetch(1, timeout=2)
        got = await events.wait(4)
        await asyncio.sleep(0.3)
        audits = [body for _, body in events.got]
        # One per API request: stream create, the failed info, consumer create (and the
        # info nats-py asks first). Pull requests and publications are not audited.
        subjects = [a["subject"] for a in audits]
        assert subjects[:2] == ["$JS.API.STREAM.CREATE.S", "$JS.API.STREAM.INFO.MISSING"], subjects
        assert "$JS.API.CONSUMER.DURABLE.CREATE.S.d" in subjects or \
            "$JS.API.CONSUMER.CREATE.S.d" in subjects or "$JS.API.CONSUMER.CREATE.S.d.s" in subjects, subjects
        assert not [s for s in subjects if ".MSG.NEXT." in s], subjects
        create, missing = audits[0], audits[1]
        for a in audits:
            check_event(a, "advisory.v1.api_audit")
            assert a["server"]
        # The request as sent and the response as answered.
        assert json.loads(create["request"])["name"] == "S"
        assert json.loads(create["response"])["config"]["name"] == "S"
        assert json.loads(missing["response"])["error"]["err_code"] == 10059
        # Who asked: what nats-server tells without the account's opt-in to share more (its
        # account, round trip and server; not its name, host or user).
        client = create["client"]
        assert client["acc"] == "$G"
        assert client["server"] == create["server"]
        assert set(client) <= {"acc", "rtt", "server"}, client
        assert len(got) >= 4
