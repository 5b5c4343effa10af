"""The dashboard on the monitoring port (issue 12), in a real headless Chromium: it loads from
the binary with nothing fetched from another origin, its figures move under NATS, MQTT and
WebSocket traffic, and its tester subscribes and publishes over the WebSocket listener. A
screenshot is saved to target/dashboard.png."""

from __future__ import annotations

import re
import shutil
import threading
import time
import types

import pytest

from conftest import REPO, async_test, sync_subs
from mqtt_helpers import V311, RawMqtt
from test_browser import BROWSER_DIR, STEP_TIMEOUT, NodeRunner, _prerequisites

import nats

RUNNER = BROWSER_DIR / "dashboard.mjs"


class Dashboard(NodeRunner):
    """tests/browser/dashboard.mjs: the dashboard page, read and driven by the test."""

    def __init__(self, url: str):
        super().__init__([str(RUNNER), "--url", url])

    def figures(self):
        self.send(cmd="figures")
        return self.expect("figures")


def wait_figures(dash, pred, what, timeout=STEP_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        f = dash.figures()
        if pred(f):
            return f
        if time.monotonic() > deadline:
            raise AssertionError(f"the dashboard never showed {what}: {f}")
        time.sleep(0.3)


@async_test(timeout=120)
async def test_dashboard_under_traffic_from_all_three_protocols(server, tmp_path):
    _prerequisites()
    dash = Dashboard(f"http://127.0.0.1:{server.http_port}/")
    mqtt_port = int(re.search(r"Listening for MQTT clients on (?:mqtt://)?([0-9.]+):(\d+)",
                              server.log_text()).group(2))
    nc = await nats.connect(f"nats://127.0.0.1:{server.port}", name="dash-nats")
    try:
        dash.expect("ready", timeout=60)
        # Connected only now: the broker closes a connection that sends no CONNECT in 2 s.
        dev = RawMqtt(types.SimpleNamespace(port=mqtt_port), version=V311)
        sub = await nc.subscribe("orders.>")
        await sync_subs(nc)
        dev.connect("dash-device")
        stop = threading.Event()

        def mqtt_load():
            n = 0
            while not stop.is_set() and n < 20000:
                dev.publish("sensors/line1/temp", b"21.5")
                n += 1
                time.sleep(0.001)

        t = threading.Thread(target=mqtt_load, daemon=True)
        t.start()
        for i in range(30):
            for _ in range(100):
                await nc.publish("orders.new", b"order")
            await nc.flush()
            await asyncio_sleep(0.1)
        f = wait_figures(
            dash,
            lambda f: "nats in" in f["legend_msgs"] and "mqtt in" in f["legend_msgs"]
            and f["rate_in"] not in ("-", "0"),
            "message rates for both protocols")
        rows = {r[0]: r for r in f["protocols"]}
        assert int(rows["nats"][1]) >= 1 and int(rows["mqtt"][1]) >= 1, rows
        assert any(r[0] == "$G" for r in f["accounts"]), f["accounts"]
        busiest = [r[0] for r in f["busiest"]]
        assert "orders.new" in busiest, busiest

        # The tester: subscribe over the WebSocket listener, receive from nats-py, publish back.
        dash.send(cmd="subscribe", subject="dash.echo")
        dash.expect("subscribed")
        await nc.publish("dash.echo", b"from nats-py")
        await nc.flush()
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            dash.send(cmd="received")
            items = dash.expect("received")["items"]
            if "dash.echo: from nats-py" in items:
                break
            assert time.monotonic() < deadline, items
            await asyncio_sleep(0.2)
        back = await nc.subscribe("dash.back")
        await sync_subs(nc)
        dash.send(cmd="publish", subject="dash.back", payload="from the dashboard")
        dash.expect("published")
        msg = await back.next_msg(timeout=10)
        assert msg.data == b"from the dashboard"

        # A closed connection shows with its reason.
        other = await nats.connect(f"nats://127.0.0.1:{server.port}", name="short-lived")
        await other.close()
        f = wait_figures(dash, lambda f: any(r[2] == "short-lived" for r in f["closed"]), "the closed connection")
        row = [r for r in f["closed"] if r[2] == "short-lived"][0]
        assert row[3] == "Client Closed", row
        # nats-py, the MQTT device, the tester's WebSocket.
        if int(f["connections"]) < 3:
            _, body = server.http_get("/connz?state=all")
            raise AssertionError(f"{f['protocols']} {f['closed']} {body.decode()[:3000]}")

        shot = tmp_path / "dashboard.png"
        dash.send(cmd="screenshot", path=str(shot))
        dash.expect("screenshot")
        assert shot.stat().st_size > 10_000
        (REPO / "target").mkdir(exist_ok=True)
        shutil.copy(shot, REPO / "target" / "dashboard.png")
        stop.set()
        t.join(5)
        await sub.unsubscribe()
    finally:
        dash.stop()
        await nc.close()


async def asyncio_sleep(s):
    import asyncio
    await asyncio.sleep(s)


def test_dashboard_shows_leaf_node_links(server_factory, tmp_path):
    """A link that is up shows its hub and account; one that cannot connect shows why."""
    _prerequisites()
    from mqtt_helpers import free_port
    hub_port = free_port()
    hub = server_factory(config=f"leafnodes {{ port: {hub_port} }}\n")
    dead_port = free_port()
    srv = server_factory(config=f"""
accounts {{ EDGE {{ users: [ {{ user: e, password: e }} ] }} }}
leafnodes {{ reconnect: "100ms", remotes: [
  {{ url: "nats://127.0.0.1:{hub_port}", account: EDGE }},
  {{ url: "nats://127.0.0.1:{dead_port}" }} ] }}
""")
    dash = Dashboard(f"http://127.0.0.1:{srv.http_port}/")
    try:
        dash.expect("ready", timeout=60)
        f = wait_figures(dash, lambda f: len(f["leafs"]) == 2 and f["leafs"][0][0].startswith("→"),
                         "both links")
        up, down = f["leafs"]
        assert up[1] == "EDGE" and up[2].endswith("ms"), up
        assert down[0].startswith("down: nats://127.0.0.1:") and "refused" in down[0].lower(), down
        # The hub sees the link from its side (an accepted one).
        hf = hub.http_get("/leafz")[1].decode()
        assert '"is_spoke":false' in hf, hf
    finally:
        dash.stop()
