"""Running Junction where nats-server runs (issue 12): signals (reload, log reopen, lame duck,
``--signal``), the pid and ports files, nats-server's flags and their errors, the configuration
check, nats-server's log line format, the defaults under the name ``nats-server``, an
unprivileged start from ``/``, and the default listener on IPv6 as well as IPv4.

Each test starts its own process with the exact command line it is about; nothing here goes
through the ``Server`` fixture's fixed flags.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import types
from pathlib import Path

import nats
import pytest

from conftest import BIN, IS_NATS_SERVER
from mqtt_helpers import DISCONNECT, V5, RawMqtt

pytestmark = pytest.mark.skipif(IS_NATS_SERVER, reason="runs Junction's own binary under several names")

READY = re.compile(r"Server is ready")
CLIENT = re.compile(r"Listening for client connections on (\S+):(\d+)")
MQTT = re.compile(r"Listening for MQTT clients on (?:mqtt://)?(\S+):(\d+)")
# nats-server's line: "[pid] 2026/12/06 17:10:29.123456 [INF] text".
LINE = re.compile(r"^\[(\d+)\] \d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6} \[(INF|WRN|ERR|DBG|TRC)\] ")
TIMEOUT = 10.0


class Proc:
    """A broker process whose merged output is collected line by line."""

    def __init__(self, args, cwd=None, exe=BIN, user=None, env=None):
        kw = {}
        if user is not None:
            pw = pwd.getpwnam(user)

            def drop():
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)

            kw["preexec_fn"] = drop
        self.proc = subprocess.Popen(
            [exe, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env if env is not None else dict(os.environ, NO_COLOR="1"),
            **kw,
        )
        self.lines: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for raw in iter(self.proc.stdout.readline, b""):
            with self.lock:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.lines)

    def wait_line(self, pattern, timeout=TIMEOUT, after=0):
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for line in self.lines[after:]:
                    m = rx.search(line)
                    if m:
                        return m
            if self.proc.poll() is not None:
                time.sleep(0.1)
                with self.lock:
                    for line in self.lines[after:]:
                        m = rx.search(line)
                        if m:
                            return m
                pytest.fail(f"process exited ({self.proc.returncode}) before logging {rx.pattern!r}:\n{self.text()}")
            time.sleep(0.02)
        pytest.fail(f"no line matching {rx.pattern!r} within {timeout}s:\n{self.text()}")

    def count(self) -> int:
        with self.lock:
            return len(self.lines)

    def port(self) -> int:
        return int(self.wait_line(CLIENT).group(2))

    def stop(self, sig=signal.SIGTERM, timeout=TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"did not exit within {timeout}s of {sig!r}:\n{self.text()}")


@pytest.fixture
def procs():
    started: list[Proc] = []

    def start(*args, **kw) -> Proc:
        p = Proc(*args, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


def run(args, cwd=None, exe=BIN, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def base_args(tmp_path, *extra):
    """Loopback, random ports, MQTT and WebSocket off, a data directory of the test's own."""
    return ["-a", "127.0.0.1", "-p", "-1", "-m", "0", "--mqtt-port", "0", "--ws-port", "0",
            "--data-dir", str(tmp_path / "data"), *extra]


async def connects(port, host="127.0.0.1", **kw) -> bool:
    """Whether nats-py connects (and a request round-trips through the server)."""
    try:
        nc = await nats.connect(f"nats://{host}:{port}", allow_reconnect=False, connect_timeout=3,
                                max_reconnect_attempts=0, **kw)
    except Exception:
        return False
    try:
        sub = await nc.subscribe("ops.check")
        await nc.publish("ops.check", b"x")
        msg = await sub.next_msg(timeout=3)
        return msg.data == b"x"
    finally:
        await nc.close()


