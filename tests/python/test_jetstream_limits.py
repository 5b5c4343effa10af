"""Which accounts have JetStream and what their limits allow: from an account's
``jetstream {}`` block in the configuration, and in operator mode from the JetStream limits
of the account's JWT (flat, or the ``R1`` tier of tiered limits). An account without JetStream
is told so (503 / 10039) instead of getting no answer.

Every expectation here is nats-server 2.9.10's; the tests pass against it too:

    JUNCTION_BIN=/usr/sbin/nats-server JUNCTION_EXPECT_EXIT=1 \\
        .venv/bin/python -m pytest tests/python/test_jetstream_limits.py
"""

from __future__ import annotations

import json

import nats
import pytest
from nats.js import api
from nats.js.errors import APIError

from conftest import Clients, async_test
from jwt_helpers import operator_config, user_creds

NOT_ENABLED = (503, 10039, "JetStream not enabled for account")


def js_block(tmp_path) -> str:
    return f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'


async def refused(call, code: int, err_code: int, description: str | None = None):
    """Awaits ``call`` and checks the API error it raises."""
    with pytest.raises(APIError) as e:
        await call
    got = (e.value.code, e.value.err_code)
    assert got == (code, err_code), (got, e.value.description)
    if description is not None:
        assert e.value.description == description
    return e.value


async def api_request(nc, subject: str, body: bytes = b"") -> dict:
    return json.loads((await nc.request(subject, body, timeout=3)).data)


async def check_not_enabled(nc):
    """What a client of an account without JetStream sees."""
    js = nc.jetstream()
    await refused(js.account_info(), *NOT_ENABLED)
    await refused(js.add_stream(name="S", subjects=["s"]), *NOT_ENABLED)
    for subject, kind in [("$JS.API.INFO", "account_info_response"),
                          ("$JS.API.STREAM.NAMES", "stream_names_response"),
                          ("$JS.API.CONSUMER.INFO.S.C", "consumer_info_response")]:
        body = await api_request(nc, subject)
        assert body["type"] == f"io.nats.jetstream.api.v1.{kind}"
        assert body["error"] == dict(zip(("code", "err_code", "description"), NOT_ENABLED))


def with_js_limits(**limits):
    return lambda claims: claims["nats"]["limits"].update(limits)


# --------------------------------------------------------------------------
# Operator mode: the account JWT decides
# --------------------------------------------------------------------------


@async_test()
async def test_account_jwt_limits_enable_jetstream_and_bound_it(server_factory, tmp_path):
    config = operator_config(tmp_path, {"A": with_js_limits(
        mem_storage=1 << 20, disk_storage=10 << 20, streams=2, consumer=1,
        max_ack_pending=50, disk_max_stream_bytes=5000, max_bytes_required=True)},
        extra=js_block(tmp_path))
    srv = server_factory(config=config)
    async with Clients(srv) as c:
        a = await c.connect(user_credentials=user_creds(tmp_path, "A"))
        b = await c.connect(user_credentials=user_creds(tmp_path, "B"))
        js = a.jetstream()
        info = await js.account_info()
        assert (info.limits.max_memory, info.limits.max_storage, info.limits.max_streams,
                info.limits.max_consumers, info.limits.max_ack_pending,
                info.limits.memory_max_stream_bytes, info.limits.storage_max_stream_bytes,
                info.limits.max_bytes_required) == (1 << 20, 10 << 20, 2, 1, 50, -1, 5000, True)
        assert (info.api.total, info.api.errors) == (0, 0)
        # B's JWT has no JetStream limits (nsc's defaults): no JetStream, and told so.
        await check_not_enabled(b)

        await refused(js.add_stream(name="F", subjects=["f"]), 400, 10113,
                      "account requires a stream config to have max bytes set")
        await refused(js.add_stream(name="F", subjects=["f"], max_bytes=5001), 400, 10122,
                      "stream max bytes exceeds account limit max stream bytes")
        await js.add_stream(name="F", subjects=["f"], max_bytes=5000)
        # The per-stream bound is the file one; memory streams have none here.
        await js.add_stream(name="M", subjects=["m"], max_bytes=100_000, storage="memory")
        await refused(js.add_stream(name="T", subjects=["t"], max_bytes=10), 400, 10027,
                      "maximum number of streams reached")

        # max_ack_pending: a consumer's default when below 1,000, and its most.
        c1 = await js.add_consumer("F", durable_name="c1", ack_policy="explicit")
        assert c1.config.max_ack_pending == 50
        await refused(js.add_consumer("F", durable_name="c2", max_ack_pending=51), 400, 10121,
                      "consumer max ack pending exceeds system limit of 50")
        # `consumer` bounds each stream's consumers.
        await refused(js.add_consumer("F", durable_name="c2"), 400, 10026,
                      "maximum consumers limit reached")
        await js.add_consumer("M", durable_name="c2", ack_policy="none")

        info = await js.account_info()
        assert (info.streams, info.consumers) == (2, 2)
        # Only A's own requests count: 10 before this one, 5 of them refused.
        assert (info.api.total, info.api.errors) == (10, 5)


