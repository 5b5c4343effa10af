"""Helpers for the durability tests (test_durability.py) and scripts/soak-durability.

A broker under test that keeps its durable state in one data directory and can
be crashed (SIGKILL) and started again on the same directory, with new random
ports each time. Independent of conftest's ``Server`` so that the working
directory, the data-directory flags and processes that are expected to *fail*
to start are all under the test's control.

``MQTT_BROKER=mosquitto`` runs the same scenarios against Debian's mosquitto
(``persistence true`` in the data directory) to check the clients and the
expectations. mosquitto writes its store only on a clean shutdown, so with it
a "crash" is SIGTERM, not SIGKILL: it checks the tests, not crash safety.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import paho.mqtt.client as paho

from mqtt_helpers import HOST, MOSQUITTO_BIN, V5, Broker, Mqtt

REPO = Path(__file__).resolve().parents[2]

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CLIENT_RE = re.compile(r"Listening for client connections on ([0-9.]+):(\d+)")
_HTTP_RE = re.compile(r"Starting http monitor on (?:https?://)?([0-9.]+):(\d+)")
_MQTT_RE = re.compile(r"Listening for MQTT clients on (?:mqtt://)?([0-9.]+):(\d+)")
_READY_RE = re.compile(r"Server is ready")

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def default_bin() -> str:
    return os.environ.get("JUNCTION_BIN", str(REPO / "target" / "debug" / "junction"))


class StartFailed(AssertionError):
    def __init__(self, msg: str, rc, log: str):
        super().__init__(f"{msg} (exit code {rc}); log:\n{log}")
        self.rc = rc
        self.log = log


class Node:
    """One broker process (one incarnation on a data directory)."""

    def __init__(self, cmd: list, cwd: Path | None = None, kind: str = "junction", mqtt_port: int | None = None):
        self.cmd = [str(c) for c in cmd]
        self.cwd = cwd
        self.kind = kind
        self.proc: subprocess.Popen | None = None
        self.nats_port: int | None = None
        self.http_port: int | None = None
        self.mqtt_port: int | None = mqtt_port
        self.log: list[str] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self.returncode: int | None = None
        self.killed = False

    def spawn(self) -> "Node":
        env = dict(os.environ, NO_COLOR="1")
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        return self

    def start(self, timeout: float = START_TIMEOUT) -> "Node":
        self.spawn()
        if self.kind == "mosquitto":
            self._wait_port(timeout)
            return self
        if not self._ready.wait(timeout) or not self.running():
            self.kill()
            raise StartFailed(f"broker did not become ready within {timeout}s", self.proc.poll(), self.log_text())
        if self.mqtt_port is None or self.http_port is None or self.nats_port is None:
            self.kill()
            raise StartFailed("broker did not log its NATS, MQTT and HTTP ports", self.proc.poll(), self.log_text())
        return self

    def _wait_port(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            try:
                with socket.create_connection((HOST, self.mqtt_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise StartFailed("mosquitto did not start", self.proc.poll(), self.log_text())

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
            with self._lock:
                self.log.append(line)
            for rx, attr in ((_CLIENT_RE, "nats_port"), (_HTTP_RE, "http_port"), (_MQTT_RE, "mqtt_port")):
                m = rx.search(line)
                if m and self.kind == "junction":
                    setattr(self, attr, int(m.group(2)))
            if _READY_RE.search(line):
                self._ready.set()
        self._ready.set()

    def log_text(self, last: int = 200) -> str:
        with self._lock:
            return "\n".join(self.log[-last:])

    def full_log(self) -> str:
        with self._lock:
            return "\n".join(self.log)

    def saw_ready(self) -> bool:
        with self._lock:
            return any(_READY_RE.search(line) for line in self.log)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (a crash) and wait for the process to be gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            self.killed = True
        if self.proc is not None:
            self.returncode = self.proc.returncode

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; the exit code, or None when it did not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        self.returncode = self.proc.returncode
        if self._reader is not None:
            self._reader.join(2)
        return self.returncode

    def wait_exit(self, timeout: float) -> int | None:
        """Wait for the process to exit on its own; its exit code, or None (then it is killed)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        if self._reader is not None:
            self._reader.join(2)
        self.returncode = self.proc.returncode
        return self.returncode

    def broker(self) -> Broker:
        return Broker(kind=self.kind, port=self.mqtt_port, nats_port=self.nats_port, http_port=self.http_port,
                      process=self)

    def varz(self) -> dict:
        url = f"http://{HOST}:{self.http_port}/varz"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def junction_cmd(bin_path: str, data_args: list, config_path: Path | None = None) -> list:
    cmd = [bin_path, "-a", HOST, "-p", "-1", "-m", "-1", "--mqtt-port", "-1", "--ws-port", "-1"]
    if config_path is not None:
        cmd += ["-c", str(config_path)]
    return cmd + list(data_args)


