"""Stream and consumer configurations as nats-server 2.10 checks them: the defaults it fills
in, the error of the first check that fails (clients match on ``err_code``, people read the
description), and what an update may change.

Each case is a raw API request and the answer it must get. Most are nats-server 2.9.10's as
well, and the file passes against it:

    JUNCTION_BIN=/usr/sbin/nats-server JUNCTION_EXPECT_EXIT=1 \\
        .venv/bin/python -m pytest tests/python/test_jetstream_config.py

Where 2.10 (which Junction follows) answers otherwise, the case says what 2.9.10 answers, so the
same file checks both.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import IS_NATS_SERVER, Clients, async_test

SECOND = 1_000_000_000
MS = SECOND // 1000
INVALID = (500, 10052)


def js_args(tmp_path) -> list:
    store = tmp_path / "js"
    store.mkdir(exist_ok=True)
    return ["-js", "-sd", str(store)]


async def ask(nc, subject: str, body) -> dict:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return json.loads((await nc.request(subject, data, timeout=3)).data)


def answered(resp: dict, want):
    """``want``: (code, err_code, description) for an error, or a dict of config fields."""
    if isinstance(want, tuple):
        e = resp.get("error")
        assert e, resp
        assert (e["code"], e["err_code"], e["description"]) == want
    else:
        assert "error" not in resp, resp
        for k, v in want.items():
            assert resp["config"].get(k) == v, (k, resp["config"])


async def check_cases(nc, cases) -> None:
    """Sends each case's request and checks its answer, naming the case that failed."""
    for (subject, body), want in cases:
        resp = await ask(nc, subject, body)
        try:
            answered(resp, want)
        except AssertionError as e:
            raise AssertionError(f"{subject} {json.dumps(body)[:120]}: {e}") from None


def which(v210, v29="same"):
    """What 2.10 answers, or 2.9.10's own answer when testing against it."""
    return v210 if not IS_NATS_SERVER or v29 == "same" else v29


def stream(name: str, **cfg) -> tuple:
    return (f"$JS.API.STREAM.CREATE.{name}", {"name": name, **cfg})


STREAM_CASES = [
    # The duplicate window copies a negative max age, and is then refused.
    (stream("A1", max_age=-1), which((*INVALID, "duplicates window can not be negative"))),
    (stream("A2", max_age=50 * MS), which((*INVALID, "max age needs to be >= 100ms"))),
    (stream("A3", duplicate_window=50 * MS), which((*INVALID, "duplicates window needs to be >= 100ms"))),
    (stream("A4", subjects=["a4.*.>", "a4.x.y"]), which((*INVALID, 'subject "a4.*.>" overlaps with "a4.x.y"'))),
    (stream("A5", subjects=["$JS.API.a5"]),
     which((*INVALID, "subjects that overlap with jetstream api require no-ack to be true"),
           v29=(*INVALID, "subjects overlap with jetstream api"))),
    (stream("A6", subjects=["a6"], sealed=True), which((*INVALID, "stream configuration for create can not be sealed"))),
    (stream("A7", subjects=["a7"], deny_purge=True, allow_rollup_hdrs=True),
     which((*INVALID, "roll-ups require the purge permission"))),
    (stream("A8", subjects=["a8"], mirror={"name": "A9"}), which((400, 10034, "stream mirrors can not contain subjects"))),
    (stream("A9", mirror={"name": "X"}, sources=[{"name": "Y"}]),
     which((400, 10031, "stream mirrors can not also contain other sources"))),
    (stream("A10", subjects=["a10"], republish={"src": "a10", "dest": "a10"}),
     which((*INVALID, "stream configuration for republish destination forms a cycle"))),
    (stream("A11", subjects=["a11"], mirror_direct=True),
     which((*INVALID, "stream has no mirror but does have mirror direct"))),
    (stream("A12", subjects=["a12"], discard="new", discard_new_per_subject=True),
     which((*INVALID, "discard new per subject requires max msgs per subject > 0"))),
    (stream("A13", subjects=["a13"], num_replicas=-1), which((400, 10133, "replicas count cannot be negative"))),
    (stream("A14", subjects=["a14"], num_replicas=7), which((*INVALID, "maximum replicas is 5"))),
    (("$JS.API.STREAM.CREATE.A15", {"subjects": ["a15"]}),
     which((400, 10056, "stream name in subject does not match request"))),
    (stream("A16", subjects=["a16"], description="d" * 4097),
     which((*INVALID, "stream description is too long, maximum allowed is 4096"))),
    (stream("N" * 256, subjects=["a19"]), which((*INVALID, "stream name is too long, maximum allowed is 255"))),
    # nats-server 2.10's subject transforms of a source (2.9.10 ignores them).
    (stream("A20", sources=[{"name": "X", "subject_transforms": [{"src": "a..b", "dest": "x"}]}]),
     which((400, 10145, "source subject filter is invalid"), v29={"name": "A20"})),
    (stream("A21", sources=[{"name": "X", "subject_transforms": [{"src": "a.*", "dest": "x.{{wildcard(3)}}"}]}]),
     which((400, 10146, "source transform destination is invalid"), v29={"name": "A21"})),
    # A mirror has no duplicate window; a stream's follows a shorter max age.
    (stream("A17", mirror={"name": "ORIGIN"}), which({"duplicate_window": None, "max_msgs": -1})),
    (stream("A18", subjects=["a18"], max_age=SECOND), which({"duplicate_window": SECOND})),
]