@async_test()
async def test_zero_memory_storage_refuses_memory_streams(server_factory, tmp_path):
    config = operator_config(tmp_path, {"A": with_js_limits(disk_storage=-1, streams=-1)},
                             extra=js_block(tmp_path))
    srv = server_factory(config=config)
    async with Clients(srv) as c:
        js = (await c.connect(user_credentials=user_creds(tmp_path, "A"))).jetstream()
        info = await js.account_info()
        assert (info.limits.max_memory, info.limits.max_storage, info.limits.max_consumers) == (0, -1, 0)
        await refused(js.add_stream(name="M", subjects=["m"], storage="memory"), 500, 10028,
                      "insufficient memory resources available")
        await js.add_stream(name="F", subjects=["f"])
        # No `consumer` claim is 0: no limit.
        for i in range(3):
            await js.add_consumer("F", durable_name=f"c{i}")


@async_test()
async def test_tiered_limits_use_the_r1_tier(server_factory, tmp_path):
    config = operator_config(tmp_path, {
        "A": with_js_limits(tiered_limits={"R1": {"disk_storage": 100_000, "streams": 1}}),
        "B": with_js_limits(tiered_limits={"R3": {"disk_storage": 100_000}}),
    }, extra=js_block(tmp_path))
    srv = server_factory(config=config)
    async with Clients(srv) as c:
        a = await c.connect(user_credentials=user_creds(tmp_path, "A"))
        js = a.jetstream()
        # (nats-server 2.9.10 picks the tier by the request's own num_replicas, and a request
        # without one finds no "R0" tier; 2.10 counts it as 1, as Junction does.)
        await js.add_stream(name="F", subjects=["f"], num_replicas=1)
        await refused(js.add_stream(name="G", subjects=["g"], num_replicas=1), 400, 10027)
        body = await api_request(a, "$JS.API.INFO")
        assert body["limits"]["max_storage"] == 0 and body["streams"] == 1
        r1 = body["tiers"]["R1"]
        assert (r1["streams"], r1["limits"]["max_storage"], r1["limits"]["max_streams"]) == (1, 100_000, 1)
        # Tiers without R1: JetStream is on, but a single server's streams have no limits to
        # go by.
        jb = (await c.connect(user_credentials=user_creds(tmp_path, "B"))).jetstream()
        await refused(jb.add_stream(name="F", subjects=["f"], num_replicas=1), 400, 10120,
                      "no JetStream default or applicable tiered limit present")


# --------------------------------------------------------------------------
# Configuration: an account's jetstream block
# --------------------------------------------------------------------------

LIMITS_CONF = """
accounts {
  L {
    jetstream { max_streams: 1, max_consumers: 1, max_file: 2000, max_ack_pending: 10,
                store_max_stream_bytes: 2000 }
    users: [ { user: l, password: l } ]
  }
  R { jetstream { max_bytes_required: true }, users: [ { user: r, password: r } ] }
  N { users: [ { user: n, password: n } ] }
}
"""


