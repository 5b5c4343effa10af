"""A real browser on Junction's WebSocket listener, end to end.

Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core from
tests/browser) opens the demo page examples/ws-demo as Junction serves it at
/demo/ on the monitoring port; the page finds the WebSocket listener itself and
connects with nats.ws to ws://127.0.0.1:PORT and with mqtt.js to
ws://127.0.0.1:PORT/mqtt. On the
other side nats-py and paho-mqtt over TCP publish to the page and receive what
the page publishes; the test asserts what the page shows in its DOM.

Needs node, /usr/bin/chromium and ``npm ci`` in tests/browser: scripts/test
installs them. Missing, the test fails (it does not skip) so CI cannot pass
without it.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import REPO, Clients, async_test, sync_subs
from mqtt_helpers import V5, Broker, Mqtt, _MQTT_LISTEN_RE

BROWSER_DIR = REPO / "tests" / "browser"
RUNNER = BROWSER_DIR / "run.mjs"
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
READY_TIMEOUT = 60.0  # Chromium's first start on a 2-core machine
STEP_TIMEOUT = 20.0


def _prerequisites() -> None:
    problems = []
    if shutil.which("node") is None:
        problems.append("node is not installed")
    if not os.path.exists(CHROMIUM):
        problems.append(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    for mod in ("playwright-core", "nats.ws", "mqtt"):
        if not (BROWSER_DIR / "node_modules" / mod).is_dir():
            problems.append(f"tests/browser/node_modules/{mod} is missing (cd tests/browser && npm ci)")
    if problems:
        pytest.fail("browser test prerequisites: " + "; ".join(problems) + " -- ./scripts/test installs them")


class NodeRunner:
    """A node script in tests/browser as a subprocess: JSON commands in, JSON events out."""

    def __init__(self, args: list[str]):
        self.events: queue.Queue = queue.Queue()
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            ["node", *args, "--chromium", CHROMIUM],
            cwd=BROWSER_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.log.append(line)
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue  # stderr noise (Chromium, node warnings): kept in the log
            if isinstance(ev, dict):
                self.events.put(ev)
        self.events.put({"event": "exit"})

    def log_text(self) -> str:
        return "\n".join(self.log[-100:])

    def expect(self, kind: str, timeout: float = STEP_TIMEOUT) -> dict:
        """The next event of ``kind``; console output is skipped; errors and exit fail."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no '{kind}' event from the browser runner within {timeout}s; "
                                     f"output:\n{self.log_text()}")
            try:
                ev = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if ev.get("event") == kind:
                return ev
            if ev.get("event") in ("error", "exit", "pageerror"):
                raise AssertionError(f"browser runner: {ev}; output:\n{self.log_text()}")

    def expect_logged(self, kind: str) -> dict:
        """An event of ``kind`` already printed (after expect() failed on a later one)."""
        for line in self.log:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(ev, dict) and ev.get("event") == kind:
                return ev
        raise AssertionError(f"no '{kind}' event in the runner's output:\n{self.log_text()}")

    def send(self, **cmd) -> None:
        assert self.proc.stdin is not None and self.proc.poll() is None, \
            f"the browser runner has exited; output:\n{self.log_text()}"
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(cmd="quit")
                self.proc.wait(15)
            except Exception:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Runner(NodeRunner):
    """tests/browser/run.mjs: the ws-demo page, served by Junction, with nats.ws and mqtt.js."""

    def __init__(self, url: str):
        super().__init__([str(RUNNER), "--url", url])

    def messages(self) -> dict:
        self.send(cmd="messages")
        return self.expect("messages")

    def wait_for_received(self, wanted: list[str], timeout: float = STEP_TIMEOUT) -> list[str]:
        """Poll the page's "Received" list until every text in ``wanted`` is shown."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages()["received"]
            if all(w in got for w in wanted):
                return got
            if time.monotonic() >= deadline:
                raise AssertionError(f"the page shows {got!r}, expected it to include {wanted!r}")
            time.sleep(0.1)


@pytest.fixture
def runner_factory():
    _prerequisites()
    made: list[Runner] = []

    def make(url: str) -> Runner:
        r = Runner(url)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()
        print(f"---- browser runner output ----\n{r.log_text()}")  # shown when a test fails


def _mqtt_port(srv) -> int:
    for line in srv.log:
        m = _MQTT_LISTEN_RE.search(line)
        if m:
            return int(m.group(2))
    pytest.fail(f"no MQTT listener in the log:\n{srv.log_text()}")


@async_test(180)
async def test_browser_nats_ws_and_mqtt_js_both_directions(server, runner_factory, tmp_path):
    tag = uuid.uuid4().hex[:8]
    runner = runner_factory(demo_url(server))
    ready = await asyncio.to_thread(runner.expect, "ready", READY_TIMEOUT)
    assert ready["url"] == demo_url(server)

    tcp_mqtt = Broker(kind="junction", port=_mqtt_port(server), nats_port=server.port)
    paho = Mqtt(tcp_mqtt, f"browser-peer-{tag}", V5)
    try:
        await asyncio.to_thread(paho.connect)
        async with Clients(server) as c:
            nc = await c.connect()
            from_nats = await nc.subscribe("demo.from_browser")
            # The bus is one: the page's MQTT publish is also seen by NATS.
            from_mqtt_on_nats = await nc.subscribe("demo.from_browser_mqtt")
            await sync_subs(nc)
            assert await asyncio.to_thread(paho.subscribe, "demo/from_browser_mqtt", 1) == [1]

            # -- to the browser: nats-py to nats.ws, paho (TCP) to mqtt.js, and across ----
            await nc.publish("demo.to_browser", f"hello from nats-py {tag}".encode())
            await nc.flush(timeout=5)
            await asyncio.to_thread(paho.publish, "demo/to_browser_mqtt", f"hello from paho {tag}".encode(), 1)
            # A NATS publish to demo.to_browser_mqtt reaches the page's MQTT subscription.
            await nc.publish("demo.to_browser_mqtt", f"nats to mqtt.js {tag}".encode())
            await nc.flush(timeout=5)
            shown = await asyncio.to_thread(runner.wait_for_received, [
                f"NATS demo.to_browser: hello from nats-py {tag}",
                f"MQTT demo/to_browser_mqtt: hello from paho {tag}",
                f"MQTT demo/to_browser_mqtt: nats to mqtt.js {tag}",
            ])
            assert len(shown) == 3, f"the page shows more than was sent: {shown!r}"

            # -- from the browser: a click on each button ---------------------------------
            runner.send(cmd="publish", via="nats", text=f"clicked NATS {tag}")
            await asyncio.to_thread(runner.expect, "published")
            msg = await from_nats.next_msg(timeout=10)
            assert (msg.subject, msg.data) == ("demo.from_browser", f"clicked NATS {tag}".encode())

            runner.send(cmd="publish", via="mqtt", text=f"clicked MQTT {tag}")
            await asyncio.to_thread(runner.expect, "published")
            got = await asyncio.to_thread(paho.expect, 10)
            assert (got.topic, got.payload) == ("demo/from_browser_mqtt", f"clicked MQTT {tag}".encode())
            msg = await from_mqtt_on_nats.next_msg(timeout=10)
            assert msg.data == f"clicked MQTT {tag}".encode()

            state = await asyncio.to_thread(runner.messages)
            assert state["sent"] == [f"NATS demo.from_browser: clicked NATS {tag}",
                                     f"MQTT demo/from_browser_mqtt: clicked MQTT {tag}"]
            # Nothing the page sent came back to it (it subscribes to other subjects).
            assert len(state["received"]) == 3, state["received"]

            shot = tmp_path / "ws-demo.png"
            runner.send(cmd="screenshot", path=str(shot))
            await asyncio.to_thread(runner.expect, "screenshot")
            assert shot.stat().st_size > 1000
    finally:
        paho.close()


def test_browser_page_reports_a_missing_listener(server_factory, runner_factory):
    """With no WebSocket listener the page served by Junction says so."""
    srv = server_factory(args=["--ws-port", "0"])
    assert srv.ws_port is None
    runner = runner_factory(demo_url(srv))
    with pytest.raises(AssertionError, match="did not connect"):
        runner.expect("ready", READY_TIMEOUT)
    status = runner.expect_logged("status")
    assert "WebSocket listener is off" in status["nats"], status


def test_browser_page_with_a_named_port_that_is_not_websocket(server, runner_factory):
    """?port= overrides the lookup; a port that speaks HTTP but not WebSocket is an error shown."""
    runner = runner_factory(demo_url(server) + f"?host=127.0.0.1&port={server.http_port}")
    with pytest.raises(AssertionError, match="did not connect"):
        runner.expect("ready", READY_TIMEOUT)
    status = runner.expect_logged("status")
    assert status["nats"].startswith("error"), status
    assert status["mqtt"].startswith("error"), status


def test_demo_page_is_served_by_junction(server):
    """/demo redirects to /demo/, which serves the page and its script with the right types."""
    base = f"http://127.0.0.1:{server.http_port}"
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as moved:
        opener.open(base + "/demo", timeout=5)
    assert moved.value.code == 308 and moved.value.headers["location"] == "/demo/"
    with urllib.request.urlopen(base + "/demo/", timeout=5) as r:
        assert r.headers["content-type"].startswith("text/html")
        page = r.read().decode()
    assert '<script type="module" src="demo.js">' in page
    with urllib.request.urlopen(base + "/demo/demo.js", timeout=5) as r:
        assert r.headers["content-type"].startswith("text/javascript")
        script = r.read().decode()
    # The pinned library versions are the ones the browser test installs.
    lock = json.loads((BROWSER_DIR / "package.json").read_text())["dependencies"]
    assert f'NATS_WS_VERSION = "{lock["nats.ws"]}"' in script
    assert f'MQTT_JS_VERSION = "{lock["mqtt"]}"' in script


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def demo_url(srv) -> str:
    return f"http://127.0.0.1:{srv.http_port}/demo/"