def raw_nats(port):
    """A raw NATS connection past CONNECT; returns (socket, INFO dict)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    f = s.makefile("rb")
    line = f.readline()
    assert line.startswith(b"INFO "), line
    info = json.loads(line[5:])
    s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n')
    assert f.readline() == b"PONG\r\n"
    return s, f, info


# --------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------


def raw_nats_login(port, user, password):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    f = s.makefile("rb")
    assert f.readline().startswith(b"INFO ")
    connect = {"verbose": False, "pedantic": False, "protocol": 1, "user": user, "pass": password}
    s.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
    assert f.readline() == b"PONG\r\n"
    return s, f


def test_sighup_reloads_users_and_rechecks_open_connections(tmp_path, procs):
    conf = tmp_path / "auth.conf"
    users = lambda *u: "authorization { users: [ %s ] }\n" % ", ".join(u)
    alice = '{user: alice, password: "one"}'
    carol = '{user: carol, password: "three"}'
    dave_wide = '{user: dave, password: "four", permissions: {publish: ">"}}'
    dave_narrow = '{user: dave, password: "four", permissions: {publish: "only.this"}}'
    bob = '{user: bob, password: "two"}'
    conf.write_text(users(alice, carol, dave_wide))
    args = ["-a", "127.0.0.1", "-p", "-1", "-m", "0", "--mqtt-port", "-1", "--ws-port", "0",
            "--data-dir", str(tmp_path / "data"), "-c", str(conf)]
    p = procs(args)
    port = p.port()
    mqtt_port = int(p.wait_line(MQTT).group(2))
    p.wait_line(READY)
    assert asyncio.run(connects(port, user="alice", password="one"))
    a_sock, a_file = raw_nats_login(port, "alice", "one")
    c_sock, c_file = raw_nats_login(port, "carol", "three")
    d_sock, d_file = raw_nats_login(port, "dave", "four")
    m = RawMqtt(types.SimpleNamespace(port=mqtt_port), version=V5)
    m.connect("alice-device", username="alice", password=b"one")
    conf.write_text(users(bob, carol, dave_narrow))
    mark = p.count()
    p.proc.send_signal(signal.SIGHUP)
    p.wait_line("Reloaded server configuration", after=mark)
    p.wait_line(r"Reload checked 4 connections again: closed 3 ", after=mark)
    assert p.proc.poll() is None, "SIGHUP must not end the server"
    # alice is gone and dave's permissions shrank: both are closed with the NATS error.
    for f in (a_file, d_file):
        assert f.readline() == b"-ERR 'Authorization Violation'\r\n"
        assert f.readline() == b""
    pkt = m.expect(DISCONNECT)
    assert pkt.rc == 0x87
    # carol's rights did not change: her connection stays.
    c_sock.sendall(b"PING\r\n")
    assert c_file.readline() == b"PONG\r\n"
    assert not asyncio.run(connects(port, user="alice", password="one"))
    assert asyncio.run(connects(port, user="bob", password="two"))
    for s in (a_sock, c_sock, d_sock):
        s.close()
    assert p.stop() == 0


def test_reload_refuses_what_cannot_change_and_keeps_the_old_configuration(tmp_path, procs):
    conf = tmp_path / "r.conf"
    conf.write_text('server_name: first\nauthorization { token: "t1" }\n')
    p = procs(base_args(tmp_path, "-c", str(conf)))
    port = p.port()
    p.wait_line(READY)
    conf.write_text('server_name: second\nauthorization { token: "t2" }\n')
    mark = p.count()
    p.proc.send_signal(signal.SIGHUP)
    m = p.wait_line(r"\[ERR\] Failed to reload server configuration: (.*)", after=mark)
    assert "server_name" in m.group(1)
    # Nothing of the new file was applied: the old token still works, the new one does not.
    assert asyncio.run(connects(port, token="t1"))
    assert not asyncio.run(connects(port, token="t2"))
    # A broken file is refused the same way.
    conf.write_text('server_name: first\nauthorization { token: \n')
    mark = p.count()
    p.proc.send_signal(signal.SIGHUP)
    p.wait_line(r"\[ERR\] Failed to reload server configuration", after=mark)
    assert asyncio.run(connects(port, token="t1"))
    assert p.stop() == 0


def test_reload_changes_limits_for_new_connections(tmp_path, procs):
    conf = tmp_path / "limits.conf"
    conf.write_text("max_payload: 1MB\n")
    p = procs(["-a", "127.0.0.1", "-p", "-1", "-m", "-1", "--mqtt-port", "0", "--ws-port", "0",
               "--data-dir", str(tmp_path / "d"), "-c", str(conf)])
    port = p.port()
    http = int(p.wait_line(r"Starting http monitor on \S+:(\d+)").group(1))
    p.wait_line(READY)
    old_sock, old_file, old_info = raw_nats(port)
    assert old_info["max_payload"] == 1024 * 1024
    conf.write_text("max_payload: 2KB\nmax_pending: 32MB\nwrite_deadline: 3s\n")
    mark = p.count()
    p.proc.send_signal(signal.SIGHUP)
    p.wait_line("Reloaded: max_payload", after=mark)
    s, f, info = raw_nats(port)
    assert info["max_payload"] == 2048
    s.sendall(b"PUB big 4000\r\n" + b"x" * 4000 + b"\r\n")
    assert f.readline() == b"-ERR 'Maximum Payload Violation'\r\n"
    # The connection made before keeps the limit it was told.
    old_sock.sendall(b"PUB big 4000\r\n" + b"x" * 4000 + b"\r\nPING\r\n")
    assert old_file.readline() == b"PONG\r\n"
    import urllib.request
    varz = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http}/varz", timeout=5).read())
    assert varz["max_payload"] == 2048
    assert varz["max_pending"] == 32 * 1024 * 1024
    assert varz["write_deadline"] == 3_000_000_000
    s.close()
    old_sock.close()
    assert p.stop() == 0


def test_reload_changes_the_log_level(tmp_path, procs):
    conf = tmp_path / "l.conf"
    conf.write_text("debug: false\n")
    p = procs(base_args(tmp_path, "-c", str(conf)))
    port = p.port()
    p.wait_line(READY)
    asyncio.run(connects(port))
    assert "[DBG]" not in p.text()
    conf.write_text("debug: true\n")
    mark = p.count()
    p.proc.send_signal(signal.SIGHUP)
    p.wait_line("Reloaded: logging", after=mark)
    asyncio.run(connects(port))
    p.wait_line(r"\[DBG\] ", after=mark)
    assert p.stop() == 0


def test_sigusr1_reopens_the_log_file_after_rotation(tmp_path, procs):
    log = tmp_path / "junction.log"
    p = procs(base_args(tmp_path, "-l", str(log)))
    deadline = time.monotonic() + TIMEOUT
    while "Server is ready" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, f"no ready line in {log}: {p.text()}"
        time.sleep(0.05)
    assert p.text() == "", "with -l nothing goes to stderr"
    lines = log.read_text().splitlines()
    assert all(LINE.match(line) for line in lines), lines
    rotated = tmp_path / "junction.log.1"
    log.rename(rotated)
    p.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + TIMEOUT
    while "File log re-opened" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, f"the log was not reopened: {rotated.read_text()}"
        time.sleep(0.05)
    assert "user defined signal 1" in rotated.read_text()
    assert p.stop() == 0
    assert "Server Exiting" in log.read_text()
    assert "Server Exiting" not in rotated.read_text()


def test_log_size_limit_rotates(tmp_path, procs):
    log = tmp_path / "big.log"
    p = procs(base_args(tmp_path, "-l", str(log), "--log_size_limit", "600", "-DV"))
    deadline = time.monotonic() + TIMEOUT
    while "Server is ready" not in "".join(f.read_text() for f in tmp_path.glob("big.log*")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    port = int(CLIENT.search("".join(f.read_text() for f in tmp_path.glob("big.log*"))).group(2))
    for _ in range(3):
        assert asyncio.run(connects(port))
    rotated = sorted(tmp_path.glob("big.log.*"))
    assert rotated, list(tmp_path.iterdir())
    assert all(re.fullmatch(r"big\.log\.\d{4}\.\d\d\.\d\d\.\d\d\.\d\d\.\d\d\.\d{9}", f.name) for f in rotated)
    assert p.stop() == 0


def test_sigusr2_lame_duck_tells_nats_clients_and_closes_mqtt_5_with_0x8b(tmp_path, procs):
    conf = tmp_path / "ldm.conf"
    conf.write_text("lame_duck_duration: 3s\nlame_duck_grace_period: 1s\n")
    args = ["-a", "127.0.0.1", "-p", "-1", "-m", "0", "--mqtt-port", "-1", "--ws-port", "0",
            "--data-dir", str(tmp_path / "data"), "-c", str(conf)]
    p = procs(args)
    port = p.port()
    mqtt_port = int(p.wait_line(MQTT).group(2))
    p.wait_line(READY)
    s, f, info = raw_nats(port)
    assert "ldm" not in info
    m = RawMqtt(types.SimpleNamespace(port=mqtt_port), version=V5)
    m.connect("ldm-device")
    started = time.monotonic()
    p.proc.send_signal(signal.SIGUSR2)
    line = f.readline()
    assert line.startswith(b"INFO "), line
    assert json.loads(line[5:])["ldm"] is True
    # New clients are refused at once.
    p.wait_line("Entering lame duck mode")
    with pytest.raises(OSError):
        for _ in range(50):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.05)
    pkt = m.expect(DISCONNECT, timeout=TIMEOUT)
    assert pkt.rc == 0x8B
    assert time.monotonic() - started >= 0.9, "connections close after the grace period"
    assert p.proc.wait(TIMEOUT) == 0
    s.close()


def test_signal_flag_and_pid_file(tmp_path, procs):
    pid_file = tmp_path / "j.pid"
    p = procs(base_args(tmp_path, "-P", str(pid_file)))
    p.wait_line(READY)
    assert int(pid_file.read_text()) == p.proc.pid
    mark = p.count()
    r = run(["--signal", f"reload={pid_file}"])
    assert r.returncode == 0, r.stderr
    p.wait_line("Reloaded server configuration", after=mark)
    r = run(["--signal", "bogus"])
    assert r.returncode != 0 and "unknown signal" in r.stderr
    r = run(["-sl", f"quit={p.proc.pid}"])
    assert r.returncode == 0, r.stderr
    assert p.proc.wait(TIMEOUT) == 0
    assert not pid_file.exists(), "the pid file is removed at exit"


def test_ports_file(tmp_path, procs):
    args = ["-a", "127.0.0.1", "-p", "-1", "-m", "-1", "--mqtt-port", "-1", "--ws-port", "-1",
            "--data-dir", str(tmp_path / "data"), "--ports_file_dir", str(tmp_path)]
    p = procs(args)
    port = p.port()
    p.wait_line(READY)
    files = list(tmp_path.glob("junction_*.ports"))
    assert [f.name for f in files] == [f"junction_{p.proc.pid}.ports"]
    ports = json.loads(files[0].read_text())
    assert ports["nats"] == [f"nats://127.0.0.1:{port}"]
    assert ports["monitoring"][0].startswith("http://127.0.0.1:")
    assert ports["websocket"][0].startswith("ws://127.0.0.1:")
    assert ports["mqtt"][0].startswith("mqtt://127.0.0.1:")
    assert p.stop() == 0
    assert not files[0].exists()


# --------------------------------------------------------------------------
# Flags, configuration check, errors
# --------------------------------------------------------------------------


@pytest.mark.parametrize("args,expected", [
    (["-p", "99999"], "99999"),
    (["-m", "-7"], "-7"),
    (["--cluster", "nats://127.0.0.1:6222"], "leaf node"),
    (["--routes", "nats://127.0.0.1:6222"], "leaf node"),
    (["--user", "a"], "--user and --pass"),
    (["-c", "/nonexistent/junction.conf"], "/nonexistent/junction.conf"),
    (["--tls"], "--tlscert"),
])
def test_bad_flags_are_fatal_and_name_the_value(args, expected, tmp_path):
    r = run(args + ["--data-dir", str(tmp_path / "d")])
    assert r.returncode != 0
    assert expected in r.stderr, r.stderr


def test_unknown_keys_are_errors_with_their_place(tmp_path):
    conf = tmp_path / "typo.conf"
    conf.write_text("port: 4222\nmax_paylod: 1MB\n")
    r = run(["-c", str(conf)])
    assert r.returncode != 0
    assert f'{conf}:2:1: unknown field "max_paylod"' in r.stderr, r.stderr
    r = run(["-t", "-c", str(conf)])
    assert r.returncode != 0 and "max_paylod" in r.stderr


def test_dash_t_checks_a_file_and_exits(tmp_path):
    conf = tmp_path / "ok.conf"
    conf.write_text('port: 4999\ngateway { name: x }\nauthorization { user: a, password: b }\n')
    r = run(["-t", "-c", str(conf)])
    assert r.returncode == 0, r.stderr
    assert f"configuration file {conf} is valid" in r.stderr
    assert "'gateway' is not supported yet" in r.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text('authorization { user: a }\n')
    r = run(["-t", "-c", str(bad)])
    assert r.returncode != 0 and "password" in r.stderr


def test_flag_users_and_tokens(tmp_path, procs):
    p = procs(base_args(tmp_path, "--user", "u1", "--pass", "p1"))
    port = p.port()
    assert asyncio.run(connects(port, user="u1", password="p1"))
    assert not asyncio.run(connects(port, user="u1", password="nope"))
    assert p.stop() == 0
    p = procs(base_args(tmp_path, "--auth", "s3cret"))
    port = p.port()
    assert asyncio.run(connects(port, token="s3cret"))
    assert not asyncio.run(connects(port))
    assert p.stop() == 0


def test_go_style_flags_and_log_format(tmp_path, procs):
    p = procs(["-addr=127.0.0.1", "-port", "-1", "-m", "0", "--mqtt-port", "0", "--ws-port", "0",
               "-sd", str(tmp_path / "sd"), "-DV"])
    port = p.port()
    p.wait_line(READY)
    assert asyncio.run(connects(port))
    p.wait_line(r"\[TRC\] ")
    lines = p.text().splitlines()
    assert all(LINE.match(line) for line in lines), [line for line in lines if not LINE.match(line)]
    assert {int(LINE.match(line).group(1)) for line in lines} == {p.proc.pid}
    assert "  Version:  2.10.0 (junction " in p.text()
    assert p.stop() == 0
    p = procs(base_args(tmp_path, "-T=false"))
    p.wait_line(READY)
    assert all(re.match(r"^\[\d+\] \[(INF|WRN)\] ", line) for line in p.text().splitlines()), p.text()
    assert p.stop() == 0


# --------------------------------------------------------------------------
# Drop-in: as nats-server, unprivileged, IPv6
# --------------------------------------------------------------------------


def test_as_nats_server_two_instances_in_one_directory(tmp_path, procs):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "nats-server"
    exe.symlink_to(BIN)
    work = tmp_path / "work"
    work.mkdir()
    a = procs(["-a", "127.0.0.1", "-p", "-1"], cwd=work, exe=str(exe))
    b = procs(["-a", "127.0.0.1", "-p", "-1"], cwd=work, exe=str(exe))
    pa, pb = a.port(), b.port()
    a.wait_line(READY)
    b.wait_line(READY)
    for p in (a, b):
        assert "MQTT" not in p.text() and "websocket" not in p.text() and "http monitor" not in p.text()
    assert list(work.iterdir()) == [], "no data directory until something needs one"
    s, f, info = raw_nats(pa)
    assert info["version"] == "2.10.0"
    assert info["server_name"] == info["server_id"], "nats-server's default name"
    assert info["headers"] is True
    s.close()
    assert asyncio.run(connects(pb))
    r = run(["--version"], exe=str(exe))
    assert r.stdout.startswith("nats-server: v2.10.0"), r.stdout
    assert a.stop() == 0 and b.stop() == 0


def test_unprivileged_start_from_root_directory(tmp_path, procs):
    if os.geteuid() != 0:
        pytest.skip("needs root to start the broker as another user")
    user = "nats" if _has_user("nats") else "nobody"
    # The binary must be reachable by that user.
    exe = Path("/tmp") / f"junction-ops-{os.getpid()}"
    shutil.copy(BIN, exe)
    exe.chmod(0o755)
    try:
        env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "NO_COLOR": "1"}
        p = procs(["-a", "127.0.0.1", "-p", "-1", "-m", "0", "--mqtt-port", "-1", "--ws-port", "0"],
                  cwd="/", exe=str(exe), user=user, env=env)
        port = p.port()
        p.wait_line(READY)
        assert "cannot create the data directory junction-data here" in p.text()
        assert asyncio.run(connects(port))
        assert p.stop() == 0
    finally:
        exe.unlink()


def _has_user(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_default_listener_covers_ipv6_and_ipv4(tmp_path, procs):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    p = procs(["-p", "-1", "-m", "0", "--mqtt-port", "0", "--ws-port", "0", "--data-dir", str(tmp_path / "d")])
    m = p.wait_line(CLIENT)
    assert m.group(1) == "0.0.0.0"
    port = int(m.group(2))
    assert asyncio.run(connects(port, host="[::1]"))
    assert asyncio.run(connects(port, host="127.0.0.1"))
    # IPv4 clients are shown as IPv4 addresses.
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    info = json.loads(s.makefile("rb").readline()[5:])
    assert info["client_ip"] == "127.0.0.1"
    s.close()
    assert p.stop() == 0


UNIT = Path("/lib/systemd/system/nats-server.service")
PACKAGED_CONF = Path("/etc/nats-server.conf")


def test_debian_unit_runs_junction_as_nats_server(tmp_path, procs):
    """Debian's nats-server.service with Junction in nats-server's place: ExecStart with the
    packaged configuration, as user nats, from /, then ExecReload (HUP) and ExecStop (SIGINT),
    without systemd (the test runs the unit's command lines itself)."""
    if not UNIT.exists() or not PACKAGED_CONF.exists() or not _has_user("nats"):
        pytest.fail("Debian's nats-server package is missing: ./scripts/test installs it")
    if os.geteuid() != 0:
        pytest.skip("needs root to run as user nats")
    unit = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    start = unit["ExecStart"].split()
    assert start[0] == "/usr/sbin/nats-server" and start[1:] == ["-c", str(PACKAGED_CONF)], start
    assert unit["User"] == "nats"
    # The packaged file listens on 127.0.0.1:4222; a copy with a free port keeps the test
    # independent of whatever else runs here, and is otherwise the packaged text.
    text = PACKAGED_CONF.read_text()
    assert re.search(r"^port: 4222$", text, re.M), text
    # Where user nats can read it (pytest's own directories are private to root).
    bindir = Path("/tmp") / f"junction-unit-{os.getpid()}"
    bindir.mkdir()
    os.chmod(bindir, 0o755)
    conf = bindir / "nats-server.conf"
    conf.write_text(re.sub(r"^port: 4222$", "port: -1", text, flags=re.M))
    os.chmod(conf, 0o644)
    exe = bindir / "nats-server"
    shutil.copy(BIN, exe)
    exe.chmod(0o755)
    try:
        env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "NO_COLOR": "1"}
        p = procs(["-c", str(conf)], cwd="/", exe=str(exe), user="nats", env=env)
        port = p.port()
        p.wait_line(READY)
        assert asyncio.run(connects(port))
        main_pid = str(p.proc.pid)
        reload = [a.replace("$MAINPID", main_pid) for a in unit["ExecReload"].split()]
        mark = p.count()
        subprocess.run(reload, check=True, timeout=TIMEOUT)
        p.wait_line("Reloaded server configuration", after=mark)
        assert p.proc.poll() is None
        assert asyncio.run(connects(port))
        stop = [a.replace("$MAINPID", main_pid) for a in unit["ExecStop"].split()]
        subprocess.run(stop, check=True, timeout=TIMEOUT)
        assert p.proc.wait(TIMEOUT) == 0
    finally:
        shutil.rmtree(bindir)


