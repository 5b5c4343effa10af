"""Helpers for the MQTT end-to-end tests (test_mqtt.py).

The broker under test is chosen with ``MQTT_BROKER``:

* ``junction`` (the default): ``JUNCTION_BIN`` (default
  ``<repo>/target/debug/junction``) started by conftest's ``server_factory``
  with ``--mqtt-port -1``; the MQTT port is read from its log line
  ``Listening for MQTT clients on HOST:PORT``.
* ``mosquitto``: Debian's mosquitto (2.0.11 was used to check every
  expectation), started on a free 127.0.0.1 port with a per-test config: the
  reference the suite was written against.

Besides the broker fixture this module has:

* a small, independent MQTT 3.1.1/5.0 codec and ``RawMqtt``, a blocking raw
  socket client, for tests where the exact bytes matter (malformed packets,
  DUP redelivery, flow control, topic aliases, keepalive);
* ``Mqtt``, a thin synchronous wrapper around an unmodified paho-mqtt 2.x
  client (CallbackAPIVersion.VERSION2), with bounded waits everywhere;
* ``mosquitto_pub`` / ``mosquitto_sub`` runners (Debian's mosquitto-clients).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

MQTT_BROKER = os.environ.get("MQTT_BROKER", "junction").strip().lower()
if MQTT_BROKER not in ("mosquitto", "junction"):
    raise RuntimeError(f"MQTT_BROKER must be 'mosquitto' or 'junction', not {MQTT_BROKER!r}")
IS_JUNCTION = MQTT_BROKER == "junction"
IS_MOSQUITTO = MQTT_BROKER == "mosquitto"

MOSQUITTO_BIN = os.environ.get("MOSQUITTO_BIN", shutil.which("mosquitto") or "/usr/sbin/mosquitto")
MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"

HOST = "127.0.0.1"
TIMEOUT = 5.0  # default bound for every wait

V311 = 4
V5 = 5

_MQTT_LISTEN_RE = re.compile(r"Listening for MQTT clients on (?:mqtt://)?([0-9.]+):(\d+)")


# --------------------------------------------------------------------------
# Broker-specific configuration, kept in one place
# --------------------------------------------------------------------------


def mosquitto_config(port: int, max_packet_size: int | None = None) -> str:
    lines = [
        f"listener {port} {HOST}",
        "allow_anonymous true",
        "set_tcp_nodelay true",
        "persistence false",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
    ]
    if os.geteuid() == 0:
        lines.append("user root")
    if max_packet_size is not None:
        lines.append(f"max_packet_size {max_packet_size}")
    return "\n".join(lines) + "\n"


def junction_config(max_packet_size: int | None = None) -> str | None:
    """Junction's config file text (nats-server syntax), or None for none.

    The MQTT block's key names live only here so they can follow Junction.
    """
    if max_packet_size is None:
        return None
    return f"mqtt {{\n  max_packet_size: {max_packet_size}\n}}\n"


JUNCTION_MQTT_ARGS = ["--mqtt-port", "-1"]


# --------------------------------------------------------------------------
# The broker process
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Mosquitto:
    """A mosquitto process on a free loopback port."""

    def __init__(self, workdir: Path, max_packet_size: int | None = None):
        self.workdir = workdir
        self.max_packet_size = max_packet_size
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log: list[str] = []
        self._lock = threading.Lock()

    def start(self) -> "Mosquitto":
        if not os.path.exists(MOSQUITTO_BIN):
            pytest.fail(f"mosquitto not found at {MOSQUITTO_BIN}: apt-get install -y mosquitto mosquitto-clients")
        for _attempt in range(5):
            port = free_port()
            conf = self.workdir / f"mosquitto-{port}.conf"
            conf.write_text(mosquitto_config(port, self.max_packet_size))
            self.proc = subprocess.Popen([MOSQUITTO_BIN, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection((HOST, port), timeout=0.5):
                        self.port = port
                        return self
                except OSError:
                    time.sleep(0.02)
            self.stop()
        pytest.fail(f"mosquitto did not start; log:\n{self.log_text()}")

    def _drain(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            with self._lock:
                self.log.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def log_text(self) -> str:
        with self._lock:
            return "\n".join(self.log[-200:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class Broker:
    """What a test needs to know about the broker under test."""

    kind: str
    port: int  # MQTT
    nats_port: int | None = None
    http_port: int | None = None
    process: object = None

    @property
    def nats_url(self) -> str:
        assert self.nats_port is not None, "this broker has no NATS listener"
        return f"nats://{HOST}:{self.nats_port}"

    # conftest.Clients connects nats-py to ``server.url``
    url = nats_url

    def log_text(self) -> str:
        return self.process.log_text() if self.process is not None else ""


def start_junction(server_factory, max_packet_size: int | None = None) -> Broker:
    srv = server_factory(config=junction_config(max_packet_size), args=JUNCTION_MQTT_ARGS)
    port = None
    for line in srv.log:
        m = _MQTT_LISTEN_RE.search(line)
        if m:
            port = int(m.group(2))
    if port is None:
        pytest.fail("Junction did not log 'Listening for MQTT clients on HOST:PORT' before "
                    f"'Server is ready'; log:\n{srv.log_text()}")
    return Broker(kind="junction", port=port, nats_port=srv.port, http_port=srv.http_port, process=srv)


# --------------------------------------------------------------------------
# A small independent MQTT codec (3.1.1 and 5.0)
# --------------------------------------------------------------------------

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15
PACKET_NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
                7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
                12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}

# MQTT 5 property identifiers
P_PAYLOAD_FORMAT = 0x01
P_MESSAGE_EXPIRY = 0x02
P_CONTENT_TYPE = 0x03
P_RESPONSE_TOPIC = 0x08
P_CORRELATION_DATA = 0x09
P_SUBSCRIPTION_ID = 0x0B
P_SESSION_EXPIRY = 0x11
P_ASSIGNED_CLIENT_ID = 0x12
P_SERVER_KEEP_ALIVE = 0x13
P_AUTH_METHOD = 0x15
P_AUTH_DATA = 0x16
P_REQUEST_PROBLEM_INFO = 0x17
P_WILL_DELAY = 0x18
P_REQUEST_RESPONSE_INFO = 0x19
P_RESPONSE_INFO = 0x1A
P_SERVER_REFERENCE = 0x1C
P_REASON_STRING = 0x1F
P_RECEIVE_MAXIMUM = 0x21
P_TOPIC_ALIAS_MAXIMUM = 0x22
P_TOPIC_ALIAS = 0x23
P_MAXIMUM_QOS = 0x24
P_RETAIN_AVAILABLE = 0x25
P_USER_PROPERTY = 0x26
P_MAXIMUM_PACKET_SIZE = 0x27
P_WILDCARD_SUB_AVAILABLE = 0x28
P_SUB_ID_AVAILABLE = 0x29
P_SHARED_SUB_AVAILABLE = 0x2A

_PROP_TYPES = {
    0x01: "byte", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "varint", 0x11: "u32",
    0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "byte", 0x18: "u32", 0x19: "byte",
    0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16", 0x22: "u16", 0x23: "u16", 0x24: "byte",
    0x25: "byte", 0x26: "pair", 0x27: "u32", 0x28: "byte", 0x29: "byte", 0x2A: "byte",
}
_REPEATABLE = {P_USER_PROPERTY, P_SUBSCRIPTION_ID}


class MalformedFromServer(AssertionError):
    pass


def enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def enc_str(s) -> bytes:
    b = s.encode() if isinstance(s, str) else bytes(s)
    return struct.pack("!H", len(b)) + b


def enc_props(props) -> bytes:
    """props: an iterable of (identifier, value); repeat an identifier to repeat it."""
    body = bytearray()
    for pid, value in props or ():
        kind = _PROP_TYPES[pid]
        body += enc_varint(pid)
        if kind == "byte":
            body.append(value)
        elif kind == "u16":
            body += struct.pack("!H", value)
        elif kind == "u32":
            body += struct.pack("!I", value)
        elif kind == "varint":
            body += enc_varint(value)
        elif kind in ("str", "bin"):
            body += enc_str(value)
        elif kind == "pair":
            body += enc_str(value[0]) + enc_str(value[1])
    return enc_varint(len(body)) + bytes(body)


def fixed(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + enc_varint(len(body)) + body


class Props(list):
    """Decoded MQTT 5 properties: a list of (identifier, value) in wire order."""

    def get(self, pid, default=None):
        for k, v in self:
            if k == pid:
                return v
        return default

    def all(self, pid) -> list:
        return [v for k, v in self if k == pid]

    def __contains__(self, pid) -> bool:  # type: ignore[override]
        return any(k == pid for k, _ in self)


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if self.left() < n:
            raise MalformedFromServer(f"packet too short: wanted {n} more bytes in {self.data!r}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("!H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("!I", self.take(4))[0]

    def varint(self) -> int:
        value, mult = 0, 1
        for _ in range(4):
            b = self.byte()
            value += (b & 0x7F) * mult
            if not b & 0x80:
                return value
            mult *= 128
        raise MalformedFromServer("variable byte integer longer than 4 bytes")

    def bin(self) -> bytes:
        return self.take(self.u16())

    def str(self) -> str:
        raw = self.bin()
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedFromServer(f"server sent ill-formed UTF-8 {raw!r}") from e
        if "\x00" in s:
            raise MalformedFromServer(f"server sent U+0000 in a string {raw!r}")
        return s

    def props(self) -> Props:
        length = self.varint()
        sub = _Reader(self.take(length))
        out = Props()
        seen = set()
        while sub.left():
            pid = sub.varint()
            kind = _PROP_TYPES.get(pid)
            if kind is None:
                raise MalformedFromServer(f"server sent unknown property 0x{pid:02x}")
            if pid in seen and pid not in _REPEATABLE:
                raise MalformedFromServer(f"server sent property 0x{pid:02x} twice")
            seen.add(pid)
            if kind == "byte":
                v = sub.byte()
            elif kind == "u16":
                v = sub.u16()
            elif kind == "u32":
                v = sub.u32()
            elif kind == "varint":
                v = sub.varint()
            elif kind == "str":
                v = sub.str()
            elif kind == "bin":
                v = sub.bin()
            else:
                v = (sub.str(), sub.str())
            out.append((pid, v))
        return out


@dataclass
class Packet:
    """One packet received from the broker, decoded for the negotiated version."""

    type: int
    flags: int
    raw: bytes  # the whole packet, fixed header included
    body: bytes
    version: int
    rc: int | None = None
    props: Props = field(default_factory=Props)
    session_present: bool | None = None
    pid: int | None = None
    topic: str | None = None
    topic_raw: bytes | None = None
    payload: bytes | None = None
    qos: int = 0
    dup: bool = False
    retain: bool = False
    codes: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return PACKET_NAMES.get(self.type, f"type{self.type}")

    def __repr__(self) -> str:
        extra = []
        for k in ("rc", "pid", "topic", "payload", "qos", "dup", "retain", "session_present"):
            v = getattr(self, k)
            if v not in (None, False) and not (k == "qos" and v == 0):
                extra.append(f"{k}={v!r}")
        if self.codes:
            extra.append(f"codes={self.codes!r}")
        if self.props:
            extra.append(f"props={list(self.props)!r}")
        return f"<{self.name} {' '.join(extra)} raw={self.raw[:40].hex()}>"


_EXPECTED_FLAGS = {CONNACK: 0, PUBACK: 0, PUBREC: 0, PUBREL: 2, PUBCOMP: 0, SUBACK: 0, UNSUBACK: 0,
                   PINGRESP: 0, DISCONNECT: 0, AUTH: 0}


def decode(first: int, body: bytes, raw: bytes, version: int) -> Packet:
    ptype, flags = first >> 4, first & 0x0F
    p = Packet(type=ptype, flags=flags, raw=raw, body=body, version=version)
    r = _Reader(body)
    if ptype in _EXPECTED_FLAGS and flags != _EXPECTED_FLAGS[ptype]:
        raise MalformedFromServer(f"server sent {p.name} with fixed-header flags {flags:#x}: {raw.hex()}")
    if ptype == CONNACK:
        ack = r.byte()
        if ack & 0xFE:
            raise MalformedFromServer(f"CONNACK acknowledge flags {ack:#x}")
        p.session_present = bool(ack & 1)
        p.rc = r.byte()
        if version == V5 and r.left():
            p.props = r.props()
    elif ptype == PUBLISH:
        p.qos = (flags >> 1) & 3
        p.dup = bool(flags & 8)
        p.retain = bool(flags & 1)
        if p.qos == 3:
            raise MalformedFromServer(f"server sent PUBLISH with QoS 3: {raw.hex()}")
        p.topic_raw = r.bin()
        try:
            p.topic = p.topic_raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedFromServer(f"server sent topic {p.topic_raw!r}") from e
        if p.qos:
            p.pid = r.u16()
        if version == V5:
            p.props = r.props()
        p.payload = r.take(r.left())
    elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        p.pid = r.u16()
        p.rc = 0
        if version == V5 and r.left():
            p.rc = r.byte()
            if r.left():
                p.props = r.props()
    elif ptype in (SUBACK, UNSUBACK):
        p.pid = r.u16()
        if version == V5:
            p.props = r.props()
        p.codes = list(r.take(r.left()))
    elif ptype == DISCONNECT:
        if version != V5:
            raise MalformedFromServer(f"server sent DISCONNECT to an MQTT 3.1.1 client: {raw.hex()}")
        p.rc = r.byte() if r.left() else 0
        if r.left():
            p.props = r.props()
    elif ptype == AUTH:
        p.rc = r.byte() if r.left() else 0
        if r.left():
            p.props = r.props()
    elif ptype == PINGRESP:
        pass
    else:
        raise MalformedFromServer(f"server sent a client-only or reserved packet type: {raw.hex()}")
    if ptype != PUBLISH and r.left():
        raise MalformedFromServer(f"{p.name} has {r.left()} trailing bytes: {raw.hex()}")
    return p


@dataclass
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    props: tuple = ()


def connect_packet(client_id: str = "", version: int = V311, clean: bool = True, keepalive: int = 60,
                   props=(), will: Will | None = None, username: str | None = None,
                   password: bytes | None = None, *, level: int | None = None,
                   protocol_name: bytes = b"MQTT", extra_flags: int = 0) -> bytes:
    flags = extra_flags
    if clean:
        flags |= 0x02
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    vh = enc_str(protocol_name) + bytes([version if level is None else level, flags]) + struct.pack("!H", keepalive)
    if version == V5:
        vh += enc_props(props)
    pl = enc_str(client_id)
    if will is not None:
        if version == V5:
            pl += enc_props(will.props)
        pl += enc_str(will.topic) + enc_str(will.payload)
    if username is not None:
        pl += enc_str(username)
    if password is not None:
        pl += enc_str(password)
    return fixed(0x10, vh + pl)


def publish_packet(topic, payload: bytes = b"", qos: int = 0, retain: bool = False, dup: bool = False,
                   pid: int | None = None, props=(), version: int = V311, first_byte: int | None = None) -> bytes:
    body = enc_str(topic)
    if qos:
        body += struct.pack("!H", 1 if pid is None else pid)
    if version == V5:
        body += enc_props(props)
    body += payload
    fb = 0x30 | (8 if dup else 0) | (qos << 1) | (1 if retain else 0)
    return fixed(fb if first_byte is None else first_byte, body)


def ack_packet(ptype: int, pid: int, rc: int | None = None, props=(), version: int = V311) -> bytes:
    body = struct.pack("!H", pid)
    if version == V5 and (rc not in (None, 0) or props):
        body += bytes([rc or 0])
        if props:
            body += enc_props(props)
    return fixed((ptype << 4) | (2 if ptype == PUBREL else 0), body)


def subscribe_packet(pid: int, filters, props=(), version: int = V311, first_byte: int = 0x82) -> bytes:
    """filters: [(filter, options_byte)] where options_byte is the QoS for 3.1.1."""
    body = struct.pack("!H", pid)
    if version == V5:
        body += enc_props(props)
    for f, opts in filters:
        body += enc_str(f) + bytes([opts])
    return fixed(first_byte, body)


def sub_opts(qos: int = 0, no_local: bool = False, rap: bool = False, rh: int = 0) -> int:
    return qos | (4 if no_local else 0) | (8 if rap else 0) | (rh << 4)


def unsubscribe_packet(pid: int, filters, props=(), version: int = V311) -> bytes:
    body = struct.pack("!H", pid)
    if version == V5:
        body += enc_props(props)
    for f in filters:
        body += enc_str(f)
    return fixed(0xA2, body)


def disconnect_packet(rc: int = 0, props=(), version: int = V311) -> bytes:
    if version != V5 or (rc == 0 and not props):
        return b"\xe0\x00"
    body = bytes([rc]) + (enc_props(props) if props else b"")
    return fixed(0xE0, body)


PINGREQ_PACKET = b"\xc0\x00"


class Closed(Exception):
    """The broker closed the connection."""


class RawMqtt:
    """A blocking MQTT client over a plain socket, for exact bytes.

    ``recv()`` returns the next decoded packet, raises ``Closed`` at EOF and
    ``TimeoutError`` when nothing complete arrives in time.
    """

    def __init__(self, broker: Broker, version: int = V311, timeout: float = TIMEOUT):
        self.version = version
        self.sock = socket.create_connection((HOST, broker.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.connack: Packet | None = None

    # -- sending ------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def connect(self, client_id: str = "", clean: bool = True, keepalive: int = 60, props=(),
                will: Will | None = None, expect_rc: int | None = 0, **kw) -> Packet:
        self.send(connect_packet(client_id, self.version, clean, keepalive, props, will, **kw))
        ack = self.expect(CONNACK)
        if expect_rc is not None:
            assert ack.rc == expect_rc, f"CONNACK {ack!r}, expected rc {expect_rc:#x}"
        self.connack = ack
        return ack

    def subscribe(self, filters, pid: int = 1, props=()) -> Packet:
        """filters: a topic filter, or [(filter, options)]. Returns the SUBACK."""
        if isinstance(filters, str):
            filters = [(filters, 1)]
        self.send(subscribe_packet(pid, filters, props, self.version))
        ack = self.expect(SUBACK)
        assert ack.pid == pid, f"SUBACK for {ack.pid}, expected {pid}"
        return ack

    def publish(self, topic, payload: bytes = b"", qos: int = 0, retain: bool = False, pid: int | None = None,
                props=(), dup: bool = False) -> None:
        self.send(publish_packet(topic, payload, qos, retain, dup, pid, props, self.version))

    def ack(self, ptype: int, pid: int, rc: int | None = None, props=()) -> None:
        self.send(ack_packet(ptype, pid, rc, props, self.version))

    def disconnect(self, rc: int = 0, props=()) -> None:
        self.send(disconnect_packet(rc, props, self.version))

    # -- receiving ----------------------------------------------------------

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError from None
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            chunk = b""
        if not chunk:
            self.eof = True
            raise Closed
        self.buf += chunk

    def recv(self, timeout: float = TIMEOUT) -> Packet:
        deadline = time.monotonic() + timeout
        while True:
            pkt = self._parse()
            if pkt is not None:
                return pkt
            if self.eof:
                if self.buf:
                    raise MalformedFromServer(f"connection closed inside a packet: {self.buf[:60].hex()}")
                raise Closed
            self._fill(deadline)

    def _parse(self) -> Packet | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        length, mult, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return None
            b = buf[i]
            length += (b & 0x7F) * mult
            i += 1
            if not b & 0x80:
                break
            mult *= 128
            if i > 4:
                raise MalformedFromServer(f"bad remaining length from server: {buf[:8].hex()}")
        if len(buf) < i + length:
            return None
        raw = buf[:i + length]
        self.buf = buf[i + length:]
        return decode(raw[0], raw[i:], raw, self.version)

    def expect(self, ptype: int, timeout: float = TIMEOUT) -> Packet:
        """The next packet, which must be of type ``ptype`` (PINGRESPs are skipped)."""
        while True:
            try:
                pkt = self.recv(timeout)
            except Closed:
                raise AssertionError(f"connection closed while waiting for {PACKET_NAMES[ptype]}") from None
            except TimeoutError:
                raise AssertionError(f"no {PACKET_NAMES[ptype]} within {timeout}s") from None
            if pkt.type == PINGRESP and ptype != PINGRESP:
                continue
            assert pkt.type == ptype, f"expected {PACKET_NAMES[ptype]}, got {pkt!r}"
            return pkt

    def quiet(self, duration: float = 0.5) -> list:
        """Packets arriving within ``duration`` (usually expected: none)."""
        got = []
        deadline = time.monotonic() + duration
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return got
            try:
                got.append(self.recv(remaining))
            except TimeoutError:
                return got
            except Closed:
                got.append("EOF")
                return got

    def read_until_closed(self, timeout: float = TIMEOUT) -> list:
        """Packets the broker sends until it closes the connection."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"broker did not close the connection within {timeout}s; got {got!r}")
            try:
                got.append(self.recv(remaining))
            except TimeoutError:
                continue
            except Closed:
                return got

    def read_bytes_until_closed(self, timeout: float = TIMEOUT) -> bytes:
        """The raw bytes the broker sends until it closes the connection."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                self._fill(deadline)
            except TimeoutError:
                raise AssertionError(f"broker did not close the connection within {timeout}s; "
                                     f"got {self.buf[:60].hex()}") from None
            except Closed:
                break
        data, self.buf = self.buf, b""
        return data

    def close(self) -> None:
        """Close the socket without DISCONNECT (an abrupt close for the broker)."""
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# paho-mqtt, unmodified, made synchronous
# --------------------------------------------------------------------------


@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int
    props: object  # paho Properties or None

    def prop(self, name: str, default=None):
        if self.props is None:
            return default
        return getattr(self.props, name, default)

    @property
    def user_props(self) -> list:
        return list(self.prop("UserProperty", []) or [])

    @property
    def sub_ids(self) -> list:
        v = self.prop("SubscriptionIdentifier", [])
        return list(v) if isinstance(v, (list, tuple)) else [v]


def _rc(v) -> int:
    return v if isinstance(v, int) else v.value


def props_of(kind: int, **values) -> Properties:
    """paho Properties for packet type ``kind`` (PacketTypes.X) from keyword values."""
    p = Properties(kind)
    for k, v in values.items():
        setattr(p, k, v)
    return p


class Mqtt:
    """An unmodified paho-mqtt client driven from a test, with bounded waits."""

    def __init__(self, broker: Broker, client_id: str = "", version: int = V5, clean: bool = True,
                 keepalive: int = 60, session_expiry: int | None = None, will: Will | None = None,
                 will_props: dict | None = None, connect_props: dict | None = None,
                 transport: str = "tcp", ws_path: str = "/mqtt", ws_headers: dict | None = None,
                 tls_ca: str | None = None):
        """``transport="websockets"`` connects to ``broker.port`` over WebSocket at ``ws_path``
        (paho offers the subprotocol ``mqtt``); ``tls_ca`` turns on TLS trusting that CA file."""
        self.broker = broker
        self.version = version
        self.clean = clean
        self.keepalive = keepalive
        kwargs = dict(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                      protocol=paho.MQTTv5 if version == V5 else paho.MQTTv311, reconnect_on_failure=False,
                      transport=transport)
        if version != V5:
            kwargs["clean_session"] = clean
        self.client = paho.Client(**kwargs)
        if transport == "websockets":
            self.client.ws_set_options(path=ws_path, headers=ws_headers)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=tls_ca)
        self.client.max_queued_messages_set(0)
        self.messages: queue.Queue[Msg] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack_rc: int | None = None
        self.connack_props = None
        self.session_present: bool | None = None
        self.disconnect_rc: int | None = None
        self.disconnect_props = None
        self._cond = threading.Condition()
        self._subacks: dict[int, list] = {}
        self._unsubacks: dict[int, list] = {}
        self.puback_rcs: dict[int, int] = {}
        self.connect_props = dict(connect_props or {})
        if session_expiry is not None:
            self.connect_props["SessionExpiryInterval"] = session_expiry
        if will is not None:
            wp = props_of(PacketTypes.WILLMESSAGE, **will_props) if will_props else None
            self.client.will_set(will.topic, will.payload, will.qos, will.retain, properties=wp)
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe
        c.on_publish = self._on_publish
        self._started = False

    # -- callbacks (paho's network thread) -----------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack_rc = _rc(reason_code)
        self.connack_props = properties
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_rc = _rc(reason_code)
        self.disconnect_props = properties
        self.disconnected.set()
        self.connected.set()  # unblock a waiter if the connection failed

    def _on_message(self, client, userdata, m):
        self.messages.put(Msg(m.topic, m.payload, m.qos, bool(m.retain), bool(m.dup), m.mid,
                              getattr(m, "properties", None)))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._subacks[mid] = [_rc(r) for r in reason_codes]
            self._cond.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self._unsubacks[mid] = [_rc(r) for r in reason_codes]
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._cond:
            self.puback_rcs[mid] = _rc(reason_code)
            self._cond.notify_all()

    # -- operations ----------------------------------------------------------

    def connect(self, clean: bool | None = None, expect_rc: int | None = 0, timeout: float = TIMEOUT) -> "Mqtt":
        clean = self.clean if clean is None else clean
        self.connected.clear()
        self.disconnected.clear()
        self.connack_rc = None
        kw = {}
        if self.version == V5:
            kw["clean_start"] = clean
            if self.connect_props:
                kw["properties"] = props_of(PacketTypes.CONNECT, **self.connect_props)
        elif clean != self.clean:
            raise ValueError("paho fixes clean_session for MQTT 3.1.1 at construction")
        assert not self._started, "connect once per Mqtt object; make a new one to reconnect"
        self.client.connect(HOST, self.broker.port, self.keepalive, **kw)
        self.client.loop_start()
        self._started = True
        assert self.connected.wait(timeout), f"no CONNACK within {timeout}s"
        if expect_rc is not None:
            assert self.connack_rc == expect_rc, \
                f"CONNACK reason {self.connack_rc!r}, expected {expect_rc:#x} (disconnect rc {self.disconnect_rc})"
        return self

    def reconnect(self, broker: Broker, timeout: float = TIMEOUT) -> "Mqtt":
        """Connect the same paho client again, to ``broker`` (a restarted broker has new ports),
        resuming its session (clean start off). paho keeps the client side of the session in
        the client object: the QoS 2 messages it received and has not been released yet
        (PUBREC sent, waiting for PUBREL), which it delivers on the PUBREL. A new client object
        would have forgotten them, and a PUBREL resent after a broker restart would then
        release a message the application never sees."""
        assert self.disconnected.wait(timeout), "reconnect needs the old connection to be gone"
        self.client.loop_stop()
        self.broker = broker
        self.connected.clear()
        self.disconnected.clear()
        self.connack_rc = None
        kw = {}
        if self.version == V5:
            kw["clean_start"] = False
            if self.connect_props:
                kw["properties"] = props_of(PacketTypes.CONNECT, **self.connect_props)
        self.client.connect(HOST, broker.port, self.keepalive, **kw)
        self.client.loop_start()
        assert self.connected.wait(timeout), f"no CONNACK within {timeout}s"
        assert self.connack_rc == 0, f"CONNACK reason {self.connack_rc!r}"
        return self

    def subscribe(self, topic, qos: int = 0, options: SubscribeOptions | None = None, sub_id: int | None = None,
                  props: dict | None = None, timeout: float = TIMEOUT) -> list:
        """Subscribe and wait for the SUBACK; returns its reason codes as ints.

        ``topic`` may also be a list of (filter, qos or SubscribeOptions).
        """
        p = dict(props or {})
        if sub_id is not None:
            p["SubscriptionIdentifier"] = sub_id
        properties = props_of(PacketTypes.SUBSCRIBE, **p) if p else None
        if isinstance(topic, list):
            if self.version == V5:
                topic = [(t, o if isinstance(o, SubscribeOptions) else SubscribeOptions(qos=o)) for t, o in topic]
            rc, mid = self.client.subscribe(topic, properties=properties)
        elif options is not None:
            rc, mid = self.client.subscribe(topic, options=options, properties=properties)
        else:
            rc, mid = self.client.subscribe(topic, qos, properties=properties)
        assert rc == paho.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        with self._cond:
            ok = self._cond.wait_for(lambda: mid in self._subacks, timeout)
            assert ok, f"no SUBACK for {topic!r} within {timeout}s"
            return self._subacks.pop(mid)

    def unsubscribe(self, topic, timeout: float = TIMEOUT) -> list:
        rc, mid = self.client.unsubscribe(topic)
        assert rc == paho.MQTT_ERR_SUCCESS
        with self._cond:
            ok = self._cond.wait_for(lambda: mid in self._unsubacks, timeout)
            assert ok, f"no UNSUBACK for {topic!r} within {timeout}s"
            return self._unsubacks.pop(mid)

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0, retain: bool = False,
                props: dict | None = None, wait: bool = True, timeout: float = TIMEOUT):
        properties = props_of(PacketTypes.PUBLISH, **props) if props else None
        info = self.client.publish(topic, payload, qos, retain, properties)
        assert info.rc == paho.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"
        if wait:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"publish to {topic!r} (QoS {qos}) not completed within {timeout}s"
        return info

    def puback_rc(self, info, timeout: float = TIMEOUT) -> int:
        with self._cond:
            ok = self._cond.wait_for(lambda: info.mid in self.puback_rcs, timeout)
            assert ok
            return self.puback_rcs[info.mid]

    def expect(self, timeout: float = TIMEOUT) -> Msg:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout}s") from None

    def expect_n(self, n: int, timeout: float = TIMEOUT) -> list:
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < n:
            remaining = deadline - time.monotonic()
            try:
                got.append(self.messages.get(timeout=max(0.0, remaining)))
            except queue.Empty:
                raise AssertionError(f"got {len(got)} of {n} messages within {timeout}s: "
                                     f"{[(m.topic, m.payload) for m in got][:20]}") from None
        return got

    def drain(self, duration: float = 0.5) -> list:
        """Messages arriving within ``duration``."""
        got = []
        deadline = time.monotonic() + duration
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return got
            try:
                got.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                return got

    def take_all(self) -> list:
        """Messages already received, without waiting."""
        got = []
        while True:
            try:
                got.append(self.messages.get_nowait())
            except queue.Empty:
                return got

    def expect_none(self, duration: float = 0.5) -> None:
        got = self.drain(duration)
        assert not got, f"unexpected messages: {[(m.topic, m.payload) for m in got]}"

    def wait_disconnected(self, timeout: float = TIMEOUT) -> int:
        assert self.disconnected.wait(timeout), f"still connected after {timeout}s"
        return self.disconnect_rc

    def disconnect(self, rc: int | None = None, props: dict | None = None, timeout: float = TIMEOUT) -> None:
        """A normal DISCONNECT."""
        kw = {}
        if rc is not None:
            from paho.mqtt.reasoncodes import ReasonCode
            kw["reasoncode"] = ReasonCode(PacketTypes.DISCONNECT, identifier=rc)
        if props:
            kw["properties"] = props_of(PacketTypes.DISCONNECT, **props)
        self.client.disconnect(**kw)
        self.wait_disconnected(timeout)
        self.client.loop_stop()

    def abort(self, timeout: float = TIMEOUT) -> None:
        """Close the TCP connection without DISCONNECT (as a crashed device would)."""
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.wait_disconnected(timeout)
        self.client.loop_stop()

    def close(self) -> None:
        """Best-effort cleanup at teardown."""
        try:
            if self.client.is_connected():
                self.client.disconnect()
                self.disconnected.wait(2)
        except Exception:
            pass
        try:
            self.client.loop_stop()
        except Exception:
            pass
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


# --------------------------------------------------------------------------
# mosquitto_pub / mosquitto_sub
# --------------------------------------------------------------------------


def cli_version(version: int) -> list:
    return ["-V", "mqttv5" if version == V5 else "mqttv311"]


def mosquitto_pub(broker: Broker, *args, version: int = V311, timeout: float = 10.0) -> subprocess.CompletedProcess:
    cmd = [MOSQUITTO_PUB, "-h", HOST, "-p", str(broker.port), *cli_version(version), *args]
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd} exited {res.returncode}: {res.stderr.decode(errors='replace')}"
    return res


def mosquitto_sub(broker: Broker, *args, version: int = V311, timeout: float = 10.0) -> subprocess.CompletedProcess:
    cmd = [MOSQUITTO_SUB, "-h", HOST, "-p", str(broker.port), *cli_version(version), *args]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def mosquitto_sub_bg(broker: Broker, *args, version: int = V311) -> subprocess.Popen:
    cmd = [MOSQUITTO_SUB, "-h", HOST, "-p", str(broker.port), *cli_version(version), *args]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(predicate, timeout: float = TIMEOUT, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {v!r})")
        time.sleep(interval)


def publish_of_size(total: int, topic: str = "size/t", qos: int = 1, pid: int = 1, version: int = V311) -> bytes:
    """A PUBLISH whose whole encoding (fixed header included) is exactly ``total`` bytes."""
    overhead = 2 + len(topic.encode()) + (2 if qos else 0) + (1 if version == V5 else 0)
    for varint_len in (1, 2, 3, 4):
        payload_len = total - 1 - varint_len - overhead
        if payload_len >= 0 and len(enc_varint(overhead + payload_len)) == varint_len:
            pkt = publish_packet(topic, b"p" * payload_len, qos=qos, pid=pid, version=version)
            assert len(pkt) == total
            return pkt
    raise ValueError(f"no PUBLISH of exactly {total} bytes")