def mosquitto_conf(port: int, data_dir: Path, max_queued: int | None) -> str:
    lines = [
        f"listener {port} {HOST}",
        "allow_anonymous true",
        "set_tcp_nodelay true",
        "persistence true",
        f"persistence_location {data_dir}/",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "max_inflight_messages 0",
    ]
    lines.append(f"max_queued_messages {max_queued if max_queued is not None else 1000000}")
    if os.geteuid() == 0:
        lines.append("user root")
    return "\n".join(lines) + "\n"


class Durable:
    """The broker under test on one data directory, across crashes and restarts.

    ``data_args`` are the data flags passed to Junction (default
    ``["--data-dir", data_dir]``); pass ``[]`` to rely on the default or the
    config file. ``config`` is Junction config text (nats-server format).
    """

    def __init__(self, workdir: Path, data_dir: Path | None = None, *, kind: str = "junction",
                 config: str | None = None, data_args: list | None = None, cwd: Path | None = None,
                 max_queued: int | None = None, bin_path: str | None = None):
        self.workdir = Path(workdir)
        self.data_dir = Path(data_dir) if data_dir is not None else self.workdir / "data"
        self.kind = kind
        self.config = config
        self.data_args = ["--data-dir", str(self.data_dir)] if data_args is None else list(data_args)
        self.cwd = cwd
        self.max_queued = max_queued
        self.bin = bin_path or default_bin()
        self.nodes: list[Node] = []
        self.node: Node | None = None

    def command(self) -> list:
        config_path = None
        if self.config is not None:
            config_path = self.workdir / "junction.conf"
            config_path.write_text(self.config)
        return junction_cmd(self.bin, self.data_args, config_path)

    def launch(self) -> Node:
        """A new process on the directory, not waited for (for starts expected to fail)."""
        node = Node(self.command(), cwd=self.cwd)
        self.nodes.append(node)
        return node.spawn()

    def start(self) -> Broker:
        if self.kind == "mosquitto":
            self.data_dir.mkdir(parents=True, exist_ok=True)
            port = free_port()
            conf = self.workdir / f"mosquitto-{port}.conf"
            conf.write_text(mosquitto_conf(port, self.data_dir, self.max_queued))
            node = Node([MOSQUITTO_BIN, "-c", conf], kind="mosquitto", mqtt_port=port)
        else:
            node = Node(self.command(), cwd=self.cwd)
        self.nodes.append(node)
        node.start()
        self.node = node
        return node.broker()

    def crash(self) -> None:
        """SIGKILL the running broker (mosquitto: SIGTERM, as it only persists on a clean stop)."""
        assert self.node is not None and self.node.running(), "no running broker to crash"
        if self.kind == "mosquitto":
            self.node.terminate()
        else:
            self.node.kill()

    def restart(self) -> Broker:
        if self.node is not None and self.node.running():
            self.crash()
        return self.start()

    def close(self) -> list:
        """Stop what still runs (SIGTERM, must exit 0); returns problems found."""
        problems = []
        for node in self.nodes:
            if node.running():
                rc = node.terminate()
                if rc is None:
                    node.kill()
                    problems.append(f"broker (MQTT port {node.mqtt_port}) did not exit within {STOP_TIMEOUT}s of SIGTERM")
                elif rc != 0:
                    problems.append(f"broker (MQTT port {node.mqtt_port}) exited {rc} after SIGTERM")
        return problems

    def logs(self) -> str:
        out = []
        for i, node in enumerate(self.nodes):
            out.append(f"---- broker incarnation {i} (MQTT port {node.mqtt_port}, rc {node.proc.poll() if node.proc else None}) ----")
            out.append(node.log_text(80))
        return "\n".join(out)


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------