def test_log_events_as_nats_server_logs_them(tmp_path, procs):
    """Authentication failures and permission violations are [ERR], slow consumers [INF], each
    line naming the client as nats-server does (`127.0.0.1:PORT - cid:N - ...`)."""
    conf = tmp_path / "events.conf"
    conf.write_text(
        "max_payload: 8KB\nmax_pending: 64KB\n"
        'authorization { users: [ {user: u, password: p, permissions: {publish: {deny: "secret.>"}, '
        'subscribe: {deny: "hidden.>"}}} ] }\n')
    p = procs(base_args(tmp_path, "-c", str(conf)))
    port = p.port()
    p.wait_line(READY)
    assert not asyncio.run(connects(port, user="u", password="wrong"))
    p.wait_line(r"^\[\d+\] \S+ \S+ \[ERR\] 127\.0\.0\.1:\d+ - cid:\d+ - authentication error")
    s, f = raw_nats_login(port, "u", "p")
    s.sendall(b"PUB secret.x 1\r\nx\r\nSUB hidden.y 7\r\nPING\r\n")
    assert f.readline() == b"-ERR 'Permissions Violation for Publish to \"secret.x\"'\r\n"
    assert f.readline() == b"-ERR 'Permissions Violation for Subscription to \"hidden.y\"'\r\n"
    p.wait_line(r'\[ERR\] 127\.0\.0\.1:\d+ - cid:\d+ - Publish Violation - Subject "secret\.x"')
    p.wait_line(r'\[ERR\] 127\.0\.0\.1:\d+ - cid:\d+ - Subscription Violation - Subject "hidden\.y", SID 7')
    # A subscriber that never reads, behind a publisher: past max_pending it is cut off.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", port))
    sf = slow.makefile("rb")
    sf.readline()
    slow.sendall(b'CONNECT {"user":"u","pass":"p","verbose":false}\r\nSUB flood 1\r\nPING\r\n')
    assert sf.readline() == b"PONG\r\n"
    chunk = b"PUB flood 8000\r\n" + b"z" * 8000 + b"\r\n"
    for _ in range(400):
        s.sendall(chunk)
    s.sendall(b"PING\r\n")
    p.wait_line(r"\[INF\] 127\.0\.0\.1:\d+ - cid:\d+ - Slow Consumer Detected: MaxPending of 65536 Exceeded")
    slow.close()
    s.close()
    assert p.stop() == 0


