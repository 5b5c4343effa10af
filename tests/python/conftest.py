"""Fixtures and helpers for the end-to-end suite.

Every test drives the real Junction binary (``JUNCTION_BIN``, default
``<repo>/target/debug/junction``) over 127.0.0.1, with random ports, using the
unmodified nats-py client or raw sockets where the exact wire bytes matter.

The suite also runs unchanged against nats-server itself
(``JUNCTION_BIN=/usr/sbin/nats-server JUNCTION_EXPECT_EXIT=1``), which is how
its expectations were checked.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import nats
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("JUNCTION_BIN", str(REPO / "target" / "debug" / "junction"))

IS_NATS_SERVER = "nats-server" in os.path.basename(BIN)
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
# Junction exits 0 on SIGTERM (as nats-server >= 2.11 does). nats-server 2.9
# and 2.10 exit 1; set JUNCTION_EXPECT_EXIT=1 when pointing the suite at them.
EXPECT_EXIT = int(os.environ.get("JUNCTION_EXPECT_EXIT", "0"))

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CLIENT_RE = re.compile(r"Listening for client connections on ([0-9.]+):(\d+)")
_HTTP_RE = re.compile(r"Starting http monitor on (?:https?://)?([0-9.]+):(\d+)")
_WS_RE = re.compile(r"Listening for websocket clients on (wss?)://([0-9.]+):(\d+)")
_READY_RE = re.compile(r"Server is ready")


# --------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------


class Server:
    """One running broker process, its ports and its log."""

    def __init__(self, config: str | None = None, workdir: Path | None = None, args=(), ws_flag: bool = True):
        self.config = config
        self.workdir = workdir
        self.args = list(args)
        # --ws-port -1 unless the test sets the WebSocket port itself (config file or its own flag).
        self.ws_flag = ws_flag
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.http_port: int | None = None
        # From "Listening for websocket clients on ws://HOST:PORT" (wss:// with TLS); None when off.
        self.ws_port: int | None = None
        self.ws_host: str | None = None
        self.ws_scheme: str | None = None
        self.log: list[str] = []
        self._log_lock = threading.Lock()
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self.returncode: int | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "Server":
        if not os.path.exists(BIN):
            pytest.fail(f"server binary not found at {BIN}: run `cargo build` first")
        cmd = [BIN, "-a", "127.0.0.1", "-p", "-1", "-m", "-1"]
        # nats-server (the reference, JUNCTION_BIN=/usr/sbin/nats-server) has no such flags.
        if not IS_NATS_SERVER:
            cmd += ["--mqtt-port", "-1"]
            if self.ws_flag:
                cmd += ["--ws-port", "-1"]
        if self.config is not None:
            assert self.workdir is not None
            path = self.workdir / f"server-{id(self)}.conf"
            path.write_text(self.config)
            cmd += ["-c", str(path)]
        cmd += self.args
        cmd += _data_dir_args(self)
        env = dict(os.environ, NO_COLOR="1")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if not self._ready.wait(START_TIMEOUT):
            self.kill()
            pytest.fail(f"server did not become ready within {START_TIMEOUT}s; log:\n{self.log_text()}")
        if self.port is None or self.http_port is None:
            self.kill()
            pytest.fail(f"server did not log its ports; log:\n{self.log_text()}")
        return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
            with self._log_lock:
                self.log.append(line)
            m = _CLIENT_RE.search(line)
            if m:
                self.port = int(m.group(2))
            m = _HTTP_RE.search(line)
            if m:
                self.http_port = int(m.group(2))
            m = _WS_RE.search(line)
            if m:
                self.ws_scheme, self.ws_host, self.ws_port = m.group(1), m.group(2), int(m.group(3))
            if _READY_RE.search(line):
                self._ready.set()
        # EOF: the process ended or closed its output; unblock any waiter.
        self._ready.set()

    def log_text(self) -> str:
        with self._log_lock:
            return "\n".join(self.log[-200:])

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; returns the exit code, or None if it did not exit."""
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

    def crash(self) -> None:
        """SIGKILL on purpose (the fixture then expects the exit it sees)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.returncode = self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    async def reload(self, timeout: float = 5.0) -> None:
        """SIGHUP, then wait until the server logs that it reloaded its configuration (nats-server
        and Junction log the same line)."""
        line = "Reloaded server configuration"
        before = self.log_text().count(line)
        self.proc.send_signal(signal.SIGHUP)
        for _ in range(int(timeout / 0.05)):
            if self.log_text().count(line) > before:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no reload within {timeout}s; log:\n{self.log_text()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- addresses and monitoring -----------------------------------------

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """ws://127.0.0.1:PORT (or wss://) of the WebSocket listener; fails if none was logged."""
        if self.ws_port is None:
            pytest.fail(f"the server logged no 'Listening for websocket clients on ...' line; log:\n{self.log_text()}")
        return f"{self.ws_scheme}://127.0.0.1:{self.ws_port}"

    def http_get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()

    def varz(self) -> dict:
        status, body = self.http_get("/varz")
        assert status == 200, f"/varz answered {status}"
        return json.loads(body)


