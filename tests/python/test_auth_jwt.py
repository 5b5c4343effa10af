"""End-to-end tests of JWT authentication: NATS decentralized auth (operator mode)
and Junction's ``external_jwt`` extension (standard RS256/ES256/EdDSA/HS256 JWTs).

Clients are unmodified: nats-py (``user_credentials=`` creds files, ``token=``),
paho-mqtt 2.x, the ``websockets`` library; raw sockets (conftest.RawClient,
mqtt_helpers.RawMqtt) where the exact bytes matter.

Fixtures: tests/fixtures/jwt (made by @nats-io/jwt + @nats-io/nkeys) and
tests/fixtures/stdjwt (made by PyJWT). The expectations of the operator-mode
tests come from nats-server 2.9.10 (see tests/fixtures/jwt/README.md and the
run of this file with ``JUNCTION_BIN=/usr/sbin/nats-server JUNCTION_EXPECT_EXIT=1``).
Junction-only parts (external_jwt, MQTT, WebSocket) are skipped against nats-server:
nats-server has no ``external_jwt``, and its MQTT needs JetStream, which the fixture
accounts do not enable.

Config note: nats-server 2.9.10 joins every ``include`` path to the directory of the
including file (an absolute path does not work there), so the tests copy
``preload-inline.conf`` next to the generated config and include it by a relative path.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import nats
import nkeys
import pytest

from conftest import (BIN, Clients, RawClient, Server, async_test, serve,
                      sync_subs, wait_until)
from mqtt_helpers import _MQTT_LISTEN_RE, Broker, Mqtt, RawMqtt, V5, V311
from ws_helpers import ws_nats

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures"
JWT_DIR = FIX / "jwt"
STD_DIR = FIX / "stdjwt"
KEYS = json.loads((JWT_DIR / "keys.json").read_text())
TOKENS = json.loads((STD_DIR / "tokens.json").read_text())["tokens"]
HS_SECRET = (STD_DIR / "hs256.secret").read_text().rstrip("\n")

ACC = {name: a["public"] for name, a in KEYS["accounts"].items()}
USERS = KEYS["users"]
CONNECTING = sorted(n for n, u in USERS.items() if u["expect_connect"])
REFUSED = sorted(n for n, u in USERS.items() if not u["expect_connect"])

IS_NATS_SERVER = "nats-server" in os.path.basename(BIN)
junction_only = pytest.mark.skipif(IS_NATS_SERVER, reason="Junction-only (external_jwt / MQTT / WebSocket)")

AUTH_VIOLATION = b"-ERR 'Authorization Violation'\r\n"
TIMEOUT = 5.0

VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["mqtt311", "mqtt5"])


# --------------------------------------------------------------------------
# Server start (nats-server 2.9 has no --mqtt-port / --ws-port flags)
# --------------------------------------------------------------------------


class AuthServer(Server):
    """conftest.Server that also knows its MQTT and WebSocket brokers."""

    @property
    def mqtt_port(self) -> int:
        for line in self.log:
            m = _MQTT_LISTEN_RE.search(line)
            if m:
                return int(m.group(2))
        pytest.fail(f"no 'Listening for MQTT clients' line; log:\n{self.log_text()}")

    def mqtt_broker(self) -> Broker:
        return Broker(kind="junction", port=self.mqtt_port, nats_port=self.port, http_port=self.http_port,
                      process=self)

    def ws_broker(self) -> Broker:
        assert self.ws_port is not None, f"no WebSocket listener; log:\n{self.log_text()}"
        return Broker(kind="junction", port=self.ws_port, nats_port=self.port, http_port=self.http_port,
                      process=self)


@pytest.fixture
def start(tmp_path):
    yield from serve(tmp_path, AuthServer)


def preload_config(tmp_path: Path) -> str:
    shutil.copy(JWT_DIR / "preload-inline.conf", tmp_path / "preload-inline.conf")
    return 'include "./preload-inline.conf"\n'


def dir_config(tmp_path: Path) -> str:
    dr = tmp_path / "dr"
    shutil.copytree(JWT_DIR / "dir-resolver", dr)
    return (f'operator: "{JWT_DIR / "op.jwt"}"\n'
            f'system_account: {ACC["SYS"]}\n'
            f'resolver: {{ type: full, dir: "{dr}", allow_delete: false, interval: "2m" }}\n')


@pytest.fixture
def op_server(start, tmp_path) -> AuthServer:
    """Operator mode, MEMORY resolver preloaded with SYS, A, B, C."""
    return start(preload_config(tmp_path))


@pytest.fixture
def dir_server(start, tmp_path) -> AuthServer:
    """Operator mode, full directory resolver on a copy of dir-resolver/."""
    return start(dir_config(tmp_path))


# --------------------------------------------------------------------------
# JWT / nkey helpers
# --------------------------------------------------------------------------


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def user_jwt(name: str) -> str:
    return (JWT_DIR / f"{name}.jwt").read_text().strip()


def user_seed(name: str) -> str:
    return (JWT_DIR / f"{name}.nk").read_text().strip()


def creds(name: str) -> str:
    return str(JWT_DIR / f"{name}.creds")


def sign_nonce(seed: str, nonce: str) -> str:
    kp = nkeys.from_seed(seed.encode())
    return b64u(kp.sign(nonce.encode()))


def new_user_seed() -> str:
    return nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()


def public_of(seed: str) -> str:
    return nkeys.from_seed(seed.encode()).public_key.decode()


def mint_user_jwt(user_pub: str, issuer_seed: str, *, exp: int | None = None, bearer: bool = False,
                  pub: dict | None = None, sub: dict | None = None, iat: int | None = None,
                  limits: dict | None = None) -> str:
    """A v2 user JWT (ed25519-nkey) issued by ``issuer_seed``'s account key."""
    issuer = nkeys.from_seed(issuer_seed.encode())
    header = {"typ": "JWT", "alg": "ed25519-nkey"}
    nats_claim = {"pub": pub or {}, "sub": sub or {}, "subs": -1, "data": -1, "payload": -1,
                  "type": "user", "version": 2}
    nats_claim.update(limits or {})
    if bearer:
        nats_claim["bearer_token"] = True
    claims = {"jti": "", "iat": int(time.time()) if iat is None else iat,
              "iss": issuer.public_key.decode(), "name": "minted", "sub": user_pub, "nats": nats_claim}
    if exp is not None:
        claims["exp"] = exp
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest()).decode().rstrip("=")
    signing_input = b64u(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64u(json.dumps(claims, separators=(",", ":")).encode())
    return signing_input + "." + b64u(issuer.sign(signing_input.encode()))


def write_creds(path: Path, jwt: str, seed: str) -> str:
    path.write_text("-----BEGIN NATS USER JWT-----\n" + jwt + "\n------END NATS USER JWT------\n\n"
                    "************************* IMPORTANT *************************\n"
                    "NKEY Seed printed below can be used to sign and prove identity.\n"
                    "NKEYs are sensitive and should be treated as secrets.\n\n"
                    "-----BEGIN USER NKEY SEED-----\n" + seed + "\n------END USER NKEY SEED------\n\n"
                    "*************************************************************\n")
    return str(path)


def hs256_token(claims: dict, secret: str = HS_SECRET, kid: str = "hs256-1") -> str:
    header = {"alg": "HS256", "kid": kid, "typ": "JWT"}
    si = b64u(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64u(json.dumps(claims, separators=(",", ":")).encode())
    return si + "." + b64u(hmac.new(secret.encode(), si.encode(), hashlib.sha256).digest())


def std_claims(sub: str, nats_claim: dict | None, exp: int | None = None) -> dict:
    c = {"iss": "https://issuer.test", "aud": "junction", "sub": sub, "iat": int(time.time()) - 10,
         "exp": exp if exp is not None else int(time.time()) + 3600}
    if nats_claim is not None:
        c["nats"] = nats_claim
    return c


def connect_line(fields: dict) -> bytes:
    opts = {"verbose": False, "pedantic": False, "lang": "raw", "version": "0", "protocol": 1,
            "headers": True, "no_responders": True}
    opts.update(fields)
    return b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n"


async def raw_jwt_client(srv, jwt: str, seed: str | None = None, extra: dict | None = None) -> RawClient:
    """A raw NATS connection sending CONNECT {jwt, sig over the INFO nonce} + PING."""
    c = await RawClient.connect(srv, send_connect=False)
    fields = {"jwt": jwt}
    if seed is not None:
        fields["sig"] = sign_nonce(seed, c.info["nonce"])
    fields.update(extra or {})
    await c.send(connect_line(fields))
    return c


async def raw_user(srv, name: str, sign: bool = True) -> RawClient:
    return await raw_jwt_client(srv, user_jwt(name), user_seed(name) if sign else None)


async def expect_pong(c: RawClient) -> None:
    op = await c.read_op(TIMEOUT)
    assert op == (b"PONG",), f"expected PONG after CONNECT, got {op!r}"


async def expect_refused(c: RawClient) -> None:
    data = await c.read_until_closed(TIMEOUT)
    assert data == AUTH_VIOLATION, f"expected exactly {AUTH_VIOLATION!r} then close, got {data!r}"


async def collect(nc, subject: str, out: list):
    async def cb(msg):
        out.append(msg)

    return await nc.subscribe(subject, cb=cb)


# ==========================================================================
# 1. Operator mode, MEMORY resolver with preload
# ==========================================================================


def test_fixture_table_is_the_readme_table():
    assert CONNECTING == ["alice", "bearer", "bob", "limited", "signer", "sys"]
    assert REFUSED == ["carl", "expired", "forged", "revoked", "tampered"]


@async_test()
async def test_operator_info_requires_auth_and_has_nonce(op_server):
    a = await RawClient.connect(op_server, send_connect=False)
    b = await RawClient.connect(op_server, send_connect=False)
    try:
        for c in (a, b):
            assert c.info.get("auth_required") is True, c.info_line
            nonce = c.info.get("nonce")
            assert isinstance(nonce, str) and re.fullmatch(r"[A-Za-z0-9_-]{8,}", nonce), c.info_line
        assert a.info["nonce"] != b.info["nonce"], "two connections got the same nonce"
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("user", CONNECTING)
@async_test()
async def test_preload_user_connects(op_server, user):
    async with Clients(op_server) as cl:
        nc = await cl.connect(user_credentials=creds(user))
        await nc.flush(timeout=5)
        assert nc.is_connected
        assert not cl.errors, cl.errors
    c = await raw_user(op_server, user)
    try:
        await expect_pong(c)
    finally:
        await c.close()


@pytest.mark.parametrize("user", REFUSED)
@async_test()
async def test_preload_user_refused(op_server, user):
    async with Clients(op_server) as cl:
        with pytest.raises(nats.errors.Error) as ei:
            await cl.connect(user_credentials=creds(user))
        assert str(ei.value) == "nats: 'Authorization Violation'", repr(ei.value)
    c = await raw_user(op_server, user)
    try:
        await expect_refused(c)
    finally:
        await c.close()


@async_test()
async def test_bearer_connects_without_signature(op_server):
    c = await raw_user(op_server, "bearer", sign=False)
    try:
        await expect_pong(c)
        await c.send(b"SUB t.bearer 1\r\nPUB t.bearer 2\r\nhi\r\n")
        seen = await c.ping()
        assert seen == [("MSG", b"t.bearer", b"1", None, b"hi")], seen
    finally:
        await c.close()


@async_test()
async def test_alice_without_signature_refused(op_server):
    c = await raw_user(op_server, "alice", sign=False)
    try:
        await expect_refused(c)
    finally:
        await c.close()


@async_test()
async def test_alice_signed_by_wrong_key_refused(op_server):
    c = await raw_jwt_client(op_server, user_jwt("alice"), user_seed("bob"))
    try:
        await expect_refused(c)
    finally:
        await c.close()


@async_test()
async def test_alice_signature_over_other_nonce_refused(op_server):
    c = await RawClient.connect(op_server, send_connect=False)
    try:
        sig = sign_nonce(user_seed("alice"), "not-the-nonce-x")
        await c.send(connect_line({"jwt": user_jwt("alice"), "sig": sig}))
        await expect_refused(c)
    finally:
        await c.close()


@pytest.mark.parametrize("fields", [
    {},
    {"user": "alice", "pass": "alice"},
    {"auth_token": "secret"},
    {"jwt": "not-a-jwt", "sig": "AAAA"},
], ids=["nothing", "user_pass", "token", "garbage_jwt"])
@async_test()
async def test_operator_mode_needs_a_user_jwt(op_server, fields):
    c = await RawClient.connect(op_server, send_connect=False)
    try:
        await c.send(connect_line(fields))
        await expect_refused(c)
    finally:
        await c.close()


@async_test()
async def test_alice_publish_outside_permissions(op_server):
    c = await raw_user(op_server, "alice")
    try:
        await expect_pong(c)
        await c.send(b"SUB a.> 1\r\nPUB x 2\r\nno\r\nPUB a.ok 2\r\nok\r\nPUB _INBOX.abc 3\r\ninb\r\n")
        seen = await c.ping()
        assert seen == [(b"-ERR 'Permissions Violation for Publish to \"x\"'",),
                        ("MSG", b"a.ok", b"1", None, b"ok")], seen
        # the connection stays usable
        await c.send(b"PUB b.nope 1\r\nn\r\n")
        assert await c.ping() == [(b"-ERR 'Permissions Violation for Publish to \"b.nope\"'",)]
    finally:
        await c.close()


@async_test()
async def test_alice_subscribe_outside_permissions(op_server):
    c = await raw_user(op_server, "alice")
    try:
        await expect_pong(c)
        await c.send(b"SUB b.> 1\r\nSUB _INBOX.> 2\r\n")
        seen = await c.ping()
        assert seen == [(b"-ERR 'Permissions Violation for Subscription to \"b.>\"'",)], seen
    finally:
        await c.close()


@async_test()
async def test_alice_permission_error_reaches_nats_py(op_server):
    async with Clients(op_server) as cl:
        nc = await cl.connect(user_credentials=creds("alice"))
        await nc.publish("x", b"no")
        await nc.flush(timeout=5)
        await wait_until(lambda: cl.errors, 5, what="error_cb")
        # nats-py lower-cases the server's text
        assert any('permissions violation for publish to "x"' in str(e) for e in cl.errors), cl.errors
        assert nc.is_connected


@async_test()
async def test_limited_cannot_touch_secret(op_server):
    c = await raw_user(op_server, "limited")
    try:
        await expect_pong(c)
        await c.send(b"SUB a.secret.> 1\r\nSUB a.secret.x 2\r\nSUB a.> 3\r\nPUB a.secret.x 2\r\nno\r\n")
        seen = await c.ping()
        assert seen == [(b"-ERR 'Permissions Violation for Subscription to \"a.secret.>\"'",),
                        (b"-ERR 'Permissions Violation for Subscription to \"a.secret.x\"'",),
                        (b"-ERR 'Permissions Violation for Publish to \"a.secret.x\"'",)], seen
        async with Clients(op_server) as cl:
            signer = await cl.connect(user_credentials=creds("signer"))
            await signer.publish("a.secret.y", b"s1")
            await signer.publish("a.public.y", b"p1")
            await signer.publish("a.secret.deep.z", b"s2")
            await signer.publish("a.end", b"end")
            await signer.flush(timeout=5)
            got = []
            while not got or got[-1][1] != b"a.end":
                op = await c.read_op(TIMEOUT)
                assert op is not None, "connection closed"
                got.append(op)
            assert got == [("MSG", b"a.public.y", b"3", None, b"p1"), ("MSG", b"a.end", b"3", None, b"end")], got
            assert await c.quiet(0.3) == []
    finally:
        await c.close()


@async_test()
async def test_accounts_isolated_except_stream_import(op_server):
    async with Clients(op_server) as cl:
        alice = await cl.connect(user_credentials=creds("alice"))
        signer = await cl.connect(user_credentials=creds("signer"))
        bob = await cl.connect(user_credentials=creds("bob"))
        bob_got, signer_got = [], []
        await collect(bob, ">", bob_got)
        await collect(signer, ">", signer_got)
        await sync_subs(bob)
        await sync_subs(signer)

        await alice.publish("a.events.x", b"ev")
        await alice.publish("a.other", b"private")
        await bob.publish("b.private", b"bp")
        await bob.publish("a.events.y", b"b-in-b")
        await alice.publish("a.events.end", b"end")
        await alice.flush(timeout=5)
        await bob.flush(timeout=5)

        await wait_until(lambda: any(m.subject == "from_a.a.events.end" for m in bob_got), 5,
                         what="from_a.a.events.end at bob")
        await wait_until(lambda: any(m.subject == "a.events.end" for m in signer_got), 5,
                         what="a.events.end at signer")
        await asyncio.sleep(0.3)
        bob_seen = [(m.subject, m.data) for m in bob_got]
        signer_seen = [(m.subject, m.data) for m in signer_got]
        assert [s for s in bob_seen if not s[0].startswith("b.") and s[0] != "a.events.y"] == \
            [("from_a.a.events.x", b"ev"), ("from_a.a.events.end", b"end")], bob_seen
        assert sorted(bob_seen) == sorted([("from_a.a.events.x", b"ev"), ("from_a.a.events.end", b"end"),
                                           ("b.private", b"bp"), ("a.events.y", b"b-in-b")]), bob_seen
        assert sorted(signer_seen) == sorted([("a.events.x", b"ev"), ("a.other", b"private"),
                                              ("a.events.end", b"end")]), signer_seen


@async_test()
async def test_service_import_request_reply(op_server):
    async with Clients(op_server) as cl:
        signer = await cl.connect(user_credentials=creds("signer"))
        bob = await cl.connect(user_credentials=creds("bob"))
        seen = []

        async def responder(msg):
            seen.append((msg.subject, msg.reply))
            await signer.publish(msg.reply, b"pong:" + msg.subject.encode())

        await signer.subscribe("a.svc.>", cb=responder)
        await sync_subs(signer)
        resp = await bob.request("svc.a.ping", b"hi", timeout=3)
        assert resp.data == b"pong:a.svc.ping"
        assert len(seen) == 1 and seen[0][0] == "a.svc.ping", seen
        assert seen[0][1].startswith("_R_."), seen  # the reply is rewritten for the import
        # B has no route to A's own subject name, only to the imported local subject
        with pytest.raises(nats.errors.NoRespondersError):
            await bob.request("a.svc.ping", b"hi", timeout=3)


@async_test()
async def test_service_import_alice_cannot_reply(op_server):
    c = await raw_user(op_server, "alice")
    try:
        await expect_pong(c)
        await c.send(b"SUB a.svc.> 1\r\n")
        assert await c.ping() == []
        async with Clients(op_server) as cl:
            bob = await cl.connect(user_credentials=creds("bob"))
            req = asyncio.ensure_future(bob.request("svc.a.ping", b"hi", timeout=1.5))
            op = await c.read_op(TIMEOUT)
            # HMSG on nats-server (it adds Nats-Request-Info, see the next test)
            assert op is not None and op[0] in ("MSG", "HMSG") and op[1] == b"a.svc.ping", op
            reply = op[3]
            assert reply is not None and reply.startswith(b"_R_."), op
            await c.send(b"PUB " + reply + b" 4\r\npong\r\n")
            seen = await c.ping()
            assert seen == [(b"-ERR 'Permissions Violation for Publish to \"" + reply + b"\"'",)], seen
            with pytest.raises(nats.errors.TimeoutError):
                await req
    finally:
        await c.close()


@async_test()
async def test_service_import_adds_request_info_header(op_server):
    """nats-server 2.9.10 (observed) adds `Nats-Request-Info: {"acc":"<requesting account>","rtt":N}`
    to a request crossing a service import, so a responder that supports headers gets HMSG."""
    c = await raw_user(op_server, "signer")
    try:
        await expect_pong(c)
        await c.send(b"SUB a.svc.> 1\r\n")
        assert await c.ping() == []
        async with Clients(op_server) as cl:
            bob = await cl.connect(user_credentials=creds("bob"))
            req = asyncio.ensure_future(bob.request("svc.a.info", b"hi", timeout=3))
            op = await c.read_op(TIMEOUT)
            assert op is not None and op[0] == "HMSG" and op[1] == b"a.svc.info", op
            assert op[5] == b"hi", op
            lines = op[4].split(b"\r\n")
            assert lines[0] == b"NATS/1.0", op
            info = [ln for ln in lines if ln.lower().startswith(b"nats-request-info:")]
            assert len(info) == 1, op
            value = json.loads(info[0].split(b":", 1)[1])
            assert value.get("acc") == ACC["B"], value
            assert isinstance(value.get("rtt"), int), value
            await c.send(b"PUB " + op[3] + b" 2\r\nok\r\n")
            resp = await req
            assert resp.data == b"ok"
    finally:
        await c.close()


# ==========================================================================
# 2. Operator mode, full directory resolver
# ==========================================================================


@pytest.mark.parametrize("user", sorted(USERS))
@async_test()
async def test_dir_resolver_connect_or_refuse(dir_server, user):
    async with Clients(dir_server) as cl:
        if USERS[user]["expect_connect"]:
            nc = await cl.connect(user_credentials=creds(user))
            await nc.flush(timeout=5)
        else:
            with pytest.raises(nats.errors.Error) as ei:
                await cl.connect(user_credentials=creds(user))
            assert str(ei.value) == "nats: 'Authorization Violation'", repr(ei.value)


@async_test()
async def test_dir_resolver_raw_bearer_and_unsigned(dir_server):
    c = await raw_user(dir_server, "bearer", sign=False)
    d = await raw_user(dir_server, "alice", sign=False)
    try:
        await expect_pong(c)
        await expect_refused(d)
    finally:
        await c.close()
        await d.close()


@async_test()
async def test_dir_resolver_imports_and_permissions(dir_server):
    async with Clients(dir_server) as cl:
        alice = await cl.connect(user_credentials=creds("alice"))
        signer = await cl.connect(user_credentials=creds("signer"))
        bob = await cl.connect(user_credentials=creds("bob"))
        got = []
        await collect(bob, "from_a.>", got)

        async def responder(msg):
            await signer.publish(msg.reply, b"pong:" + msg.subject.encode())

        await signer.subscribe("a.svc.>", cb=responder)
        await sync_subs(bob)
        await sync_subs(signer)
        await alice.publish("a.events.x", b"ev")
        await alice.flush(timeout=5)
        await wait_until(lambda: got, 5, what="stream import at bob")
        assert [(m.subject, m.data) for m in got] == [("from_a.a.events.x", b"ev")]
        resp = await bob.request("svc.a.ping", b"", timeout=3)
        assert resp.data == b"pong:a.svc.ping"
    c = await raw_user(dir_server, "alice")
    try:
        await expect_pong(c)
        await c.send(b"PUB x 1\r\nx\r\n")
        assert await c.ping() == [(b"-ERR 'Permissions Violation for Publish to \"x\"'",)]
    finally:
        await c.close()


# ==========================================================================
# 3. A user JWT that expires while connected
# ==========================================================================


@async_test()
async def test_user_jwt_expires_while_connected(op_server):
    seed = new_user_seed()
    jwt = mint_user_jwt(public_of(seed), user_seed("A"), exp=int(time.time()) + 2)
    c = await raw_jwt_client(op_server, jwt, seed)
    try:
        await expect_pong(c)
        started = time.monotonic()
        data = await c.read_until_closed(TIMEOUT)
        assert b"-ERR 'User Authentication Expired'\r\n" in data, data
        # nothing but server PINGs may come before it
        before = data.split(b"-ERR 'User Authentication Expired'\r\n")[0]
        assert before.replace(b"PING\r\n", b"") == b"", data
        assert time.monotonic() - started <= TIMEOUT
    finally:
        await c.close()
    # the same JWT is now refused at connect (a second later: exp is whole seconds and
    # nats-server compares now > exp in whole seconds)
    await asyncio.sleep(1.1)
    c = await raw_jwt_client(op_server, jwt, seed)
    try:
        await expect_refused(c)
    finally:
        await c.close()


@async_test()
async def test_user_jwt_expiry_closes_nats_py(op_server, tmp_path):
    seed = new_user_seed()
    jwt = mint_user_jwt(public_of(seed), user_seed("A"), exp=int(time.time()) + 2)
    path = write_creds(tmp_path / "short.creds", jwt, seed)
    closed = asyncio.Event()

    async def on_closed():
        closed.set()

    async with Clients(op_server) as cl:
        nc = await cl.connect(user_credentials=path, closed_cb=on_closed)
        await nc.flush(timeout=5)
        await asyncio.wait_for(closed.wait(), TIMEOUT)
        # nats-py keeps the -ERR text, lower-cased, as last_error (error_cb only gets permission errors)
        assert str(nc.last_error) == "nats: user authentication expired", repr(nc.last_error)


@async_test()
async def test_minted_user_jwt_signed_by_account_works(op_server):
    """Sanity check of the minting helper: a non-expiring minted user connects, with its permissions."""
    seed = new_user_seed()
    jwt = mint_user_jwt(public_of(seed), user_seed("A"), pub={"allow": ["a.mine.>"]})
    c = await raw_jwt_client(op_server, jwt, seed)
    try:
        await expect_pong(c)
        await c.send(b"PUB a.other 1\r\nx\r\n")
        assert await c.ping() == [(b"-ERR 'Permissions Violation for Publish to \"a.other\"'",)]
    finally:
        await c.close()


def mint_v1_user_jwt(user_pub: str, issuer_seed: str, pub: dict | None = None) -> str:
    """A version 1 user JWT (``"alg":"ed25519"``: the claim type at the top level, the signature
    over the encoded claims alone), as nats-server 2.9 still accepts."""
    issuer = nkeys.from_seed(issuer_seed.encode())
    header = {"typ": "jwt", "alg": "ed25519"}
    claims = {"jti": "V1JTI", "iat": int(time.time()), "iss": issuer.public_key.decode(), "name": "v1",
              "sub": user_pub, "type": "user", "nats": {"pub": pub or {}, "sub": {}}}
    c = b64u(json.dumps(claims, separators=(",", ":")).encode())
    return b64u(json.dumps(header, separators=(",", ":")).encode()) + "." + c + "." + \
        b64u(issuer.sign(c.encode()))


@async_test()
async def test_version_1_user_jwt_connects_with_its_permissions(op_server):
    seed = new_user_seed()
    jwt = mint_v1_user_jwt(public_of(seed), user_seed("A"), pub={"allow": ["a.v1.>"]})
    c = await raw_jwt_client(op_server, jwt, seed)
    try:
        await expect_pong(c)
        await c.send(b"PUB a.elsewhere 1\r\nx\r\n")
        assert await c.ping() == [(b"-ERR 'Permissions Violation for Publish to \"a.elsewhere\"'",)]
    finally:
        await c.close()
    # Signed the version 2 way (header and claims) under a version 1 header: refused.
    parts = jwt.split(".")
    issuer = nkeys.from_seed(user_seed("A").encode())
    forged = parts[0] + "." + parts[1] + "." + b64u(issuer.sign((parts[0] + "." + parts[1]).encode()))
    c = await raw_jwt_client(op_server, forged, seed)
    try:
        await expect_refused(c)
    finally:
        await c.close()


@async_test()
async def test_minted_user_of_unknown_account_refused(op_server):
    seed = new_user_seed()
    jwt = mint_user_jwt(public_of(seed), KEYS["unregistered_keys"]["X"]["seed"])
    c = await raw_jwt_client(op_server, jwt, seed)
    try:
        await expect_refused(c)
    finally:
        await c.close()


# ==========================================================================
# 4. MQTT in operator mode (Junction only)
# ==========================================================================


def paho(broker: Broker, version: int, username: str | None, password: str | None, **kw) -> Mqtt:
    c = Mqtt(broker, f"jwt-{uuid.uuid4().hex[:10]}", version, True, **kw)
    if username is not None or password is not None:
        c.client.username_pw_set(username, password)
    return c


def refused_rc(version: int) -> tuple:
    return (5,) if version == V311 else (0x87, 0x86)


def raw_mqtt_refused(broker: Broker, version: int, username: str | None, password: bytes | None,
                     allowed: tuple) -> None:
    m = RawMqtt(broker, version)
    try:
        m.connect(f"raw-{uuid.uuid4().hex[:8]}", expect_rc=None, username=username, password=password)
        ack = m.connack
        assert ack is not None and ack.rc in allowed, f"CONNACK {ack!r}, expected one of {allowed}"
        rest = m.read_until_closed(TIMEOUT)
        assert rest == [], f"after a refusing CONNACK the broker sent {rest!r}"
    finally:
        m.close()


@junction_only
@VERSIONS
def test_mqtt_bearer_jwt_as_password(op_server, version):
    broker = op_server.mqtt_broker()
    c = paho(broker, version, "anything", user_jwt("bearer"))
    try:
        c.connect()
        assert c.subscribe("a/events/#", 1) == [1]
        c.publish("a/events/m", b"hello", qos=1)
        m = c.expect()
        assert (m.topic, m.payload) == ("a/events/m", b"hello")
    finally:
        c.close()


@junction_only
@VERSIONS
def test_mqtt_bearer_lives_in_account_a(op_server, version):
    async def check():
        async with Clients(op_server) as cl:
            signer = await cl.connect(user_credentials=creds("signer"))
            bob = await cl.connect(user_credentials=creds("bob"))
            a_got, b_got = [], []
            await collect(signer, "a.events.>", a_got)
            await collect(bob, ">", b_got)
            await sync_subs(signer)
            await sync_subs(bob)
            c = paho(op_server.mqtt_broker(), version, "dev", user_jwt("bearer"))
            try:
                await asyncio.to_thread(c.connect)
                await asyncio.to_thread(c.publish, "a/events/mq", b"m1", 1)
            finally:
                await asyncio.to_thread(c.close)
            await wait_until(lambda: a_got and b_got, 5, what="delivery in A and via import in B")
            await asyncio.sleep(0.2)
            assert [(m.subject, m.data) for m in a_got] == [("a.events.mq", b"m1")]
            assert [(m.subject, m.data) for m in b_got] == [("from_a.a.events.mq", b"m1")]

    asyncio.run(asyncio.wait_for(check(), 20))


@junction_only
@VERSIONS
@pytest.mark.parametrize("password", ["alice", "revoked", "expired", "garbage", "none"])
def test_mqtt_operator_refusals(op_server, version, password):
    broker = op_server.mqtt_broker()
    pw = {"garbage": b"not-a-jwt", "none": None}.get(password)
    if pw is None and password != "none":
        pw = user_jwt(password).encode()
    raw_mqtt_refused(broker, version, "anything", pw, refused_rc(version))


@junction_only
@VERSIONS
def test_mqtt_operator_refuses_expired_and_unknown_bearer(op_server, version):
    broker = op_server.mqtt_broker()
    seed = new_user_seed()
    expired = mint_user_jwt(public_of(seed), user_seed("A"), bearer=True, exp=int(time.time()) - 60,
                            iat=int(time.time()) - 120)
    raw_mqtt_refused(broker, version, "u", expired.encode(), refused_rc(version))
    forged = mint_user_jwt(public_of(seed), KEYS["unregistered_keys"]["X"]["seed"], bearer=True)
    raw_mqtt_refused(broker, version, "u", forged.encode(), refused_rc(version))
    good = mint_user_jwt(public_of(seed), user_seed("A"), bearer=True)
    m = RawMqtt(broker, version)
    try:
        m.connect("minted-bearer", username="u", password=good.encode())
    finally:
        m.close()


@junction_only
@VERSIONS
def test_mqtt_operator_refusal_seen_by_paho(op_server, version):
    c = paho(op_server.mqtt_broker(), version, "anything", user_jwt("alice"))
    try:
        c.connect(expect_rc=None)
        # paho maps a 3.1.1 CONNACK 5 to the reason code "Not authorized" (0x87)
        allowed = (0x87,) if version == V311 else (0x87, 0x86)
        assert c.connack_rc in allowed, c.connack_rc
    finally:
        c.close()


@junction_only
@async_test()
async def test_nats_over_websocket_operator_bearer(op_server):
    c = await ws_nats(op_server, connect={"jwt": user_jwt("bearer")})
    try:
        assert c.info.get("nonce"), c.info_line
        assert await c.ping() == []
    finally:
        await c.close()
    d = await ws_nats(op_server, send_connect=False)
    try:
        await d.send(connect_line({"jwt": user_jwt("alice")}))
        await expect_refused(d)
    finally:
        await d.close()


# ==========================================================================
# 5. external_jwt (Junction only)
# ==========================================================================


def external_config(default_account: str = "$G") -> str:
    return f"""
accounts {{ A: {{}} }}
external_jwt {{
  issuer: "https://issuer.test"
  audience: "junction"
  account: "{default_account}"
  keys: [
    {{alg: RS256, public_key_file: "{STD_DIR / 'rs256-public.pem'}"}}
    {{alg: ES256, public_key_file: "{STD_DIR / 'es256-public.pem'}"}}
    {{alg: EdDSA, public_key_file: "{STD_DIR / 'ed25519-public.pem'}"}}
    {{alg: HS256, secret: "{HS_SECRET}"}}
  ]
}}
"""


@pytest.fixture
def ext_server(start) -> AuthServer:
    if IS_NATS_SERVER:
        pytest.skip("external_jwt is a Junction extension")
    return start(external_config())


VALID = sorted(n for n, t in TOKENS.items() if t["expected_valid"])
INVALID = sorted(n for n, t in TOKENS.items() if not t["expected_valid"])

OBSERVER_A = hs256_token(std_claims("observer", {"account": "A"}))
STRANGER_G = hs256_token(std_claims("stranger", None))


@junction_only
@pytest.mark.parametrize("name", VALID)
@async_test()
async def test_external_valid_token_nats(ext_server, name):
    async with Clients(ext_server) as cl:
        nc = await cl.connect(token=TOKENS[name]["token"])
        got = []
        await collect(nc, "devices.device-7.>", got)
        await sync_subs(nc)
        await nc.publish("devices.device-7.x", b"t")
        await nc.flush(timeout=5)
        await wait_until(lambda: got, 5, what="own message")
        assert [(m.subject, m.data) for m in got] == [("devices.device-7.x", b"t")]
        assert not cl.errors, cl.errors
    c = await RawClient.connect(ext_server, send_connect=False)
    try:
        assert c.info.get("auth_required") is True
        await c.send(connect_line({"auth_token": TOKENS[name]["token"]}))
        await expect_pong(c)
    finally:
        await c.close()


@junction_only
@pytest.mark.parametrize("name", INVALID)
@async_test()
async def test_external_invalid_token_nats(ext_server, name):
    async with Clients(ext_server) as cl:
        with pytest.raises(nats.errors.Error) as ei:
            await cl.connect(token=TOKENS[name]["token"])
        assert str(ei.value) == "nats: 'Authorization Violation'", repr(ei.value)
    c = await RawClient.connect(ext_server, send_connect=False)
    try:
        await c.send(connect_line({"auth_token": TOKENS[name]["token"]}))
        await expect_refused(c)
    finally:
        await c.close()


@junction_only
@pytest.mark.parametrize("fields", [
    {}, {"auth_token": "garbage"},
    {"auth_token": hs256_token(std_claims("x", {"account": "A"}), secret="wrong")},
    {"auth_token": hs256_token({**std_claims("x", {"account": "A"}), "aud": "other"})},
    {"auth_token": hs256_token({k: v for k, v in std_claims("x", {"account": "A"}).items() if k != "exp"})},
], ids=["nothing", "garbage", "minted_wrong_secret", "minted_wrong_aud", "minted_no_exp"])
@async_test()
async def test_external_other_refusals(ext_server, fields):
    c = await RawClient.connect(ext_server, send_connect=False)
    try:
        await c.send(connect_line(fields))
        await expect_refused(c)
    finally:
        await c.close()


@junction_only
@async_test()
async def test_external_permissions_nats(ext_server):
    async with Clients(ext_server) as cl:
        obs = await cl.connect(token=OBSERVER_A)
        got = []
        await collect(obs, "devices.>", got)
        await sync_subs(obs)
        c = await RawClient.connect(ext_server, send_connect=False)
        try:
            await c.send(connect_line({"auth_token": TOKENS["valid_es256"]["token"]}))
            await expect_pong(c)
            await c.send(b"PUB devices.device-8.x 2\r\nno\r\nPUB devices.device-7.x 2\r\nok\r\n"
                         b"SUB commands.device-7 1\r\nSUB commands.device-8 2\r\nSUB devices.> 3\r\n")
            seen = await c.ping()
            assert seen == [(b"-ERR 'Permissions Violation for Publish to \"devices.device-8.x\"'",),
                            (b"-ERR 'Permissions Violation for Subscription to \"commands.device-8\"'",),
                            (b"-ERR 'Permissions Violation for Subscription to \"devices.>\"'",)], seen
            await wait_until(lambda: got, 5, what="device-7's allowed message at the observer")
            await asyncio.sleep(0.2)
            assert [(m.subject, m.data) for m in got] == [("devices.device-7.x", b"ok")]
            await obs.publish("commands.device-7", b"cmd")
            await obs.publish("commands.device-8", b"other")
            await obs.flush(timeout=5)
            op = await c.read_op(TIMEOUT)
            assert op == ("MSG", b"commands.device-7", b"1", None, b"cmd"), op
            assert await c.quiet(0.3) == []
        finally:
            await c.close()


@junction_only
@async_test()
async def test_external_accounts_isolated(ext_server):
    """A token naming account A and one with no `nats` claim (default account $G) do not meet."""
    async with Clients(ext_server) as cl:
        a = await cl.connect(token=OBSERVER_A)
        g = await cl.connect(token=STRANGER_G)
        g2 = await cl.connect(token=hs256_token(std_claims("stranger-2", None)))
        a_got, g_got = [], []
        await collect(a, ">", a_got)
        await collect(g, ">", g_got)
        await sync_subs(a)
        await sync_subs(g)
        await g2.publish("anything.g", b"from-g")
        await a.publish("anything.a", b"from-a")
        await g2.flush(timeout=5)
        await a.flush(timeout=5)
        await wait_until(lambda: a_got and g_got, 5, what="delivery inside each account")
        await asyncio.sleep(0.3)
        assert [(m.subject, m.data) for m in a_got] == [("anything.a", b"from-a")]
        assert [(m.subject, m.data) for m in g_got] == [("anything.g", b"from-g")]


@junction_only
@async_test()
async def test_external_token_expires_while_connected(ext_server):
    tok = hs256_token(std_claims("short", {"account": "A"}, exp=int(time.time()) + 2))
    c = await RawClient.connect(ext_server, send_connect=False)
    try:
        await c.send(connect_line({"auth_token": tok}))
        await expect_pong(c)
        data = await c.read_until_closed(TIMEOUT)
        assert b"-ERR 'User Authentication Expired'\r\n" in data, data
    finally:
        await c.close()


# -- MQTT --------------------------------------------------------------------


@junction_only
@VERSIONS
@pytest.mark.parametrize("name", VALID)
def test_external_valid_token_mqtt(ext_server, version, name):
    c = paho(ext_server.mqtt_broker(), version, "any-user", TOKENS[name]["token"])
    try:
        c.connect()
        # not devices/device-7/#: like nats-server, '#' also subscribes the parent devices.device-7,
        # which the token does not allow
        assert c.subscribe("devices/device-7/+", 1) == [1]
        c.publish("devices/device-7/t", b"m", qos=1)
        m = c.expect()
        assert (m.topic, m.payload) == ("devices/device-7/t", b"m")
    finally:
        c.close()


@junction_only
@VERSIONS
@pytest.mark.parametrize("name", INVALID + ["garbage"])
def test_external_invalid_token_mqtt(ext_server, version, name):
    pw = b"garbage.not.jwt" if name == "garbage" else TOKENS[name]["token"].encode()
    # a refused JWT is "Not authorized" (0x87); a password that is no JWT at all may be 0x86
    allowed = (5,) if version == V311 else ((0x87, 0x86) if name == "garbage" else (0x87,))
    raw_mqtt_refused(ext_server.mqtt_broker(), version, "any-user", pw, allowed)


@junction_only
@VERSIONS
def test_external_mqtt_publish_permissions(ext_server, version):
    broker = ext_server.mqtt_broker()
    obs = paho(broker, version, "obs", OBSERVER_A)
    dev = paho(broker, version, "dev", TOKENS["valid_rs256"]["token"])
    try:
        obs.connect()
        assert obs.subscribe("devices/#", 1) == [1]
        dev.connect()
        if version == V5:
            info = dev.publish("devices/device-8/x", b"no", qos=1, wait=False)
            assert dev.puback_rc(info) == 0x87
        else:
            dev.publish("devices/device-8/x", b"no-q1", qos=1, wait=False)
        dev.publish("devices/device-8/y", b"no-q0", qos=0)
        dev.publish("devices/device-7/x", b"ok", qos=1)
        m = obs.expect()
        assert (m.topic, m.payload) == ("devices/device-7/x", b"ok")
        obs.expect_none(0.5)
    finally:
        dev.close()
        obs.close()


@junction_only
@VERSIONS
def test_external_mqtt_subscribe_permissions(ext_server, version):
    broker = ext_server.mqtt_broker()
    obs = paho(broker, version, "obs", OBSERVER_A)
    dev = paho(broker, version, "dev", TOKENS["valid_eddsa"]["token"])
    try:
        obs.connect()
        dev.connect()
        denied = 0x80 if version == V311 else 0x87
        assert dev.subscribe("commands/device-7", 1) == [1]
        assert dev.subscribe("commands/device-8", 1) == [denied]
        assert dev.subscribe("commands/#", 1) == [denied]
        obs.publish("commands/device-8", b"other", qos=1)
        obs.publish("commands/device-7", b"cmd", qos=1)
        m = dev.expect()
        assert (m.topic, m.payload) == ("commands/device-7", b"cmd")
        dev.expect_none(0.5)
    finally:
        dev.close()
        obs.close()


@junction_only
@VERSIONS
def test_external_mqtt_raw_subscribe_denied_codes(ext_server, version):
    m = RawMqtt(ext_server.mqtt_broker(), version)
    try:
        m.connect("raw-dev", username="u", password=TOKENS["valid_hs256"]["token"].encode())
        ack = m.subscribe([("commands/device-7", 1), ("commands/device-8", 1), ("devices/device-7/+", 0),
                            ("devices/device-7/#", 0)])
        denied = 0x80 if version == V311 else 0x87
        # '#' also covers the parent level devices.device-7, which is not allowed
        assert ack.codes == [1, denied, 0, denied], ack
    finally:
        m.close()


# -- WebSocket -----------------------------------------------------------------


@junction_only
@pytest.mark.parametrize("name", VALID)
@async_test()
async def test_external_valid_token_nats_websocket(ext_server, name):
    c = await ws_nats(ext_server, connect={"auth_token": TOKENS[name]["token"]})
    try:
        assert await c.ping() == []
        await c.send(b"SUB devices.device-7.> 1\r\nPUB devices.device-7.w 1\r\nw\r\nPUB devices.device-8.w 1\r\nx\r\n")
        seen = await c.ping()
        assert sorted(seen, key=repr) == sorted([("MSG", b"devices.device-7.w", b"1", None, b"w"),
                                                 (b"-ERR 'Permissions Violation for Publish to \"devices.device-8.w\"'",)],
                                                key=repr), seen
    finally:
        await c.close()


@junction_only
@pytest.mark.parametrize("name", INVALID)
@async_test()
async def test_external_invalid_token_nats_websocket(ext_server, name):
    c = await ws_nats(ext_server, send_connect=False)
    try:
        await c.send(connect_line({"auth_token": TOKENS[name]["token"]}))
        await expect_refused(c)
    finally:
        await c.close()


@junction_only
@VERSIONS
@pytest.mark.parametrize("name", ["valid_rs256", "valid_hs256", "expired_rs256", "alg_none", "tampered_rs256"])
def test_external_token_mqtt_websocket(ext_server, version, name):
    c = paho(ext_server.ws_broker(), version, "ws-user", TOKENS[name]["token"], transport="websockets",
             ws_path="/mqtt")
    try:
        if TOKENS[name]["expected_valid"]:
            c.connect()
            assert c.subscribe("commands/device-8", 1) == [0x80 if version == V311 else 0x87]
            assert c.subscribe("commands/device-7", 1) == [1]
        else:
            c.connect(expect_rc=None)
            # paho reports a 3.1.1 CONNACK 5 as "Not authorized" (0x87) too
            assert c.connack_rc == 0x87, c.connack_rc
    finally:
        c.close()


# ==========================================================================
# Limits in the claims: user subs and payload, account connections
# ==========================================================================


def sign_jwt(claims: dict, issuer_seed: str) -> str:
    issuer = nkeys.from_seed(issuer_seed.encode())
    claims = dict(claims, iss=issuer.public_key.decode())
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest()).decode().rstrip("=")
    si = b64u(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}, separators=(",", ":")).encode()) + "." + \
        b64u(json.dumps(claims, separators=(",", ":")).encode())
    return si + "." + b64u(issuer.sign(si.encode()))