def test_lame_duck_moves_nats_py_clients_to_a_second_server(tmp_path, procs):
    """Two servers; nats-py knows both. Lame duck mode on the first: the client hears INFO ldm,
    moves to the second, and its subscription and publications work there."""
    conf = tmp_path / "ldm2.conf"
    conf.write_text("lame_duck_duration: 4s\nlame_duck_grace_period: 1s\n")
    a = procs(base_args(tmp_path / "a", "-c", str(conf)))
    b = procs(base_args(tmp_path / "b"))
    pa, pb = a.port(), b.port()
    a.wait_line(READY)
    b.wait_line(READY)

    async def scenario():
        ldm_seen = asyncio.Event()
        reconnected = asyncio.Event()

        async def on_ldm():
            ldm_seen.set()

        async def on_reconnect():
            reconnected.set()

        nc = await nats.connect(servers=[f"nats://127.0.0.1:{pa}", f"nats://127.0.0.1:{pb}"],
                                dont_randomize=True, reconnect_time_wait=0.2, max_reconnect_attempts=20,
                                lame_duck_mode_cb=on_ldm, reconnected_cb=on_reconnect)
        try:
            assert nc.connected_url.port == pa
            got = []
            async def collect(m):
                got.append(m.data)

            sub = await nc.subscribe("ldm.flow", cb=collect)
            await nc.flush()
            a.proc.send_signal(signal.SIGUSR2)
            await asyncio.wait_for(ldm_seen.wait(), 5)
            await asyncio.wait_for(reconnected.wait(), 15)
            assert nc.connected_url.port == pb
            await nc.publish("ldm.flow", b"on the second server")
            await nc.flush()
            for _ in range(50):
                if got:
                    break
                await asyncio.sleep(0.05)
            assert got == [b"on the second server"]
            await sub.unsubscribe()
        finally:
            await nc.close()

    asyncio.run(scenario())
    assert a.proc.wait(TIMEOUT) == 0
    assert b.stop() == 0