def _data_dir_args(srv: "Server") -> list:
    """Durable MQTT state (issue 6): a fresh ``--data-dir`` per test server, so that servers
    never share (or lock each other out of) ``./junction-data`` and no retained message or
    session leaks from one test into another. Not when the test chooses (``--data-dir``,
    ``--in-memory``, JetStream's ``-sd``/``--store_dir``, or ``data_dir``/``store_dir`` in its
    config), nor for nats-server."""
    if "nats-server" in os.path.basename(BIN):
        return []
    chosen = ("--data-dir", "--in-memory", "-sd", "--store_dir", "-store_dir")
    if any(a in chosen for a in srv.args) or (
        srv.config and ("data_dir" in srv.config or "store_dir" in srv.config)
    ):
        return []
    import tempfile

    base = srv.workdir if srv.workdir is not None else Path(tempfile.mkdtemp(prefix="junction-test-"))
    return ["--data-dir", str(base / f"data-{id(srv)}")]


def serve(tmp_path, cls=None):
    """A generator for fixtures that start servers (``cls``: a ``Server`` subclass). Yields
    ``start(config=None, args=(), ws_flag=True)``. At teardown every server still running gets
    SIGTERM and must exit with code 0 (``EXPECT_EXIT``) within 10 s."""
    cls = cls or Server
    started: list = []

    def start(config: str | None = None, args=(), ws_flag: bool = True):
        srv = cls(config=config, workdir=tmp_path, args=args, ws_flag=ws_flag)
        started.append(srv)
        return srv.start()

    yield start

    problems = []
    for srv in started:
        already_done = srv.returncode is not None
        rc = srv.terminate()
        # Shown by pytest only when the test failed.
        print(f"---- server log (port {srv.port}) ----\n{srv.log_text()}")
        if rc is None:
            srv.kill()
            problems.append(f"server on port {srv.port} did not exit within {STOP_TIMEOUT}s of SIGTERM")
        elif rc != EXPECT_EXIT and not already_done:
            problems.append(f"server on port {srv.port} exited with code {rc} after SIGTERM")
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture
def server_factory(tmp_path):
    """Start servers with an optional nats-server-format config (see ``serve``)."""
    yield from serve(tmp_path)


@pytest.fixture
def server(server_factory) -> Server:
    return server_factory()


# --------------------------------------------------------------------------
# Async helpers
# --------------------------------------------------------------------------