@async_test()
async def test_account_limits_from_the_configuration(server_factory, tmp_path):
    srv = server_factory(config=LIMITS_CONF + js_block(tmp_path))
    async with Clients(srv) as c:
        nc = await c.connect(user="l", password="l")
        js = nc.jetstream()
        info = await js.account_info()
        assert (info.limits.max_streams, info.limits.max_consumers, info.limits.max_storage,
                info.limits.max_ack_pending, info.limits.storage_max_stream_bytes) == (1, 1, 2000, 10, 2000)
        await refused(js.add_stream(name="ONE", subjects=["one"], max_bytes=2001), 400, 10122)
        await js.add_stream(name="ONE", subjects=["one"])
        await refused(js.add_stream(name="TWO", subjects=["two"]), 400, 10027)
        c1 = await js.add_consumer("ONE", durable_name="c1")
        assert c1.config.max_ack_pending == 10
        await refused(js.add_consumer("ONE", durable_name="c2"), 400, 10026)
        # 100-byte payloads are 133 bytes stored: 15 fit in 2000 bytes, the 16th does not.
        for _ in range(15):
            await js.publish("one", b"x" * 100)
        await refused(js.publish("one", b"x" * 100), 400, 10002)
        await js.purge_stream("ONE")
        await js.publish("one", b"x" * 100)

        jr = (await c.connect(user="r", password="r")).jetstream()
        await refused(jr.add_stream(name="R", subjects=["r"]), 400, 10113)
        await jr.add_stream(name="R", subjects=["r"], max_bytes=1 << 20)
        # An update is held to the same rule.
        await refused(jr.update_stream(api.StreamConfig(name="R", subjects=["r"])), 400, 10113)

        # JetStream is enabled in some accounts: N is not one of them.
        await check_not_enabled(await c.connect(user="n", password="n"))


# --------------------------------------------------------------------------
# JetStream's usage through the system account (`nats server report jetstream`)
# --------------------------------------------------------------------------

SYS_JS_CONF = """
accounts {
  SYS: { users: [ { user: admin, password: adminpw } ] }
  APP: { jetstream: enabled, users: [ { user: app, password: apppw } ] }
  OTHER: { jetstream: enabled, users: [ { user: other, password: otherpw } ] }
}
system_account: SYS
"""


@async_test()
async def test_jsz_through_the_system_account(server_factory, tmp_path):
    srv = server_factory(config=SYS_JS_CONF + js_block(tmp_path))
    async with Clients(srv) as c:
        admin = await c.connect(user="admin", password="adminpw")
        js = (await c.connect(user="app", password="apppw")).jetstream()
        await js.add_stream(name="S", subjects=["s"])
        await js.publish("s", b"x")
        await js.add_consumer("S", durable_name="c")
        await (await c.connect(user="other", password="otherpw")).jetstream().add_stream(
            name="O", subjects=["o"])

        async def jsz(opts: dict) -> dict:
            r = json.loads((await admin.request("$SYS.REQ.SERVER.PING.JSZ",
                                                json.dumps(opts).encode(), timeout=5)).data)
            assert r["server"]["jetstream"] is True
            return r["data"]

        d = await jsz({})
        assert (d["streams"], d["consumers"], d["messages"], d["accounts"]) == (2, 1, 1, 2)
        assert d["server_id"] and "account_details" not in d
        d = await jsz({"accounts": True})
        assert sorted(a["name"] for a in d["account_details"]) == ["APP", "OTHER"]
        app = next(a for a in d["account_details"] if a["name"] == "APP")
        assert app["api"]["total"] == 2  # the stream and the consumer created
        d = await jsz({"account": "APP", "streams": True})
        [app] = d["account_details"]
        [s] = app["stream_detail"]
        assert (s["name"], s["state"]["messages"], s["state"]["consumer_count"]) == ("S", 1, 1)


@async_test()
async def test_jsz_through_the_system_account_without_jetstream(server_factory):
    srv = server_factory(config=SYS_JS_CONF.replace("jetstream: enabled, ", ""))
    async with Clients(srv) as c:
        admin = await c.connect(user="admin", password="adminpw")
        r = json.loads((await admin.request("$SYS.REQ.SERVER.PING.JSZ", b"", timeout=5)).data)
        assert r["server"]["jetstream"] is False and r["data"]["disabled"] is True


@async_test()
async def test_a_reload_applies_changed_account_limits(server_factory, tmp_path):
    srv = server_factory(config=LIMITS_CONF + js_block(tmp_path))
    path = srv.workdir / f"server-{id(srv)}.conf"
    async with Clients(srv) as c:
        js = (await c.connect(user="l", password="l")).jetstream()
        await js.add_stream(name="ONE", subjects=["one"])
        await refused(js.add_stream(name="TWO", subjects=["two"]), 400, 10027)
        text = path.read_text()
        assert "max_streams: 1," in text
        path.write_text(text.replace("max_streams: 1,", "max_streams: 2,"))
        await srv.reload()
        assert (await js.account_info()).limits.max_streams == 2
        await js.add_stream(name="TWO", subjects=["two"])
        await refused(js.add_stream(name="THREE", subjects=["three"]), 400, 10027)
        assert (await js.stream_info("ONE")).config.name == "ONE"