def test_reload_under_load_drops_no_connection_whose_rights_did_not_change(tmp_path, procs):
    """Publishers and subscribers run while the configuration is reloaded five times (a user
    added each time): no connection closes, and every message of the run arrives."""
    conf = tmp_path / "load.conf"
    users = ['{user: "w%d", password: "p%d"}' % (i, i) for i in range(4)]
    conf.write_text("authorization { users: [ %s ] }\n" % ", ".join(users))
    p = procs(base_args(tmp_path, "-c", str(conf)))
    port = p.port()
    p.wait_line(READY)

    async def scenario():
        clients = [await nats.connect(f"nats://127.0.0.1:{port}", user=f"w{i}", password=f"p{i}",
                                      allow_reconnect=False) for i in range(4)]
        counts = [0, 0]

        async def count(msg):
            counts[0 if msg.subject == "load.a" else 1] += 1

        await clients[0].subscribe("load.a", cb=count)
        await clients[1].subscribe("load.b", cb=count)
        for c in clients[:2]:
            await c.flush()
        sent = 0
        for round_ in range(5):
            for _ in range(200):
                await clients[2].publish("load.a", b"x")
                await clients[3].publish("load.b", b"y")
                sent += 1
            more = users + ['{user: "extra%d", password: "e"}' % j for j in range(round_ + 1)]
            conf.write_text("authorization { users: [ %s ] }\n" % ", ".join(more))
            mark = p.count()
            p.proc.send_signal(signal.SIGHUP)
            p.wait_line(r"Reload checked \d+ connections again: closed 0 ", after=mark)
        for c in clients:
            await c.flush()
        for _ in range(100):
            if counts == [sent, sent]:
                break
            await asyncio.sleep(0.05)
        assert counts == [sent, sent], (counts, sent)
        assert all(c.is_connected for c in clients)
        for c in clients:
            await c.close()

    asyncio.run(scenario())
    assert p.stop() == 0