def async_test(timeout: float = 30.0):
    """Run an ``async def`` test with asyncio.run, bounded by ``timeout``."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            async def bounded():
                return await asyncio.wait_for(fn(*args, **kwargs), timeout)

            return asyncio.run(bounded())

        return wrapper

    return decorate


async def wait_until(predicate, timeout: float = 5.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` (sync or async) until it is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")
        await asyncio.sleep(interval)


async def varz(server: Server) -> dict:
    return await asyncio.to_thread(server.varz)


class Clients:
    """nats-py connections that are all closed when the block ends."""

    def __init__(self, server: Server):
        self.server = server
        self.conns: list = []
        self.errors: list = []

    async def connect(self, **kwargs):
        async def on_error(e):
            self.errors.append(e)

        opts = dict(
            servers=[self.server.url],
            allow_reconnect=False,
            connect_timeout=5,
            max_reconnect_attempts=0,
            error_cb=on_error,
        )
        opts.update(kwargs)
        nc = await nats.connect(**opts)
        self.conns.append(nc)
        return nc

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        for nc in self.conns:
            if not nc.is_closed:
                try:
                    await asyncio.wait_for(nc.close(), 5)
                except Exception:
                    pass


async def sync_subs(nc) -> None:
    """Make sure SUBs queued on ``nc`` reached the server.

    nats-py's flush() writes its PING ahead of commands still queued for its
    flusher task, so a single flush does not prove a preceding SUB arrived.
    The second round trip is ordered after everything the first one saw.
    """
    await nc.flush(timeout=5)
    await nc.flush(timeout=5)


# --------------------------------------------------------------------------
# Raw protocol client
# --------------------------------------------------------------------------


class RawClient:
    """A NATS connection over a plain asyncio stream, to see the exact bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, info_line: bytes):
        self.reader = reader
        self.writer = writer
        self.info_line = info_line
        self.info = json.loads(info_line[len(b"INFO "):])

    @classmethod
    async def connect(cls, server: Server, connect: dict | None = None, send_connect: bool = True,
                      timeout: float = 5.0) -> "RawClient":
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", server.port, limit=1 << 20), timeout)
        line = await asyncio.wait_for(reader.readline(), timeout)
        # nats-server writes "INFO {...} \r\n" (a space before the CRLF).
        assert line.startswith(b"INFO {") and line.rstrip(b" \r\n").endswith(b"}") \
            and line.endswith(b"\r\n"), f"first line was {line!r}"
        client = cls(reader, writer, line.rstrip(b" \r\n"))
        if send_connect:
            opts = {"verbose": False, "pedantic": False, "lang": "raw", "version": "0",
                    "protocol": 1, "headers": True, "no_responders": True}
            if connect:
                opts.update(connect)
            await client.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\n")
        return client

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def readline(self, timeout: float = 5.0) -> bytes:
        """One protocol line without CRLF; b"" at EOF; raises TimeoutError."""
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            return b""
        assert line.endswith(b"\r\n"), f"line not terminated by CRLF: {line!r}"
        return line[:-2]

    async def read_op(self, timeout: float = 5.0):
        """The next operation: ("MSG", subject, sid, reply, payload),
        ("HMSG", subject, sid, reply, headers, payload), or (line,) for others;
        None at EOF."""
        line = await self.readline(timeout)
        if not line:
            return None
        if line.startswith(b"MSG "):
            parts = line.split(b" ")[1:]
            size = int(parts[-1])
            reply = parts[2] if len(parts) == 4 else None
            body = await asyncio.wait_for(self.reader.readexactly(size + 2), timeout)
            assert body.endswith(b"\r\n"), f"MSG payload not followed by CRLF: {body!r}"
            return ("MSG", parts[0], parts[1], reply, body[:-2])
        if line.startswith(b"HMSG "):
            parts = line.split(b" ")[1:]
            hlen, total = int(parts[-2]), int(parts[-1])
            reply = parts[2] if len(parts) == 5 else None
            body = await asyncio.wait_for(self.reader.readexactly(total + 2), timeout)
            assert body.endswith(b"\r\n"), f"HMSG payload not followed by CRLF: {body!r}"
            return ("HMSG", parts[0], parts[1], reply, body[:hlen], body[hlen:total])
        return (line,)

    async def ping(self, timeout: float = 5.0) -> list:
        """PING and collect everything up to the PONG; returns what came before it."""
        await self.send(b"PING\r\n")
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            op = await self.read_op(max(0.01, deadline - time.monotonic()))
            assert op is not None, f"connection closed while waiting for PONG (before it: {seen!r})"
            if op == (b"PONG",):
                return seen
            seen.append(op)

    async def read_until_closed(self, timeout: float = 5.0) -> bytes:
        """Everything the server sends until it closes the connection."""
        data = b""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"server did not close the connection within {timeout}s; got {data[-500:]!r}")
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), remaining)
            except (ConnectionResetError, BrokenPipeError):
                return data
            except asyncio.TimeoutError:
                continue
            if not chunk:
                return data
            data += chunk

    async def quiet(self, duration: float = 0.3) -> list:
        """Operations arriving within ``duration`` (expected: none)."""
        got = []
        deadline = time.monotonic() + duration
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return got
            try:
                op = await self.read_op(remaining)
            except asyncio.TimeoutError:
                return got
            if op is None:
                got.append(("EOF",))
                return got
            got.append(op)

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except Exception:
            pass


def raise_fd_limit(n: int) -> None:
    """Raise RLIMIT_NOFILE so that ``n`` sockets fit, or skip."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 512
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"file descriptor hard limit {hard} is below {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def set_small_rcvbuf(sock: socket.socket, size: int = 4096) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
