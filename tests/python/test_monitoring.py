"""Monitoring in nats-server's JSON (issue 12): /varz, /connz with its query parameters,
/subsz, /accountz, /accstatz, /healthz and the cluster endpoints, checked for values under live
NATS and MQTT traffic and compared key by key with nats-server (Debian's 2.9.10) serving the
same traffic in the same test."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import nats
import pytest

from conftest import IS_NATS_SERVER, async_test, wait_until
from mqtt_helpers import V5, RawMqtt

pytestmark = pytest.mark.skipif(IS_NATS_SERVER, reason="compares Junction with nats-server itself")

NATS_SERVER = "/usr/sbin/nats-server"


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


class Reference:
    """nats-server started by the test, its ports read from its ports file."""

    def __init__(self, tmp_path: Path):
        if not os.path.exists(NATS_SERVER):
            pytest.fail("nats-server is missing: ./scripts/test installs Debian's package")
        self.dir = tmp_path / "ref"
        self.dir.mkdir()
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", "-1", "-m", "-1", "--ports_file_dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            files = list(self.dir.glob("*.ports"))
            if files:
                try:
                    ports = json.loads(files[0].read_text())
                    break
                except ValueError:
                    pass
            assert time.monotonic() < deadline, "nats-server wrote no ports file"
            time.sleep(0.05)
        self.port = int(ports["nats"][0].rsplit(":", 1)[1])
        self.http_port = int(ports["monitoring"][0].rsplit(":", 1)[1])

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def reference(tmp_path):
    ref = Reference(tmp_path)
    yield ref
    ref.stop()


async def traffic(port):
    """The same traffic on either server: a named client with two subscriptions (one in a
    queue group) that publishes five messages to itself."""
    nc = await nats.connect(f"nats://127.0.0.1:{port}", name="monitored", allow_reconnect=False)
    s1 = await nc.subscribe("mon.a")
    s2 = await nc.subscribe("mon.*", queue="workers")
    for _ in range(5):
        await nc.publish("mon.a", b"hello")
    await nc.flush()
    await s1.next_msg(timeout=2)
    await s2.next_msg(timeout=2)
    return nc


def keys_missing(reference: dict, ours: dict, skip=()) -> list:
    return sorted(k for k in reference if k not in ours and k not in skip)


@async_test()
async def test_endpoints_have_nats_server_fields(server, reference):
    ours_nc = await traffic(server.port)
    ref_nc = await traffic(reference.port)
    try:
        await asyncio.sleep(0.2)
        for path in ["/varz", "/connz?subs=1", "/connz?subs=detail&auth=1", "/subsz?subs=1", "/accountz",
                     "/accountz?acc=$G", "/accstatz", "/routez", "/gatewayz", "/leafz", "/healthz"]:
            rs, ref = await asyncio.to_thread(get, reference.http_port, path)
            os_, ours = await asyncio.to_thread(get, server.http_port, path)
            assert rs == 200 and os_ == 200, (path, rs, os_)
            # Fields nats-server 2.9 has that a single Junction has nothing to put in.
            skip = {"git_commit", "trusted_operators_jwt", "trusted_operators_claim", "tags", "ip",
                    "tls_ocsp_peer_verify", "connect_urls", "ws_connect_urls", "max_subscriptions",
                    "jetstream", "system_account", "ocsp_peer_cache"}
            assert keys_missing(ref, ours, skip) == [], (path, keys_missing(ref, ours, skip))
            if path.startswith("/connz"):
                mine = [c for c in ref["connections"] if c.get("name") == "monitored"]
                theirs = [c for c in ours["connections"] if c.get("name") == "monitored"]
                assert len(mine) == len(theirs) == 1
                assert keys_missing(mine[0], theirs[0], {"rtt", "tls_version", "tls_cipher_suite"}) == []
                for k in ("subscriptions", "in_msgs", "out_msgs", "in_bytes", "out_bytes", "name", "lang"):
                    assert mine[0][k] == theirs[0][k], (path, k, mine[0][k], theirs[0][k])
                if "subs=1" in path:
                    assert sorted(mine[0]["subscriptions_list"]) == sorted(theirs[0]["subscriptions_list"]) \
                        == ["mon.*", "mon.a"]
                if "detail" in path:
                    # Junction counts a subscription's messages only while it has an
                    # auto-unsubscribe limit (a counter per delivery costs every message).
                    strip = lambda lst: sorted((d["subject"], d.get("qgroup"), d["sid"]) for d in lst)
                    assert strip(mine[0]["subscriptions_list_detail"]) == \
                        strip(theirs[0]["subscriptions_list_detail"])
                    d = theirs[0]["subscriptions_list_detail"][0]
                    assert d["account"] == "$G" and d["cid"] == theirs[0]["cid"]
            if path == "/varz":
                for k in ("in_msgs", "out_msgs", "connections", "max_payload", "proto", "ping_max",
                          "max_control_line", "max_pending", "auth_timeout", "tls_timeout", "routes",
                          "leafnodes", "remotes", "http_base_path"):
                    assert ref[k] == ours[k], (k, ref[k], ours[k])
                assert ours["version"] == "2.10.0" and ours["http_port"] == server.http_port
                assert ours["cores"] >= 1 and ours["mem"] > 0
            if path == "/subsz?subs=1":
                # The system account's own request subscriptions are listed too, as nats-server
                # lists its internal ones.
                ours_subjects = sorted(d["subject"] for d in ours["subscriptions_list"] if d["account"] == "$G")
                assert any(d["subject"] == "$SYS.REQ.SERVER.PING" for d in ours["subscriptions_list"])
                assert ours_subjects == ["mon.*", "mon.a"], ours
            if path == "/accountz":
                assert "$G" in ours["accounts"] and "$G" in ref["accounts"]
            if path == "/healthz":
                assert ours == ref == {"status": "ok"}
    finally:
        await ours_nc.close()
        await ref_nc.close()


@async_test()
async def test_connz_filters_sorts_and_mqtt_clients(server):
    a = await nats.connect(f"nats://127.0.0.1:{server.port}", name="busy")
    b = await nats.connect(f"nats://127.0.0.1:{server.port}", name="quiet")
    try:
        await a.subscribe("x.>")
        for _ in range(10):
            await a.publish("busy.out", b"12345")
        await a.flush()
        await b.flush()
        mqtt_port = server.mqtt_port if hasattr(server, "mqtt_port") else None
        if mqtt_port is None:
            import re as _re
            m = _re.search(r"Listening for MQTT clients on (?:mqtt://)?([0-9.]+):(\d+)", server.log_text())
            mqtt_port = int(m.group(2))
        dev = RawMqtt(types.SimpleNamespace(port=mqtt_port), version=V5)
        dev.connect("device-7")
        dev.subscribe([("sensors/+/t", 1), ("cmd/#", 0)])

        async def connz(q):
            st, body = await asyncio.to_thread(get, server.http_port, "/connz" + q)
            assert st == 200, (q, body)
            return body

        await wait_until(lambda: True)
        body = await connz("?sort=msgs_from")
        names = [c.get("name") for c in body["connections"]]
        assert names[0] == "busy", names
        body = await connz("?sort=cid")
        cids = [c["cid"] for c in body["connections"]]
        assert cids == sorted(cids)
        body = await connz("?mqtt_client=device-7&subs=1")
        assert body["total"] == 1
        c = body["connections"][0]
        assert c["type"] == "mqtt" and c["mqtt_client"] == "device-7" and c["subscriptions"] == 2
        assert sorted(c["subscriptions_list"]) == ["cmd.>", "sensors.*.t"], c
        busy = [c for c in (await connz("?limit=100"))["connections"] if c.get("name") == "busy"][0]
        for k in ("last_activity", "idle", "uptime", "start"):
            assert k in busy
        one = await connz(f"?cid={busy['cid']}")
        assert [c["cid"] for c in one["connections"]] == [busy["cid"]]
        st, err = await asyncio.to_thread(get, server.http_port, "/connz?sort=stop")
        assert st == 400 and "closed" in err["error"]
        st, err = await asyncio.to_thread(get, server.http_port, "/connz?sort=nonsense")
        assert st == 400
        st, err = await asyncio.to_thread(get, server.http_port, "/subsz?subs=1&test=x.y.z")
        assert st == 200 and [d["subject"] for d in err["subscriptions_list"]] == ["x.>"]
        st, err = await asyncio.to_thread(get, server.http_port, "/accstatz")
        g = [a for a in err["account_statz"] if a["acc"] == "$G"][0]
        assert g["conns"] == 3 and g["received"]["msgs"] >= 10
        st, h = await asyncio.to_thread(get, server.http_port, "/healthz?js-enabled=true")
        assert st == 503 and h["error"] == "JetStream not enabled"
    finally:
        await a.close()
        await b.close()


SYS_CONFIG = """
accounts {
  SYS: { users: [ { user: admin, password: adminpw } ] }
  APP: { users: [ { user: app, password: apppw } ] }
}
system_account: SYS
"""


@async_test()
async def test_system_account_requests_and_advisories(server_factory):
    srv = server_factory(SYS_CONFIG)
    url = f"nats://127.0.0.1:{srv.port}"
    admin = await nats.connect(url, user="admin", password="adminpw")
    app = None
    try:
        connects = await admin.subscribe("$SYS.ACCOUNT.APP.CONNECT")
        disconnects = await admin.subscribe("$SYS.ACCOUNT.APP.DISCONNECT")
        await admin.flush()
        app = await nats.connect(url, user="app", password="apppw", name="app-client")
        await app.subscribe("orders.>")
        await app.flush()

        ev = json.loads((await connects.next_msg(timeout=5)).data)
        assert ev["type"] == "io.nats.server.advisory.v1.client_connect"
        assert ev["client"]["acc"] == "APP" and ev["client"]["user"] == "app"
        assert ev["client"]["name"] == "app-client"

        ping = json.loads((await admin.request("$SYS.REQ.SERVER.PING", b"", timeout=5)).data)
        server_id = ping["server"]["id"]
        assert ping["server"]["ver"] == "2.10.0"
        assert ping["statsz"]["connections"] == 2
        assert ping["statsz"]["active_accounts"] == 2

        varz = json.loads((await admin.request("$SYS.REQ.SERVER.PING.VARZ", b"{}", timeout=5)).data)
        assert varz["data"]["server_id"] == server_id and varz["data"]["port"] == srv.port

        connz = json.loads((await admin.request(f"$SYS.REQ.SERVER.{server_id}.CONNZ",
                                                json.dumps({"subscriptions": True, "account": "APP"}).encode(),
                                                timeout=5)).data)
        conns = connz["data"]["connections"]
        assert [c["name"] for c in conns] == ["app-client"], conns
        assert conns[0]["subscriptions_list"] == ["orders.>"]

        idz = json.loads((await admin.request(f"$SYS.REQ.SERVER.{server_id}.IDZ", b"", timeout=5)).data)
        assert idz["data"]["id"] == server_id
        healthz = json.loads((await admin.request("$SYS.REQ.SERVER.PING.HEALTHZ", b"", timeout=5)).data)
        assert healthz["data"] == {"status": "ok"}

        # An application account cannot reach the system account's services.
        with pytest.raises(Exception):
            await app.request("$SYS.REQ.SERVER.PING", b"", timeout=1)

        await app.close()
        app = None
        ev = json.loads((await disconnects.next_msg(timeout=5)).data)
        assert ev["type"] == "io.nats.server.advisory.v1.client_disconnect"
        assert ev["client"]["acc"] == "APP" and ev["reason"] == "Client Closed"
        assert ev["received"]["msgs"] == 1  # its one request above
    finally:
        if app is not None:
            await app.close()
        await admin.close()


@async_test()
async def test_metrics_parse_and_move_with_traffic(server):
    from prometheus_client.parser import text_string_to_metric_families

    def scrape():
        status, body = server.http_get("/metrics")
        assert status == 200
        fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
        return fams

    def value(fams, name, **labels):
        # The parser names a counter's family without "_total"; its samples keep it.
        fam = fams.get(name) or fams.get(name.removesuffix("_total")) or fams[name.removesuffix("_count")]
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        raise AssertionError(f"no sample {name} {labels} in {fam.samples}")

    before = await asyncio.to_thread(scrape)
    nc = await nats.connect(f"nats://127.0.0.1:{server.port}")
    import re as _re
    mqtt_port = int(_re.search(r"Listening for MQTT clients on (?:mqtt://)?([0-9.]+):(\d+)", server.log_text()).group(2))
    dev = RawMqtt(types.SimpleNamespace(port=mqtt_port), version=V5)
    dev.connect("metrics-device", clean=False, props=[(0x11, 600)])
    dev.subscribe([("m/t", 1)])
    try:
        for _ in range(7):
            await nc.publish("m.t", b"x" * 10)
        await nc.flush()
        for _ in range(7):
            dev.expect(3)  # PUBLISH
        after = await asyncio.to_thread(scrape)
        assert value(after, "junction_messages_received_total", protocol="nats") - \
            value(before, "junction_messages_received_total", protocol="nats") == 7
        assert value(after, "junction_messages_sent_total", protocol="mqtt") >= 7
        assert value(after, "junction_connections", protocol="nats", account="$G") == 1
        assert value(after, "junction_connections", protocol="mqtt", account="$G") == 1
        assert value(after, "junction_subscriptions", account="$G") >= 1
        assert value(after, "junction_mqtt_sessions", state="connected") == 1
        assert after["junction_store_commit_seconds"].type == "histogram"
        assert value(after, "junction_store_commit_seconds_count") >= 1
        assert value(after, "junction_store_size_bytes") > 0
        assert after["junction_auth_failures"].type == "counter"
    finally:
        await nc.close()


@async_test()
async def test_connz_rtt_from_the_servers_pings(server_factory):
    srv = server_factory('ping_interval: "300ms"\n')
    nc = await nats.connect(f"nats://127.0.0.1:{srv.port}", name="timed")
    try:
        deadline = time.monotonic() + 10
        while True:
            st, body = await asyncio.to_thread(get, srv.http_port, "/connz")
            conn = [c for c in body["connections"] if c.get("name") == "timed"][0]
            if "rtt" in conn:
                break
            assert time.monotonic() < deadline, conn
            await asyncio.sleep(0.1)
        # A Go duration on loopback: microseconds or milliseconds.
        assert re.fullmatch(r"\d+(\.\d+)?(µs|ms)", conn["rtt"]), conn["rtt"]
    finally:
        await nc.close()