def test_remote_syslog_receives_rfc3164_lines(tmp_path, procs):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    port = rx.getsockname()[1]
    p = procs(base_args(tmp_path, "-r", f"udp://127.0.0.1:{port}"))
    lines = []
    deadline = time.monotonic() + TIMEOUT
    while not any("Server is ready" in l for l in lines):
        assert time.monotonic() < deadline, lines
        lines.append(rx.recv(4096).decode())
    ready = [l for l in lines if "Server is ready" in l][0]
    # Facility daemon (3), severity informational (6): <30>; syslog adds the time itself.
    assert re.fullmatch(r"<30>junction\[%d\]: \[INF\] Server is ready" % p.proc.pid, ready), ready
    assert p.text() == "", "with syslog nothing goes to stderr"
    assert p.stop() == 0
    rx.close()


def ws_handshake_status(port, origin):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               f"Origin: {origin}\r\n\r\n").encode())
    status = s.makefile("rb").readline()
    s.close()
    return int(status.split()[1])


def test_reload_applies_mqtt_and_websocket_settings(tmp_path, procs):
    conf = tmp_path / "mw.conf"
    block = ('mqtt {{ port: -1, max_packet_size: {mps} }}\n'
             'websocket {{ port: -1, no_tls: true, allowed_origins: ["{origin}"] }}\n')
    conf.write_text(block.format(mps=1000, origin="http://a.example"))
    p = procs(["-a", "127.0.0.1", "-p", "-1", "-m", "0", "--data-dir", str(tmp_path / "d"), "-c", str(conf)])
    p.port()
    mqtt_port = int(p.wait_line(MQTT).group(2))
    ws_port = int(p.wait_line(r"Listening for websocket clients on ws://\S+:(\d+)").group(1))
    p.wait_line(READY)
    m = RawMqtt(types.SimpleNamespace(port=mqtt_port), version=V5)
    assert m.connect("before").props.get(0x27) == 1000
    assert ws_handshake_status(ws_port, "http://a.example") == 101
    assert ws_handshake_status(ws_port, "http://b.example") == 403
    conf.write_text(block.format(mps=2000, origin="http://b.example"))
    mark = p.count()
    p.proc.send_signal(signal.SIGHUP)
    p.wait_line("Reloaded: mqtt", after=mark)
    p.wait_line("Reloaded: websocket", after=mark)
    p.wait_line("Reloaded server configuration", after=mark)
    m2 = RawMqtt(types.SimpleNamespace(port=mqtt_port), version=V5)
    assert m2.connect("after").props.get(0x27) == 2000
    assert ws_handshake_status(ws_port, "http://b.example") == 101
    assert ws_handshake_status(ws_port, "http://a.example") == 403
    assert p.stop() == 0