def session_client(broker: Broker, client_id: str, version: int, expiry: int = 3600, **kw) -> Mqtt:
    """A paho client with a persistent session (3.1.1 clean_session=False; 5.0 expiry > 0).
    Connect with ``.connect()`` (5.0: clean_start False unless ``clean=True`` is passed to connect)."""
    if version == V5:
        return Mqtt(broker, client_id, V5, clean=False, session_expiry=expiry, **kw)
    return Mqtt(broker, client_id, version, clean=False, **kw)


class BurstResult:
    def __init__(self, published: int, acked: set, refused: dict, killed: bool, elapsed: float):
        self.published = published
        self.acked = acked
        self.refused = refused
        self.killed = killed
        self.elapsed = elapsed


def burst(broker: Broker, version: int, qos: int, n: int, topic: str, *, durable: Durable | None = None,
          kill_after: int | None = None, client: Mqtt | None = None, inflight: int = 1000,
          timeout: float = 180.0, keep_open: bool = False) -> tuple[BurstResult, Mqtt]:
    """Publish payloads b"0".. b"n-1" at ``qos``; wait for every acknowledgement
    (QoS 1: PUBACK; QoS 2: PUBCOMP, which paho reports, and which comes after
    the PUBREC). With ``kill_after=k`` the broker is crashed as soon as the
    publisher has seen k acknowledgements (publishing stops there); then every
    acknowledgement that reached the publisher before the connection dropped is
    in ``acked``. Returns (result, client); the client is closed unless
    ``keep_open``.
    """
    pub = client
    if pub is None:
        pub = Mqtt(broker, f"burst-{os.getpid()}-{time.monotonic_ns()}", version, clean=True)
        pub.client.max_inflight_messages_set(inflight)
        pub.connect()
    mids: dict[int, int] = {}
    killed = False
    t0 = time.monotonic()

    def maybe_kill() -> bool:
        nonlocal killed
        if kill_after is not None and not killed and len(pub.puback_rcs) >= kill_after:
            durable.crash()
            killed = True
        return killed

    for i in range(n):
        info = pub.client.publish(topic, str(i).encode(), qos)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            assert killed or maybe_kill() or not pub.client.is_connected(), f"publish {i} failed locally: {info.rc}"
            break
        mids[info.mid] = i
        if i % 25 == 0 and maybe_kill():
            break
    deadline = time.monotonic() + timeout
    if kill_after is not None:
        while not maybe_kill():
            if time.monotonic() >= deadline:
                raise AssertionError(f"the publisher saw only {len(pub.puback_rcs)} of {kill_after} acknowledgements "
                                     f"within {timeout}s")
            if len(pub.puback_rcs) >= len(mids):
                # Everything was acknowledged before the threshold: crash now.
                durable.crash()
                killed = True
                break
            time.sleep(0.001)
        # Every acknowledgement the broker sent before it died counts: wait until
        # paho has read the connection to its end.
        assert pub.disconnected.wait(15), "the publisher did not notice the crash within 15s"
    else:
        with pub._cond:
            ok = pub._cond.wait_for(lambda: len(pub.puback_rcs) >= len(mids), max(0.0, deadline - time.monotonic()))
        assert ok, (f"only {len(pub.puback_rcs)} of {len(mids)} QoS {qos} publishes acknowledged within {timeout}s "
                    f"(connected: {pub.client.is_connected()}, disconnect rc {pub.disconnect_rc})")
    with pub._cond:
        acks = dict(pub.puback_rcs)
    acked = {mids[m] for m, rc in acks.items() if m in mids and rc < 0x80}
    refused = {mids[m]: rc for m, rc in acks.items() if m in mids and rc >= 0x80}
    res = BurstResult(len(mids), acked, refused, killed, time.monotonic() - t0)
    if not keep_open:
        pub.close()
    return res, pub