@async_test(timeout=60)
async def test_stream_configurations_are_checked_in_nats_servers_order(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        await check_cases(nc, STREAM_CASES)


@async_test(timeout=60)
async def test_stream_creates_and_updates(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        body = {"name": "U", "subjects": ["u.>"], "retention": "limits", "max_consumers": 5}
        first = await ask(nc, "$JS.API.STREAM.CREATE.U", body)
        again = await ask(nc, "$JS.API.STREAM.CREATE.U", body)
        # The same create again succeeds, and a single server says it created.
        assert first["did_create"] is True and again["did_create"] is True
        update = "$JS.API.STREAM.UPDATE.U"
        answered(await ask(nc, update, {**body, "max_consumers": 6}),
                 (*INVALID, "stream configuration update can not change MaxConsumers"))
        answered(await ask(nc, update, {**body, "retention": "workqueue"}),
                 which((*INVALID, "stream configuration update can not change retention policy to/from workqueue"),
                       v29=(*INVALID, "stream configuration update can not change retention policy")))
        if not IS_NATS_SERVER:
            # 2.10 allows limits to interest and back (2.9.10 allowed no change).
            answered(await ask(nc, update, {**body, "retention": "interest"}), {"retention": "interest"})
        await ask(nc, "$JS.API.STREAM.CREATE.M", {"name": "M", "mirror": {"name": "U"}})
        answered(await ask(nc, "$JS.API.STREAM.UPDATE.M", {"name": "M", "mirror": {"name": "OTHER"}}),
                 (400, 10055, "stream mirror configuration can not be updated"))
        # Sealing a stream makes it keep everything, as it is.
        sealed = await ask(nc, update, {**body, "retention": "limits", "sealed": True, "max_age": 3600 * SECOND})
        answered(sealed, {"sealed": True, "max_age": 0, "discard": "new", "deny_delete": True, "deny_purge": True})


def consumer(stream: str, name: str | None = None, kind: str = "DURABLE.CREATE", **cfg) -> tuple:
    if name:
        cfg["durable_name"] = name
        subject = f"$JS.API.CONSUMER.{kind}.{stream}.{name}"
    else:
        subject = f"$JS.API.CONSUMER.CREATE.{stream}"
    return subject, {"stream_name": stream, "config": cfg}


CONSUMER_CASES = [
    (consumer("C", "c1", deliver_subject="ds1", max_waiting=5),
     which((400, 10080, "consumer in push mode can not set max waiting"))),
    (consumer("C", "c2", deliver_subject="ds2", idle_heartbeat=50 * MS),
     which((400, 10083, "consumer idle heartbeat needs to be >= 100ms"))),
    (consumer("C", "c3", max_waiting=-1), which((400, 10087, "consumer max waiting needs to be positive"))),
    (consumer("C", "c4", max_batch=-1), which((400, 10114, "consumer max request batch needs to be > 0"))),
    (consumer("C", "c5", max_expires=MS // 2), which((400, 10115, "consumer max request expires needs to be >= 1ms"))),
    (consumer("C", "c6", deliver_subject="ds6", ack_policy="none", max_ack_pending=5),
     which((400, 10082, "consumer requires ack policy for max ack pending"))),
    (consumer("C", "c7", deliver_subject="ds7.*"), which((400, 10079, "consumer deliver subject has wildcards"))),
    (consumer("C", "c8", deliver_subject="c.x"), which((400, 10081, "consumer deliver subject forms a cycle"))),
    (consumer("C", "c9", deliver_policy="last_per_subject"),
     which((400, 10094, "consumer delivery policy is deliver last per subject, but optional filter subject is not set"))),
    (consumer("C", "c10", deliver_policy="all", opt_start_seq=5),
     which((400, 10094, "consumer delivery policy is deliver all, but optional start sequence is also set"))),
    (consumer("C", "c11", deliver_policy="by_start_sequence", opt_start_seq=1, opt_start_time="2026-01-01T00:00:00Z"),
     which((400, 10094, "consumer delivery policy is deliver by start sequence, but optional start time is also set"))),
    (consumer("C", "c12", sample_freq="abc"),
     which((400, 10095, 'failed to parse consumer sampling configuration: strconv.Atoi: parsing "abc": invalid syntax'))),
    (consumer("C", "c13", deliver_subject="ds13", flow_control=True),
     which((400, 10108, "consumer with flow control also needs heartbeats"))),
    (consumer("C", "c14", description="d" * 4097),
     which((400, 10107, "consumer description is too long, maximum allowed is 4096"))),
    (consumer("W", "w1"), which((400, 10084, "consumer in pull mode requires ack policy"))),
    (consumer("C", None, durable_name="named"),
     which((400, 10020, "consumer expected to be ephemeral but a durable name was set in request"))),
    (("$JS.API.CONSUMER.DURABLE.CREATE.C.c15", {"stream_name": "C", "config": {}}),
     which((400, 10018, "consumer expected to be durable but a durable name was not set"))),
    (("$JS.API.CONSUMER.DURABLE.CREATE.C.c16", {"stream_name": "C", "config": {"durable_name": "other"}}),
     which((400, 10017, "consumer name in subject does not match durable name in request"))),
    (("$JS.API.CONSUMER.DURABLE.CREATE.C.c17", {"stream_name": "OTHER", "config": {"durable_name": "c17"}}),
     which((400, 10056, "stream name in subject does not match request"))),
    # The defaults: an ack-none consumer has no ack wait or ack limit; an explicit one 30 s
    # and 1,000.
    (consumer("C", "c18", ack_policy="none"), which({"ack_wait": None, "max_ack_pending": None, "max_deliver": -1,
                                                      "max_waiting": 512})),
    (consumer("C", "c19", ack_policy="explicit"), which({"ack_wait": 30 * SECOND, "max_ack_pending": 1000})),
    # nats-server 2.10 only (2.9.10 has no filter_subjects, ignores them, and so takes these).
    (consumer("C", "c20", filter_subjects=["c.a", "c.>"]),
     which((400, 10138, "consumer subject filters cannot overlap"), v29={"durable_name": "c20"})),
    (consumer("C", "c21", filter_subjects=["c.a", ""]),
     which((400, 10139, "consumer filter in FilterSubjects cannot be empty"), v29={"durable_name": "c21"})),
]


@async_test(timeout=60)
async def test_consumer_configurations_are_checked_in_nats_servers_order(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        await ask(nc, "$JS.API.STREAM.CREATE.C", {"name": "C", "subjects": ["c.>"]})
        await ask(nc, "$JS.API.STREAM.CREATE.W", {"name": "W", "subjects": ["w"], "retention": "workqueue"})
        await check_cases(nc, CONSUMER_CASES)


@async_test(timeout=60)
async def test_consumer_updates_and_actions(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        await ask(nc, "$JS.API.STREAM.CREATE.C", {"name": "C", "subjects": ["c.>"]})
        subject = "$JS.API.CONSUMER.DURABLE.CREATE.C.d"
        base = {"durable_name": "d", "ack_policy": "explicit", "deliver_subject": "dd", "idle_heartbeat": SECOND,
                "flow_control": True}
        answered(await ask(nc, subject, {"stream_name": "C", "config": base}), {"durable_name": "d"})
        for change, why in (({"replay_policy": "original"}, "replay policy can not be updated"),
                            ({"idle_heartbeat": 2 * SECOND}, "heart beats can not be updated"),
                            ({"flow_control": False}, "flow control can not be updated"),
                            ({"deliver_policy": "new"}, "deliver policy can not be updated")):
            resp = await ask(nc, subject, {"stream_name": "C", "config": {**base, **change}})
            answered(resp, which((500, 10012, why)))
        pull = "$JS.API.CONSUMER.DURABLE.CREATE.C.p"
        await ask(nc, pull, {"stream_name": "C", "config": {"durable_name": "p", "ack_policy": "explicit"}})
        resp = await ask(nc, pull, {"stream_name": "C", "config": {"durable_name": "p", "ack_policy": "explicit",
                                                                   "deliver_subject": "pp"}})
        answered(resp, which((500, 10012, "can not update pull consumer to push based"),
                             v29=(500, 10012, "max waiting can not be updated")))
        # What may change does.
        answered(await ask(nc, subject, {"stream_name": "C", "config": {**base, "max_ack_pending": 7}}),
                 {"max_ack_pending": 7})
        if IS_NATS_SERVER:
            return
        # nats-server 2.10's actions.
        named = "$JS.API.CONSUMER.CREATE.C.n"
        resp = await ask(nc, named, {"stream_name": "C", "config": {"durable_name": "n"}, "action": "update"})
        answered(resp, (400, 10149, "consumer does not exist"))
        answered(await ask(nc, named, {"stream_name": "C", "config": {"durable_name": "n"}, "action": "create"}),
                 {"durable_name": "n", "name": "n"})
        resp = await ask(nc, named, {"stream_name": "C", "config": {"durable_name": "n", "max_deliver": 3},
                                     "action": "create"})
        answered(resp, (400, 10148, "consumer already exists"))
        resp = await ask(nc, named, {"stream_name": "C", "config": {}, "action": "other"})
        answered(resp, (400, 10025, "invalid JSON"))
        # An ephemeral says the inactivity threshold it gets; a legacy one the name it got.
        resp = await ask(nc, "$JS.API.CONSUMER.CREATE.C", {"stream_name": "C", "config": {}})
        assert resp["config"]["inactive_threshold"] == 5 * SECOND
        assert resp["config"]["name"] == resp["name"]
        # A filter outside the stream's subjects is taken (2.9.10 refused it, 10093).
        resp = await ask(nc, "$JS.API.CONSUMER.DURABLE.CREATE.C.f", {"stream_name": "C", "config": {
            "durable_name": "f", "filter_subject": "elsewhere"}})
        answered(resp, {"filter_subject": "elsewhere"})
        resp = await ask(nc, "$JS.API.CONSUMER.DURABLE.CREATE.C.x.y", {"stream_name": "C", "config": {}})
        answered(resp, (400, 10016, "consumer expected to be durable but no durable name set in subject"))


@async_test(timeout=60)
async def test_mirrors_filters_and_direct_consumers(server_factory, tmp_path):
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        # A mirror takes mirror_direct from its origin, so creating it again is the same.
        await ask(nc, "$JS.API.STREAM.CREATE.O", {"name": "O", "subjects": ["o.>"], "allow_direct": True})
        body = {"name": "OM", "mirror": {"name": "O"}}
        first = await ask(nc, "$JS.API.STREAM.CREATE.OM", body)
        answered(first, {"mirror_direct": True})
        answered(await ask(nc, "$JS.API.STREAM.CREATE.OM", body), {"mirror_direct": True})
        # A consumer's filter changed by an update takes effect.
        await ask(nc, "$JS.API.CONSUMER.DURABLE.CREATE.O.f", {"stream_name": "O", "config": {
            "durable_name": "f", "ack_policy": "explicit", "filter_subject": "o.a"}})
        answered(await ask(nc, "$JS.API.CONSUMER.DURABLE.CREATE.O.f", {"stream_name": "O", "config": {
            "durable_name": "f", "ack_policy": "explicit", "filter_subject": "o.b"}}), {"filter_subject": "o.b"})
        await js.publish("o.a", b"a")
        await js.publish("o.b", b"b")
        sub = await js.pull_subscribe_bind(durable="f", stream="O")
        [m] = await sub.fetch(1, timeout=2)
        assert (m.subject, m.data) == ("o.b", b"b")
        # A direct consumer (what another server's mirror or source asks for) of a work-queue
        # stream is not held to the stream's rules for its consumers.
        await ask(nc, "$JS.API.STREAM.CREATE.WQ", {"name": "WQ", "subjects": ["wq"], "retention": "workqueue"})
        await ask(nc, "$JS.API.CONSUMER.DURABLE.CREATE.WQ.w", {"stream_name": "WQ", "config": {
            "durable_name": "w", "ack_policy": "explicit"}})
        resp = await ask(nc, "$JS.API.CONSUMER.CREATE.WQ", {"stream_name": "WQ", "config": {
            "direct": True, "deliver_subject": "wq.copy", "ack_policy": "none"}})
        assert "error" not in resp, resp


@async_test(timeout=60)
async def test_a_stream_may_source_one_made_later(server_factory, tmp_path):
    """nats-server 2.10 takes a source or mirror that does not exist yet, and copies once it
    does (2.9.10 too)."""
    srv = server_factory(args=js_args(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect()
        js = nc.jetstream()
        answered(await ask(nc, "$JS.API.STREAM.CREATE.LATER", {"name": "LATER", "sources": [{"name": "FIRST"}]}),
                 {"name": "LATER"})
        answered(await ask(nc, "$JS.API.STREAM.CREATE.MLATER", {"name": "MLATER", "mirror": {"name": "FIRST"}}),
                 {"name": "MLATER"})
        await js.add_stream(name="FIRST", subjects=["first"])
        await js.publish("first", b"1")
        for name in ("LATER", "MLATER"):
            for _ in range(100):
                if (await js.stream_info(name)).state.messages == 1:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"{name} never copied FIRST's message")