def test_reload_rewires_account_imports_and_exports(tmp_path, procs):
    conf = tmp_path / "acc.conf"

    def write(imports, exports='[ { stream: "feed.>" } ]'):
        conf.write_text(
            "accounts {\n"
            f"  A: {{ users: [ {{user: a, password: a}} ], exports: {exports} }}\n"
            f"  B: {{ users: [ {{user: b, password: b}} ], imports: {imports} }}\n"
            "}\n")

    write('[ { stream: { account: A, subject: "feed.>" } } ]')
    p = procs(base_args(tmp_path, "-c", str(conf)))
    port = p.port()
    p.wait_line(READY)

    async def scenario():
        a = await nats.connect(f"nats://127.0.0.1:{port}", user="a", password="a")
        b = await nats.connect(f"nats://127.0.0.1:{port}", user="b", password="b")
        plain = await b.subscribe("feed.x")
        prefixed = await b.subscribe("in.feed.x")
        await b.flush()

        async def publish(text):
            await a.publish("feed.x", text)
            await a.flush()
            await asyncio.sleep(0.2)

        async def drain(sub):
            got = []
            while True:
                try:
                    got.append((await sub.next_msg(timeout=0.1)).data)
                except Exception:
                    return got

        async def reload(expect):
            mark = p.count()
            p.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(p.wait_line, expect, TIMEOUT, mark)

        await publish(b"one")
        assert await drain(plain) == [b"one"]
        write("[]")
        await reload("Reloaded: accounts")
        await publish(b"two")
        assert await drain(plain) == [] and await drain(prefixed) == []
        write('[ { stream: { account: A, subject: "feed.>" }, prefix: "in" } ]')
        await reload("Reloaded: accounts")
        await publish(b"three")
        assert await drain(prefixed) == [b"three"] and await drain(plain) == []
        # An import no export allows fails the reload; the wiring in force stays.
        write('[ { stream: { account: A, subject: "other.>" } } ]')
        await reload(r"\[ERR\] Failed to reload server configuration: .*not authorized by any export")
        await publish(b"four")
        assert await drain(prefixed) == [b"four"]
        assert a.is_connected and b.is_connected, "rights unchanged: nobody was closed"
        await a.close()
        await b.close()

    asyncio.run(scenario())
    assert p.stop() == 0