def collect(sub: Mqtt, topic: str, need: set, timeout: float = 120.0, settle: float = 1.0) -> Counter:
    """Count payload ids arriving on ``sub`` until every id in ``need`` was seen
    (bounded by ``timeout``), then for ``settle`` more seconds of quiet (to see
    duplicates). Returns a Counter id -> times received; does not assert."""
    counts: Counter = Counter()
    seen_need = 0
    deadline = time.monotonic() + timeout
    import queue as _q

    while seen_need < len(need):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            m = sub.messages.get(timeout=min(remaining, 0.5))
        except _q.Empty:
            continue
        assert m.topic == topic, f"message on unexpected topic {m.topic!r} ({m.payload[:40]!r})"
        i = int(m.payload)
        counts[i] += 1
        if counts[i] == 1 and i in need:
            seen_need += 1
    quiet_until = time.monotonic() + settle
    while time.monotonic() < quiet_until and time.monotonic() < deadline + settle:
        try:
            m = sub.messages.get(timeout=max(0.0, quiet_until - time.monotonic()))
        except _q.Empty:
            break
        assert m.topic == topic, f"message on unexpected topic {m.topic!r}"
        counts[int(m.payload)] += 1
        quiet_until = time.monotonic() + settle
    return counts


def describe_ids(ids) -> str:
    ids = sorted(ids)
    if not ids:
        return "none"
    # compress into ranges
    ranges, start, prev = [], ids[0], ids[0]
    for i in ids[1:]:
        if i != prev + 1:
            ranges.append((start, prev))
            start = i
        prev = i
    ranges.append((start, prev))
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:12])
    if len(ranges) > 12:
        text += f", ... ({len(ranges)} ranges)"
    return f"{len(ids)} ids: {text}"


def check_delivery(counts: Counter, need: set, published: int, qos: int) -> list:
    """Problems with a delivery: missing acknowledged ids, unknown ids, and (QoS 2) duplicates."""
    problems = []
    missing = need - set(counts)
    if missing:
        problems.append(f"missing {describe_ids(missing)}")
    unknown = [i for i in counts if not 0 <= i < published]
    if unknown:
        problems.append(f"ids never published: {describe_ids(unknown)}")
    if qos == 2:
        dups = [i for i, c in counts.items() if c > 1]
        if dups:
            problems.append(f"QoS 2 duplicates: {describe_ids(dups)}")
    return problems


# --------------------------------------------------------------------------
# Fault injection: crashes at random points under mixed QoS 1/2 load
# --------------------------------------------------------------------------


