"""Helpers for the WebSocket end-to-end tests (test_websocket.py, test_browser.py).

Two kinds of WebSocket client, both over 127.0.0.1 with bounded waits:

* the ``websockets`` library (an unmodified, independent RFC 6455 client), for
  everything a real client does: ``ws_open`` and ``ws_nats`` (a
  ``conftest.RawClient`` speaking the NATS protocol over WebSocket messages);
* ``RawWs``, a small hand-written RFC 6455 client over an asyncio stream, for
  tests where the exact frames matter: byte-at-a-time frames, RSV1 bits of
  permessage-deflate, ping/close control frames, a connection cut mid-frame,
  and malformed handshakes (``http_exchange``).

Written from RFC 6455 and RFC 7692; no third-party code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import ssl as ssl_mod
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import connect as _ws_connect

from conftest import RawClient

HOST = "127.0.0.1"
TIMEOUT = 5.0
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

DEFLATE_RESPONSE = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def accept_for(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer to ``key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def ws_port_of(server) -> int:
    """The WebSocket port the server logged, or fail with its log."""
    port = getattr(server, "ws_port", None)
    if port is None:
        pytest.fail("the server did not log 'Listening for websocket clients on ws(s)://HOST:PORT' "
                    f"before 'Server is ready'; log:\n{server.log_text()}")
    return port


# --------------------------------------------------------------------------
# Frames (RFC 6455 section 5)
# --------------------------------------------------------------------------


def encode_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv1: bool = False,
                 mask: bool = True) -> bytes:
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 1 << 16:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _xor(payload, key)


def _xor(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def deflate_message(payload: bytes) -> bytes:
    """permessage-deflate compression of one message with no context takeover (RFC 7692 7.2.1)."""
    c = zlib.compressobj(wbits=-15)
    data = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def inflate_message(payload: bytes) -> bytes:
    """Decompress one message with a fresh window (the server promised server_no_context_takeover)."""
    d = zlib.decompressobj(wbits=-15)
    return d.decompress(payload + b"\x00\x00\xff\xff") + d.flush()


@dataclass
class Frame:
    fin: bool
    rsv1: bool
    rsv2: bool
    rsv3: bool
    opcode: int
    payload: bytes
    masked: bool

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return struct.unpack("!H", self.payload[:2])[0]


@dataclass
class Message:
    opcode: int  # OP_TEXT or OP_BINARY
    data: bytes  # after decompression
    compressed: bool
    frames: int
    wire_bytes: int  # payload bytes as they came over the wire


@dataclass
class HttpResponse:
    status: int
    status_line: str
    headers: dict  # lower-case name -> value (repeated headers joined by ", ")
    rest: bytes  # bytes after the header block
    raw: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def parse_http_head(raw: bytes) -> HttpResponse:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete HTTP response head in {raw[:500]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0]
    parts = status_line.split(" ", 2)
    assert len(parts) >= 2 and parts[0].startswith("HTTP/1.") and parts[1].isdigit(), \
        f"not an HTTP status line: {status_line!r}"
    headers: dict = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        assert colon, f"malformed header line {line!r}"
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return HttpResponse(int(parts[1]), status_line, headers, rest, raw)


def handshake_request(port: int, path: str = "/", key: str | None = None, headers: dict | None = None,
                      method: str = "GET", host: str | None = None, omit=()) -> bytes:
    """A client opening handshake; ``headers`` add or replace (None removes), ``omit`` drops by name."""
    base = {
        "Host": host or f"{HOST}:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key or new_key(),
        "Sec-WebSocket-Version": "13",
    }
    for k, v in (headers or {}).items():
        base[k] = v
    omitted = {o.lower() for o in omit}
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in base.items() if v is not None and k.lower() not in omitted]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def http_exchange(port: int, request: bytes, timeout: float = TIMEOUT,
                        ssl: ssl_mod.SSLContext | None = None) -> tuple[HttpResponse, bool]:
    """Send ``request`` and read until the server closes or ``timeout``.

    Returns the parsed response and whether the server closed the connection
    within the time (a rejected handshake must be followed by a close).
    """
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(HOST, port, ssl=ssl, server_hostname=HOST if ssl else None), timeout)
    data = b""
    closed = False
    try:
        writer.write(request)
        await writer.drain()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(65536), remaining)
            except asyncio.TimeoutError:
                break
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 2)
        except Exception:
            pass
    assert data, f"the server sent nothing in answer to {request[:200]!r} (closed: {closed})"
    return parse_http_head(data), closed


class RawWs:
    """A hand-written WebSocket client that sends and reads exact frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, response: HttpResponse):
        self.reader = reader
        self.writer = writer
        self.response = response
        self.buf = bytearray(response.rest)  # frames that came with the 101
        self.frames: list[Frame] = []  # every frame read, in order

    @classmethod
    async def open(cls, port: int, path: str = "/", headers: dict | None = None,
                   ssl: ssl_mod.SSLContext | None = None, timeout: float = TIMEOUT,
                   expect_status: int | None = 101) -> "RawWs":
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port, ssl=ssl, server_hostname=HOST if ssl else None,
                                    limit=1 << 24), timeout)
        key = new_key()
        writer.write(handshake_request(port, path, key, headers))
        await writer.drain()
        raw = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in raw:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no complete handshake response within {timeout}s: {raw!r}"
            chunk = await asyncio.wait_for(reader.read(65536), remaining)
            assert chunk, f"connection closed during the handshake; got {raw!r}"
            raw += chunk
        resp = parse_http_head(raw)
        if expect_status is not None:
            assert resp.status == expect_status, f"handshake answered {resp.status_line!r}, expected {expect_status}"
        if resp.status == 101:
            assert resp.header("sec-websocket-accept") == accept_for(key), \
                f"wrong Sec-WebSocket-Accept {resp.header('sec-websocket-accept')!r} for key {key!r}"
            assert (resp.header("upgrade") or "").lower() == "websocket", resp.headers
            assert "upgrade" in (resp.header("connection") or "").lower(), resp.headers
        return cls(reader, writer, resp)

    # -- writing -----------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_frame(self, opcode: int, payload: bytes = b"", fin: bool = True, rsv1: bool = False,
                         mask: bool = True) -> None:
        await self.send_raw(encode_frame(opcode, payload, fin, rsv1, mask))

    async def send_binary(self, payload: bytes, compress: bool = False) -> None:
        if compress:
            await self.send_frame(OP_BINARY, deflate_message(payload), rsv1=True)
        else:
            await self.send_frame(OP_BINARY, payload)

    # -- reading -----------------------------------------------------------

    async def _need(self, n: int, deadline: float) -> bool:
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise asyncio.TimeoutError()
            try:
                chunk = await asyncio.wait_for(self.reader.read(1 << 20), remaining)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                return False
            self.buf += chunk
        return True

    async def read_frame(self, timeout: float = TIMEOUT) -> Frame | None:
        """The next frame from the server; None at EOF (a partial frame at EOF fails)."""
        deadline = time.monotonic() + timeout
        if not await self._need(2, deadline):
            assert not self.buf, f"connection closed inside a frame header: {bytes(self.buf)!r}"
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            assert await self._need(4, deadline), "EOF inside a frame header"
            n = struct.unpack("!H", self.buf[2:4])[0]
            pos = 4
        elif n == 127:
            assert await self._need(10, deadline), "EOF inside a frame header"
            n = struct.unpack("!Q", self.buf[2:10])[0]
            pos = 10
        masked = bool(b1 & 0x80)
        key = b""
        if masked:
            assert await self._need(pos + 4, deadline), "EOF inside a frame header"
            key = bytes(self.buf[pos:pos + 4])
            pos += 4
        assert await self._need(pos + n, deadline), f"EOF inside a frame of {n} bytes"
        payload = bytes(self.buf[pos:pos + n])
        del self.buf[:pos + n]
        if masked:
            payload = _xor(payload, key)
        frame = Frame(bool(b0 & 0x80), bool(b0 & 0x40), bool(b0 & 0x20), bool(b0 & 0x10), b0 & 0x0F,
                      payload, masked)
        self.frames.append(frame)
        # RFC 6455 5.1: a server must not mask the frames it sends.
        assert not masked, f"the server sent a masked frame: {frame!r}"
        assert not frame.rsv2 and not frame.rsv3, f"the server set RSV2/RSV3: {frame!r}"
        return frame

    async def read_message(self, timeout: float = TIMEOUT, on_control=None) -> Message | Frame | None:
        """The next data message (reassembled and inflated), or a close frame, or None at EOF.

        Ping/pong frames in between go to ``on_control`` (or fail the test).
        """
        deadline = time.monotonic() + timeout
        parts: list[Frame] = []
        while True:
            f = await self.read_frame(max(0.0, deadline - time.monotonic()))
            if f is None:
                assert not parts, "EOF inside a fragmented message"
                return None
            if f.opcode == OP_CLOSE:
                return f
            if f.opcode in (OP_PING, OP_PONG):
                if on_control is None:
                    raise AssertionError(f"unexpected control frame {f!r}")
                on_control(f)
                continue
            if not parts:
                assert f.opcode in (OP_TEXT, OP_BINARY), f"message starts with opcode {f.opcode:#x}"
            else:
                assert f.opcode == OP_CONT, f"expected a continuation frame, got {f.opcode:#x}"
                assert not f.rsv1, "RSV1 set on a continuation frame"
            parts.append(f)
            if f.fin:
                wire = b"".join(p.payload for p in parts)
                data = inflate_message(wire) if parts[0].rsv1 else wire
                return Message(parts[0].opcode, data, parts[0].rsv1, len(parts), len(wire))

    async def expect_close(self, timeout: float = TIMEOUT) -> Frame:
        """Skip data until a close frame; fail on EOF without one."""
        deadline = time.monotonic() + timeout
        while True:
            m = await self.read_message(max(0.0, deadline - time.monotonic()), on_control=lambda f: None)
            assert m is not None, "the server closed the TCP connection without a close frame"
            if isinstance(m, Frame):
                return m

    async def expect_eof(self, timeout: float = TIMEOUT) -> None:
        """After a close handshake the server must close the TCP connection."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the server did not close the TCP connection within {timeout}s")
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), remaining)
            except asyncio.TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return
            if not chunk:
                return
            self.buf += chunk

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except Exception:
            pass


# --------------------------------------------------------------------------
# NATS over WebSocket, as a conftest.RawClient
# --------------------------------------------------------------------------


class _MessageWriter:
    """The writer side of RawClient: each drain() sends what was written as one WebSocket message."""

    def __init__(self, send, close):
        self._send = send
        self._close = close
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._pending.append(bytes(data))

    async def drain(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        if data:
            await self._send(data)

    def close(self) -> None:
        self._closing = asyncio.ensure_future(self._close())

    async def wait_closed(self) -> None:
        closing = getattr(self, "_closing", None)
        if closing is not None:
            await closing


def nats_connect_line(connect: dict | None = None) -> bytes:
    opts = {"verbose": False, "pedantic": False, "lang": "raw-ws", "version": "0",
            "protocol": 1, "headers": True, "no_responders": True}
    if connect:
        opts.update(connect)
    return b"CONNECT " + json.dumps(opts).encode() + b"\r\n"


async def _raw_client_over(reader: asyncio.StreamReader, writer, connect: dict | None, send_connect: bool,
                           timeout: float) -> RawClient:
    line = await asyncio.wait_for(reader.readline(), timeout)
    assert line.startswith(b"INFO {") and line.endswith(b"\r\n"), f"first NATS line over WebSocket was {line!r}"
    client = RawClient(reader, writer, line.rstrip(b" \r\n"))
    if send_connect:
        await client.send(nats_connect_line(connect))
    return client


async def ws_open(url: str, **kwargs):
    """websockets.connect with bounded timeouts, no proxy, no keepalive pings, no size limit."""
    opts = dict(open_timeout=TIMEOUT, close_timeout=2, ping_interval=None, proxy=None, max_size=None)
    opts.update(kwargs)
    return await _ws_connect(url, **opts)


async def ws_nats(server, path: str = "/", connect: dict | None = None, send_connect: bool = True,
                  compression: str | None = None, ssl: ssl_mod.SSLContext | None = None,
                  timeout: float = TIMEOUT, **kwargs) -> RawClient:
    """A NATS client over the ``websockets`` library: a RawClient whose ``ws`` is the connection.

    Each ``send`` is one binary WebSocket message; everything received (binary or
    text) is fed to the RawClient's reader in order.
    """
    port = ws_port_of(server)
    scheme = "wss" if ssl is not None else "ws"
    ws = await ws_open(f"{scheme}://{HOST}:{port}{path}", compression=compression, ssl=ssl, **kwargs)
    reader = asyncio.StreamReader(limit=1 << 24)

    async def pump():
        try:
            async for msg in ws:
                reader.feed_data(msg.encode() if isinstance(msg, str) else msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            reader.feed_eof()

    pump_task = asyncio.ensure_future(pump())

    async def close():
        try:
            await ws.close()
        finally:
            pump_task.cancel()

    writer = _MessageWriter(ws.send, close)
    client = await _raw_client_over(reader, writer, connect, send_connect, timeout)
    client.ws = ws
    return client


async def raw_ws_nats(rw: RawWs, connect: dict | None = None, send_connect: bool = True,
                      compress: bool = False, timeout: float = TIMEOUT) -> RawClient:
    """A RawClient over a RawWs: each send is one binary frame (deflated if ``compress``).

    Every data message read is recorded in ``client.messages`` (to check RSV1 and sizes).
    """
    reader = asyncio.StreamReader(limit=1 << 24)
    messages: list[Message] = []

    async def pump():
        try:
            while True:
                m = await rw.read_message(timeout=3600, on_control=lambda f: None)
                if m is None or isinstance(m, Frame):
                    break
                messages.append(m)
                reader.feed_data(m.data)
        except (AssertionError, asyncio.TimeoutError, ConnectionError) as e:
            reader.set_exception(e if not isinstance(e, AssertionError) else ConnectionError(str(e)))
            return
        reader.feed_eof()

    pump_task = asyncio.ensure_future(pump())

    async def send(data: bytes):
        await rw.send_binary(data, compress=compress)

    async def close():
        pump_task.cancel()
        await rw.close()

    client = await _raw_client_over(reader, _MessageWriter(send, close), connect, send_connect, timeout)
    client.messages = messages
    client.rw = rw
    return client


# --------------------------------------------------------------------------
# TLS material
# --------------------------------------------------------------------------


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made by the openssl CLI: (cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the openssl CLI is needed to make a test certificate (apt-get install -y openssl)")
    cert, key = directory / "ws-cert.pem", directory / "ws-key.pem"
    proc = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        capture_output=True, timeout=60)
    assert proc.returncode == 0, f"openssl failed: {proc.stderr.decode(errors='replace')}"
    return cert, key


def client_tls(cert: Path) -> ssl_mod.SSLContext:
    ctx = ssl_mod.create_default_context(cafile=str(cert))
    return ctx