@async_test()
async def test_user_jwt_limits_subscriptions_and_payload(op_server):
    """A user JWT with `subs: 1, payload: 8`: the second SUB gets 'maximum subscriptions exceeded'
    and the connection stays; a 9-byte PUB gets 'Maximum Payload Violation' and the close."""
    seed = new_user_seed()
    jwt = mint_user_jwt(public_of(seed), user_seed("A"), limits={"subs": 1, "payload": 8})
    c = await raw_jwt_client(op_server, jwt, seed)
    try:
        # Told its smaller max_payload in a fresh INFO (nats-server sends it right after the PONG
        # of the CONNECT; Junction right before it).
        ops = [await c.read_op(TIMEOUT), await c.read_op(TIMEOUT)]
        infos = [o for o in ops if o[0].startswith(b"INFO ")]
        assert (b"PONG",) in ops and len(infos) == 1, ops
        assert json.loads(infos[0][0][5:])["max_payload"] == 8, infos
        await c.send(b"SUB a.one 1\r\n")
        assert await c.ping() == []
        await c.send(b"SUB a.two 2\r\n")
        assert await c.ping() == [(b"-ERR 'maximum subscriptions exceeded'",)]
        await c.send(b"PUB a.one 8\r\n12345678\r\n")
        assert await c.ping() == [("MSG", b"a.one", b"1", None, b"12345678")]
        await c.send(b"PUB a.one 9\r\n123456789\r\n")
        data = await c.read_until_closed(TIMEOUT)
        assert data.startswith(b"-ERR 'Maximum Payload Violation'\r\n"), data
    finally:
        await c.close()