def mixed_burst(broker: Broker, version: int, qos_of: list, topic: str, durable: Durable, kill_after: int,
                inflight: int = 200, timeout: float = 120.0) -> tuple[set, set]:
    """Publish payloads b"0".. with QoS ``qos_of[i]`` (1 or 2) from one client and crash the
    broker once the publisher has seen ``kill_after`` acknowledgements (PUBACK, or PUBCOMP for
    QoS 2). Returns (ids published, ids acknowledged before the crash)."""
    pub = Mqtt(broker, f"soak-pub-{os.getpid()}-{time.monotonic_ns()}", version, clean=True)
    pub.client.max_inflight_messages_set(inflight)
    pub.connect()
    mids: dict[int, int] = {}
    killed = False

    def acks() -> int:
        with pub._cond:
            return len(pub.puback_rcs)

    try:
        for i, qos in enumerate(qos_of):
            info = pub.client.publish(topic, str(i).encode(), qos)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                break
            mids[info.mid] = i
            if i % 20 == 0 and acks() >= kill_after:
                break
        deadline = time.monotonic() + timeout
        while acks() < min(kill_after, len(mids)):
            assert time.monotonic() < deadline, f"only {acks()} of {kill_after} acknowledgements in {timeout}s"
            time.sleep(0.001)
        durable.crash()
        killed = True
        assert pub.disconnected.wait(15), "the publisher did not notice the crash"
        with pub._cond:
            done = dict(pub.puback_rcs)
        acked = {mids[m] for m, rc in done.items() if m in mids and rc < 0x80}
        return set(mids.values()), acked
    finally:
        if not killed and durable.node is not None and durable.node.running():
            durable.crash()
        pub.close()


def soak_iteration(i: int, rng, bin_path: str, n: int, base: Path) -> tuple[bool, str]:
    """One fault-injection iteration: a publisher sends ``n`` messages of random QoS 1/2 to two
    persistent subscribers, one connected throughout (it resumes its session with the same
    client, which keeps its half of the QoS 2 handshakes) and one away; the broker is killed
    (SIGKILL) at a random point and restarted on the same data directory. Every acknowledged
    message must reach both subscribers; a QoS 2 message at most once. Returns (ok, a line)."""
    version = rng.choice([4, V5])
    qos_of = [rng.choice([1, 2]) for _ in range(n)]
    r = rng.random()
    kill_after = 1 if r < 0.05 else n if r < 0.1 else rng.randint(1, n)
    work = base / f"iter-{i}"
    work.mkdir(parents=True)
    d = Durable(work, work / "data", bin_path=bin_path)
    topic = f"soak/{i}"
    subs: list = []
    line = ""
    ok = False
    try:
        b = d.start()
        online = session_client(b, f"soak-online-{i}", version)
        away = session_client(b, f"soak-away-{i}", version)
        subs += [online, away]
        for s in (online, away):
            s.connect(clean=True) if version == V5 else s.connect()
            assert s.subscribe(topic, 2) == [2], "SUBACK did not grant QoS 2"
        away.disconnect()
        published, acked = mixed_burst(b, version, qos_of, topic, d, kill_after)
        b = d.start()
        online.reconnect(b)
        away2 = session_client(b, f"soak-away-{i}", version)
        subs.append(away2)
        away2.connect()
        problems = []
        for name, s in (("online", online), ("away", away2)):
            counts = collect(s, topic, acked, timeout=120, settle=1.0)
            for p in check_delivery(counts, acked, len(published), 1):
                problems.append(f"{name}: {p}")
            dups = sorted(k for k, c in counts.items() if c > 1 and qos_of[k] == 2)
            if dups:
                problems.append(f"{name}: QoS 2 duplicates: {describe_ids(dups)}")
        if not away2.session_present:
            problems.append("the away subscriber's session was not present after the restart")
        line = (f"v{version} published={len(published):5d} acked={len(acked):5d} kill@{kill_after:5d} "
                f"qos2={sum(1 for k in published if qos_of[k] == 2):5d}")
        ok = not problems
        if problems:
            line += "  FAIL: " + "; ".join(problems)
    except Exception as e:  # an error is a failed iteration, with the broker's log
        line = f"ERROR {type(e).__name__}: {e}".splitlines()[0] + "\n" + d.logs()[-3000:]
    finally:
        for s in subs:
            s.close()
        problems = d.close()
        if problems:
            ok = False
            line += "  FAIL: " + "; ".join(problems)
    return ok, line