@async_test()
async def test_account_jwt_limits_connections(start, tmp_path):
    """An account whose JWT says `conn: 1`: a second connection is refused with
    'maximum account active connections exceeded'; once the first leaves, a new one gets in."""
    acct_seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT).decode()
    acct_pub = public_of(acct_seed)
    account = sign_jwt({"iat": int(time.time()), "name": "L", "sub": acct_pub,
                        "nats": {"type": "account", "version": 2,
                                 "limits": {"conn": 1, "subs": -1, "data": -1, "payload": -1,
                                            "imports": -1, "exports": -1, "wildcards": True,
                                            "leaf": -1}}},
                       KEYS["operator"]["seed"])
    config = (f'operator: "{JWT_DIR / "op.jwt"}"\n'
              f'system_account: {ACC["SYS"]}\n'
              'resolver: MEMORY\n'
              f'resolver_preload: {{ {ACC["SYS"]}: "{(JWT_DIR / "SYS.jwt").read_text().strip()}",'
              f' {acct_pub}: "{account}" }}\n')
    srv = start(config)
    users = []
    for _ in range(3):
        seed = new_user_seed()
        users.append((mint_user_jwt(public_of(seed), acct_seed), seed))
    first = await raw_jwt_client(srv, *users[0])
    await expect_pong(first)
    second = await raw_jwt_client(srv, *users[1])
    data = await second.read_until_closed(TIMEOUT)
    assert data == b"-ERR 'maximum account active connections exceeded'\r\n", data
    await second.close()
    await first.close()
    third = None
    deadline = time.monotonic() + TIMEOUT
    while True:
        third = await raw_jwt_client(srv, *users[2])
        op = await third.read_op(TIMEOUT)
        if op == (b"PONG",):
            break
        await third.close()
        assert time.monotonic() < deadline, f"the account never had room again: {op!r}"
        await asyncio.sleep(0.1)
    await third.close()


@async_test()
async def test_account_jwt_limits_subscriptions(start, tmp_path):
    """An account whose JWT says `subs: 2`: as in nats-server, that is the most each of its
    connections may hold (when its user JWT sets no smaller limit); a third SUB gets 'maximum
    subscriptions exceeded' and the connection stays; after an UNSUB there is room."""
    acct_seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT).decode()
    acct_pub = public_of(acct_seed)
    account = sign_jwt({"iat": int(time.time()), "name": "S", "sub": acct_pub,
                        "nats": {"type": "account", "version": 2,
                                 "limits": {"conn": -1, "subs": 2, "data": -1, "payload": -1,
                                            "imports": -1, "exports": -1, "wildcards": True,
                                            "leaf": -1}}},
                       KEYS["operator"]["seed"])
    srv = start(f'operator: "{JWT_DIR / "op.jwt"}"\n'
                f'system_account: {ACC["SYS"]}\n'
                'resolver: MEMORY\n'
                f'resolver_preload: {{ {ACC["SYS"]}: "{(JWT_DIR / "SYS.jwt").read_text().strip()}",'
                f' {acct_pub}: "{account}" }}\n')
    clients = []
    for _ in range(2):
        seed = new_user_seed()
        c = await raw_jwt_client(srv, mint_user_jwt(public_of(seed), acct_seed), seed)
        await expect_pong(c)
        clients.append(c)
    one, two = clients
    try:
        await one.send(b"SUB x 1\r\nSUB y 2\r\n")
        await two.send(b"SUB x 1\r\nSUB y 2\r\n")
        assert await one.ping() == [] and await two.ping() == []
        await two.send(b"SUB z 3\r\n")
        assert await two.ping() == [(b"-ERR 'maximum subscriptions exceeded'",)]
        await two.send(b"UNSUB 1\r\n")
        assert await two.ping() == []
        await two.send(b"SUB z 3\r\n")
        assert await two.ping() == []
    finally:
        for c in clients:
            await c.close()


@junction_only
@VERSIONS
def test_mqtt_user_jwt_limits_subscriptions(op_server, version):
    """A bearer user JWT with `subs: 1` as the MQTT password: the first filter is granted, a
    second gets SUBACK 0x97 (quota exceeded, 5.0) or 0x80 (3.1.1); re-subscribing the same
    filter replaces it and is granted."""
    seed = new_user_seed()
    jwt = mint_user_jwt(public_of(seed), user_seed("A"), bearer=True, limits={"subs": 1})
    m = RawMqtt(op_server.mqtt_broker(), version)
    try:
        m.connect(f"lim-{uuid.uuid4().hex[:8]}", username="x", password=jwt.encode())
        assert m.subscribe("a/one", pid=1).codes == [1]
        assert m.subscribe("a/two", pid=2).codes == [0x97 if version == V5 else 0x80]
        assert m.subscribe("a/one", pid=3).codes == [1]
    finally:
        m.close()


# --------------------------------------------------------------------------
# MQTT clients are closed when their JWT expires, as NATS clients are
# --------------------------------------------------------------------------


@junction_only
@VERSIONS
def test_mqtt_user_jwt_expires_while_connected(op_server, version):
    """A bearer user JWT that expires while its MQTT client is connected ends the connection:
    5.0 hears DISCONNECT 0xA0 (Maximum connect time) with a reason string, 3.1.1 is closed."""
    seed = new_user_seed()
    jwt = mint_user_jwt(public_of(seed), user_seed("A"), bearer=True, exp=int(time.time()) + 2)
    m = RawMqtt(op_server.mqtt_broker(), version)
    try:
        m.connect(f"expiring-{version}", username="u", password=jwt.encode())
        started = time.monotonic()
        got = m.read_until_closed(8)
        waited = time.monotonic() - started
        assert 0.5 < waited < 5, f"closed after {waited:.1f}s"
        if version == V5:
            assert [p.name for p in got] == ["DISCONNECT"], got
            assert got[0].rc == 0xA0, got
            assert "expired" in (got[0].props.get(0x1F) or ""), got[0].props
        else:
            assert got == [], got
    finally:
        m.close()
    _, body = op_server.http_get("/connz?state=closed")
    closed = json.loads(body)["connections"]
    assert any(c.get("reason") == "Authentication Expired" for c in closed), closed


@junction_only
def test_mqtt_over_websocket_user_jwt_expires(op_server):
    seed = new_user_seed()
    jwt = mint_user_jwt(public_of(seed), user_seed("A"), bearer=True, exp=int(time.time()) + 2)
    c = paho(op_server.ws_broker(), V5, "u", jwt, transport="websockets", ws_path="/mqtt")
    try:
        c.connect()
        assert c.disconnected.wait(8), "not disconnected when the JWT expired"
        assert c.disconnect_rc == 0xA0, c.disconnect_rc
    finally:
        c.close()
