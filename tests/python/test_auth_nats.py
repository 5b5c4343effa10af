"""End-to-end tests for authentication, permissions and accounts (issue 5) on
the NATS client port.

Every test writes its own nats-server-format config, starts the real binary
with it and drives it with nats-py or raw sockets over 127.0.0.1. The
expectations are nats-server's, checked against nats-server 2.9.10 with
``JUNCTION_EXPECT_EXIT=1`` and ``JUNCTION_BIN`` pointing at a wrapper named
``nats-server`` that drops ``--mqtt-port``/``--ws-port`` (conftest always passes
them and nats-server 2.9 does not know them) and execs /usr/sbin/nats-server.
The one test that cannot run there says why in its skip reason.

Wire texts (server/client.go, server/auth.go):
  -ERR 'Authorization Violation'                                   + close
  -ERR 'Authentication Timeout'                                    + close
  -ERR 'Permissions Violation for Publish to "<subj>"'             stays up
  -ERR 'Permissions Violation for Subscription to "<subj>"'        stays up
  -ERR 'Permissions Violation for Subscription to "<subj>" using queue "<q>"'
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from pathlib import Path

import nats
import nats.errors
import nkeys
import pytest

from conftest import BIN, REPO, Clients, RawClient, async_test, sync_subs

IS_NATS_SERVER = "nats-server" in os.path.basename(BIN)

NKEY_DIR = REPO / "tests" / "fixtures" / "nkeys"
NKEYS = json.loads((NKEY_DIR / "keys.json").read_text())["users"]
ALICE_PUB = NKEYS["nk-alice"]["public"]
BOB_PUB = NKEYS["nk-bob"]["public"]
STRANGER_PUB = NKEYS["nk-stranger"]["public"]

# bcrypt hashes, made once with PyPI bcrypt 5.0.0 (not installed in the venv):
#   python3 -m pip install --target /tmp/bc bcrypt
#   PYTHONPATH=/tmp/bc python3 -c 'import bcrypt; print(bcrypt.hashpw(b"s3cret-bcrypt", bcrypt.gensalt(10)))'
# ($2a$ variant with gensalt(10, prefix=b"2a")).
BCRYPT_2B = "$2b$10$GRckTinfNYb4g3v51bFwYOrEhrGBPjTd3bSw2PInc0/ENOzvSGCUy"  # "s3cret-bcrypt"
BCRYPT_2A = "$2a$10$xehN1m6qpIerHnSydlBm/eJPToQhd4GedX6.m5O06mtX2Mw6rBLLC"  # "alpha-2a"
BCRYPT_TOKEN = "$2b$10$mxI/3.ACvRhsmZqWKegax.HoV7JGD2SJM8TyURXqOUvVyHgz0f0YW"  # "tok-bcrypt-123"

AUTH_VIOLATION = b"-ERR 'Authorization Violation'\r\n"
AUTH_TIMEOUT = b"-ERR 'Authentication Timeout'\r\n"


def pub_denied(subject: str) -> tuple:
    """The op tuple RawClient returns for a refused publish."""
    return (f"-ERR 'Permissions Violation for Publish to \"{subject}\"'".encode(),)


def sub_denied(subject: str, queue: str | None = None) -> tuple:
    text = f"-ERR 'Permissions Violation for Subscription to \"{subject}\""
    if queue is not None:
        text += f" using queue \"{queue}\""
    return ((text + "'").encode(),)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


async def raw_login(srv, **connect) -> RawClient:
    """A raw connection whose CONNECT (with these fields) is accepted: PING gets a bare PONG."""
    c = await RawClient.connect(srv, connect)
    seen = await c.ping()
    assert seen == [], f"CONNECT {connect!r} was answered with {seen!r} before PONG"
    return c


async def raw_refused(srv, connect: dict | None = None) -> bytes:
    """Send CONNECT with ``connect``; return all bytes up to the server's close (bounded)."""
    c = await RawClient.connect(srv, connect)
    try:
        return await c.read_until_closed(5)
    finally:
        await c.close()


async def nats_refused(srv, **kwargs) -> None:
    """nats-py's connect fails with the server's Authorization Violation."""
    with pytest.raises(nats.errors.Error) as ei:
        nc = await nats.connect(servers=[srv.url], allow_reconnect=False, max_reconnect_attempts=0,
                                connect_timeout=5, **kwargs)
        await nc.close()  # only reached if the server wrongly accepted
    assert "authorization violation" in str(ei.value).lower(), repr(ei.value)


async def raw_watch(srv, subject: str = ">", **connect) -> RawClient:
    """A raw subscriber (sid 1) whose SUB is known to be in place."""
    c = await RawClient.connect(srv, connect)
    await c.send(f"SUB {subject} 1\r\n".encode())
    assert await c.ping() == []
    return c


def msgs(ops) -> list:
    """(subject, sid, reply, payload) of the MSG ops, as str."""
    out = []
    for op in ops:
        assert op[0] == "MSG", f"unexpected op {op!r}"
        out.append((op[1].decode(), op[2].decode(), op[3].decode() if op[3] else None, op[4].decode()))
    return out


def pub(subject: str, payload: bytes = b"x", reply: str | None = None) -> bytes:
    r = f" {reply}" if reply else ""
    return f"PUB {subject}{r} {len(payload)}\r\n".encode() + payload + b"\r\n"


def sign_b64url(seed: str, data: bytes) -> str:
    kp = nkeys.from_seed(seed.encode())
    return base64.urlsafe_b64encode(kp.sign(data)).rstrip(b"=").decode()


# ==========================================================================
# 1. User/password, token, users lists with plain and bcrypt passwords
# ==========================================================================

SINGLE_USER = """
authorization { user: alice, password: "pw-alice" }
"""
TOKEN = """
authorization { token: "t0k3n-secret" }
"""
TOKEN_BCRYPT = f"""
authorization {{ token: "{BCRYPT_TOKEN}" }}
"""
USERS = f"""
authorization {{
  users: [
    {{ user: plain, password: "plain-pw" }}
    {{ user: hashed, password: "{BCRYPT_2B}" }}
    {{ user: hashed2a, password: "{BCRYPT_2A}" }}
  ]
}}
"""

# (config, accepted CONNECT fields, refused CONNECT fields by case name)
AUTH_CASES = {
    "single_user": (SINGLE_USER, [{"user": "alice", "pass": "pw-alice"}], {
        "wrong_password": {"user": "alice", "pass": "nope"},
        "unknown_user": {"user": "mallory", "pass": "pw-alice"},
        "missing_creds": {},
        "password_only": {"pass": "pw-alice"},
        "token_instead": {"auth_token": "pw-alice"},
    }),
    "token": (TOKEN, [{"auth_token": "t0k3n-secret"}], {
        "wrong_token": {"auth_token": "t0k3n-secre"},
        "missing_creds": {},
        "token_as_password": {"user": "x", "pass": "t0k3n-secret"},
    }),
    "token_bcrypt": (TOKEN_BCRYPT, [{"auth_token": "tok-bcrypt-123"}], {
        "wrong_token": {"auth_token": "tok-bcrypt-124"},
        "the_hash_itself": {"auth_token": BCRYPT_TOKEN},
        "missing_creds": {},
    }),
    "users": (USERS, [
        {"user": "plain", "pass": "plain-pw"},
        {"user": "hashed", "pass": "s3cret-bcrypt"},
        {"user": "hashed2a", "pass": "alpha-2a"},
    ], {
        "wrong_password": {"user": "plain", "pass": "plain-PW"},
        "bcrypt_wrong_password": {"user": "hashed", "pass": "s3cret-bcrypT"},
        "bcrypt_hash_as_password": {"user": "hashed", "pass": BCRYPT_2B},
        "other_users_password": {"user": "hashed", "pass": "plain-pw"},
        "unknown_user": {"user": "nobody", "pass": "plain-pw"},
        "missing_creds": {},
        "user_without_password": {"user": "plain"},
    }),
}


@pytest.mark.parametrize("case", list(AUTH_CASES))
@async_test()
async def test_info_advertises_auth_without_nonce(server_factory, case):
    """Password/token configs: INFO says auth_required and carries no nonce."""
    srv = server_factory(AUTH_CASES[case][0])
    c = await RawClient.connect(srv, send_connect=False)
    try:
        assert c.info.get("auth_required") is True, c.info_line
        assert "nonce" not in c.info, c.info_line
    finally:
        await c.close()


@pytest.mark.parametrize("case", list(AUTH_CASES))
@async_test()
async def test_right_credentials_connect(server_factory, case):
    """Raw CONNECT with the right credentials gets PONG; nats-py connects and round-trips."""
    config, good, _ = AUTH_CASES[case]
    srv = server_factory(config)
    for creds in good:
        c = await raw_login(srv, **creds)
        await c.close()
        kw = {}
        if "auth_token" in creds:
            kw["token"] = creds["auth_token"]
        else:
            kw["user"], kw["password"] = creds["user"], creds["pass"]
        async with Clients(srv) as clients:
            nc = await clients.connect(**kw)
            sub = await nc.subscribe("auth.ok")
            await sync_subs(nc)
            await nc.publish("auth.ok", b"hi")
            msg = await sub.next_msg(timeout=5)
            assert msg.data == b"hi"


@pytest.mark.parametrize("case,bad", [(c, b) for c, v in AUTH_CASES.items() for b in v[2]])
@async_test()
async def test_wrong_credentials_refused(server_factory, case, bad):
    """Bad or missing credentials: exactly -ERR 'Authorization Violation', then EOF."""
    config, _, bads = AUTH_CASES[case]
    srv = server_factory(config)
    data = await raw_refused(srv, bads[bad])
    assert data == AUTH_VIOLATION


@async_test()
async def test_nats_py_sees_authorization_violation(server_factory):
    srv = server_factory(USERS)
    await nats_refused(srv, user="plain", password="bad")
    await nats_refused(srv, user="hashed", password="plain-pw")
    await nats_refused(srv)  # no credentials at all
    # The server is still fine for good clients afterwards.
    async with Clients(srv) as clients:
        nc = await clients.connect(user="hashed", password="s3cret-bcrypt")
        await nc.flush(timeout=5)


# ==========================================================================
# 2. NKeys
# ==========================================================================

NKEY_CONF = f"""
authorization {{
  users: [
    {{ nkey: {ALICE_PUB} }}
    {{ nkey: {BOB_PUB}, permissions: {{ publish: {{ allow: ["bob.>"] }}, subscribe: {{ allow: ["bob.>", "_INBOX.>"] }} }} }}
  ]
}}
"""


@async_test()
async def test_nkey_info_has_fresh_nonce(server_factory):
    """INFO: auth_required and a 15-char base64url nonce, new per connection."""
    srv = server_factory(NKEY_CONF)
    nonces = set()
    for _ in range(3):
        c = await RawClient.connect(srv, send_connect=False)
        try:
            assert c.info.get("auth_required") is True, c.info_line
            nonce = c.info.get("nonce")
            assert isinstance(nonce, str) and re.fullmatch(r"[A-Za-z0-9_-]{15}", nonce), c.info_line
            nonces.add(nonce)
        finally:
            await c.close()
    assert len(nonces) == 3, nonces


@async_test()
async def test_nkey_users_connect_with_nats_py(server_factory):
    srv = server_factory(NKEY_CONF)
    async with Clients(srv) as clients:
        alice = await clients.connect(nkeys_seed=str(NKEY_DIR / "nk-alice.nk"))
        bob = await clients.connect(nkeys_seed=str(NKEY_DIR / "nk-bob.nk"))
        sub = await alice.subscribe(">")
        await sync_subs(alice)
        await bob.publish("bob.ok", b"1")
        await bob.publish("alice.nope", b"2")  # bob may only publish bob.>
        await bob.flush(timeout=5)
        msg = await sub.next_msg(timeout=5)
        assert (msg.subject, msg.data) == ("bob.ok", b"1")
        await alice.flush(timeout=5)
        with pytest.raises(nats.errors.TimeoutError):
            await sub.next_msg(timeout=0.3)
        assert [str(e) for e in clients.errors] == ['nats: permissions violation for publish to "alice.nope"']
        assert bob.is_connected
        # bob may subscribe to bob.> and inboxes only.
        await bob.subscribe("alice.x")
        await sync_subs(bob)
        assert [str(e) for e in clients.errors][1:] == ['nats: permissions violation for subscription to "alice.x"']

        # A request from bob (publish bob.>, subscribe _INBOX.>) to alice works.
        async def ok(msg):
            await msg.respond(b"ok")

        await alice.subscribe("bob.svc", cb=ok)
        await sync_subs(alice)
        assert (await bob.request("bob.svc", b"?", timeout=5)).data == b"ok"


@async_test()
async def test_nkey_stranger_refused_by_nats_py(server_factory):
    srv = server_factory(NKEY_CONF)
    await nats_refused(srv, nkeys_seed=str(NKEY_DIR / "nk-stranger.nk"))


@async_test()
async def test_nkey_raw_signatures(server_factory):
    """Raw CONNECT {nkey, sig}: right signature accepted (raw-url and std-padded base64),
    every forged or missing signature refused."""
    srv = server_factory(NKEY_CONF)
    alice_seed = NKEYS["nk-alice"]["seed"]
    stranger_seed = NKEYS["nk-stranger"]["seed"]

    # Accepted: sig over the exact nonce string, base64 RawURL (what nats-py sends).
    c = await RawClient.connect(srv, send_connect=False)
    sig = sign_b64url(alice_seed, c.info["nonce"].encode())
    await c.send(b"CONNECT " + json.dumps({"verbose": False, "nkey": ALICE_PUB, "sig": sig}).encode() + b"\r\nPING\r\n")
    assert await c.readline() == b"PONG"
    await c.close()

    # Accepted: the same signature in padded standard base64 (nats-server falls back to it).
    c = await RawClient.connect(srv, send_connect=False)
    raw_sig = nkeys.from_seed(alice_seed.encode()).sign(c.info["nonce"].encode())
    std = base64.b64encode(raw_sig).decode()
    await c.send(b"CONNECT " + json.dumps({"verbose": False, "nkey": ALICE_PUB, "sig": std}).encode() + b"\r\nPING\r\n")
    assert await c.readline() == b"PONG"
    await c.close()

    forged = {
        # Alice's key signing some other nonce.
        "other_nonce": lambda nonce: {"nkey": ALICE_PUB, "sig": sign_b64url(alice_seed, b"AAAAAAAAAAAAAAA")},
        # The base64-decoded nonce instead of the nonce string.
        "decoded_nonce": lambda nonce: {"nkey": ALICE_PUB,
                                        "sig": sign_b64url(alice_seed, base64.urlsafe_b64decode(nonce + "="))},
        # The stranger's key signing the right nonce, claiming to be alice.
        "wrong_key": lambda nonce: {"nkey": ALICE_PUB, "sig": sign_b64url(stranger_seed, nonce.encode())},
        # The stranger, correctly signed, but not configured.
        "stranger": lambda nonce: {"nkey": STRANGER_PUB, "sig": sign_b64url(stranger_seed, nonce.encode())},
        "missing_sig": lambda nonce: {"nkey": ALICE_PUB},
        "garbage_sig": lambda nonce: {"nkey": ALICE_PUB, "sig": "not a signature!"},
        "no_nkey": lambda nonce: {"sig": sign_b64url(alice_seed, nonce.encode())},
        # A user/password CONNECT against an nkey-only config.
        "password": lambda nonce: {"user": "alice", "pass": "alice"},
    }
    for name, make in forged.items():
        c = await RawClient.connect(srv, send_connect=False)
        fields = {"verbose": False, **make(c.info["nonce"])}
        await c.send(b"CONNECT " + json.dumps(fields).encode() + b"\r\n")
        data = await c.read_until_closed(5)
        await c.close()
        assert data == AUTH_VIOLATION, f"{name}: got {data!r}"


# ==========================================================================
# 3. no_auth_user
# ==========================================================================

NO_AUTH = """
no_auth_user: anon
accounts {
  A: {
    users: [
      { user: anon, password: "anon-pw", permissions: { publish: { deny: ["forbidden"] } } }
      { user: a2, password: "a2-pw" }
    ]
  }
  B: { users: [ { user: b, password: "b-pw" } ] }
}
"""


@async_test()
async def test_no_auth_user_info_has_no_auth_required(server_factory):
    srv = server_factory(NO_AUTH)
    c = await RawClient.connect(srv, send_connect=False)
    try:
        assert "auth_required" not in c.info, c.info_line
        assert "nonce" not in c.info, c.info_line
    finally:
        await c.close()


@async_test()
async def test_no_auth_user_gets_account_and_permissions(server_factory):
    """A client without credentials is `anon`: account A, anon's permissions."""
    srv = server_factory(NO_AUTH)
    a2 = await raw_watch(srv, user="a2", **{"pass": "a2-pw"})
    b = await raw_watch(srv, user="b", **{"pass": "b-pw"})
    async with Clients(srv) as clients:
        nc = await clients.connect()  # no credentials
        await nc.publish("hello", b"from-anon")
        await nc.publish("forbidden", b"nope")
        await nc.flush(timeout=5)
        await nc.flush(timeout=5)
        assert [str(e) for e in clients.errors] == ['nats: permissions violation for publish to "forbidden"']
        assert nc.is_connected
    # anon's message reached its own account only; the forbidden one reached nobody.
    assert msgs(await a2.ping()) == [("hello", "1", None, "from-anon")]
    assert await b.ping() == []
    await a2.close()
    await b.close()


@async_test()
async def test_no_auth_user_wrong_credentials_still_refused(server_factory):
    srv = server_factory(NO_AUTH)
    for bad in ({"user": "anon", "pass": "wrong"}, {"user": "b", "pass": "a2-pw"},
                {"user": "ghost", "pass": "x"}, {"auth_token": "whatever"}):
        assert await raw_refused(srv, bad) == AUTH_VIOLATION, bad
    await nats_refused(srv, user="b", password="wrong")
    # Right credentials of another user still pick that user (account B).
    c = await raw_login(srv, user="b", **{"pass": "b-pw"})
    await c.close()


@async_test()
async def test_no_auth_user_without_connect(server_factory):
    """nats-server: with no_auth_user a client may skip CONNECT; verbose then defaults to true."""
    srv = server_factory(NO_AUTH)
    a2 = await raw_login(srv, user="a2", **{"pass": "a2-pw"})
    c = await RawClient.connect(srv, send_connect=False)
    await c.send(b"SUB hello 7\r\nPING\r\n")
    assert await c.readline() == b"+OK"
    assert await c.readline() == b"PONG"
    await a2.send(pub("hello", b"hi"))
    assert await a2.ping() == []
    op = await c.read_op()
    assert op == ("MSG", b"hello", b"7", None, b"hi")
    await c.close()
    await a2.close()


# ==========================================================================
# 4. Authentication timeout and operations before CONNECT
# ==========================================================================

TIMEOUT_CONF = """
authorization { user: a, password: b, timeout: 1 }
"""


@pytest.mark.parametrize("conf,low,high", [("TIMEOUT_CONF", 0.7, 3.0), ("USERS", 1.5, 3.5)],
                         ids=["configured-1s", "default-2s"])
@async_test()
async def test_auth_timeout_closes_silent_client(server_factory, conf, low, high):
    """A client that never sends CONNECT gets 'Authentication Timeout' and the close, after the
    configured timeout (1 s) or nats-server's default (2 s)."""
    srv = server_factory(globals()[conf])
    t0 = time.monotonic()
    c = await RawClient.connect(srv, send_connect=False)
    data = await c.read_until_closed(5)
    elapsed = time.monotonic() - t0
    await c.close()
    assert data == AUTH_TIMEOUT
    assert low <= elapsed <= high, f"closed after {elapsed:.2f}s, expected {low}-{high}s"


@async_test()
async def test_auth_timeout_spares_authenticated_client(server_factory):
    srv = server_factory(TIMEOUT_CONF)
    c = await raw_login(srv, user="a", **{"pass": "b"})
    await asyncio.sleep(1.6)
    assert await c.ping() == []
    await c.close()


@async_test()
async def test_no_auth_timeout_without_auth(server_factory):
    """Without authentication configured, a slow client is not timed out."""
    srv = server_factory("")
    c = await RawClient.connect(srv, send_connect=False)
    assert await c.quiet(2.5) == []
    await c.send(b'CONNECT {"verbose":false}\r\nPING\r\n')
    assert await c.readline() == b"PONG"
    await c.close()


@pytest.mark.parametrize("first", [pub("foo", b"hi"), b"SUB foo 1\r\n", b"PING\r\n"], ids=["PUB", "SUB", "PING"])
@async_test()
async def test_op_before_connect_is_authorization_violation(server_factory, first):
    srv = server_factory(TIMEOUT_CONF)
    c = await RawClient.connect(srv, send_connect=False)
    await c.send(first)
    data = await c.read_until_closed(5)
    await c.close()
    assert data == AUTH_VIOLATION


# ==========================================================================
# 5. Permissions
# ==========================================================================

PERMS = """
authorization {
  users: [
    { user: pub, password: p, permissions: {
        publish: { allow: ["foo.*", "bar.>"], deny: ["foo.secret", "bar.x.>"] } } }
    { user: simple, password: s, permissions: { publish: "only.>", subscribe: ["only.>"] } }
    { user: sub, password: s, permissions: {
        subscribe: { allow: ["a.b", "foo.>"], deny: ["foo.secret"] } } }
    { user: q, password: q, permissions: { subscribe: { allow: ["q.* grp"] } } }
    { user: qd, password: q, permissions: { subscribe: { allow: ["foo"], deny: ["foo v1"] } } }
    { user: watch, password: w }
  ]
}
"""


async def login(srv, user, pw) -> RawClient:
    return await raw_login(srv, user=user, **{"pass": pw})


@async_test()
async def test_publish_allow_deny(server_factory):
    """Forbidden PUBs: one -ERR each, connection up, nothing delivered to another user."""
    srv = server_factory(PERMS)
    watch = await raw_watch(srv, ">", user="watch", **{"pass": "w"})
    p = await login(srv, "pub", "p")
    subjects = ["foo.ok", "foo.secret", "baz", "foo.a.b", "bar.y", "bar.x.y", "bar.x", "foo", "bar.x.y.z"]
    await p.send(b"".join(pub(s, s.encode()) for s in subjects))
    errs = await p.ping()
    assert errs == [pub_denied(s) for s in ("foo.secret", "baz", "foo.a.b", "bar.x.y", "foo", "bar.x.y.z")]
    # Still up: another round trip works.
    assert await p.ping() == []
    got = msgs(await watch.ping())
    assert got == [(s, "1", None, s) for s in ("foo.ok", "bar.y", "bar.x")]
    await p.close()
    await watch.close()


@async_test()
async def test_publish_string_and_list_forms(server_factory):
    srv = server_factory(PERMS)
    watch = await raw_watch(srv, ">", user="watch", **{"pass": "w"})
    c = await login(srv, "simple", "s")
    await c.send(pub("only.one") + pub("other") + pub("only"))
    assert await c.ping() == [pub_denied("other"), pub_denied("only")]
    await c.send(b"SUB only.> 1\r\nSUB other 2\r\n")
    assert await c.ping() == [sub_denied("other")]
    assert msgs(await watch.ping()) == [("only.one", "1", None, "x")]
    await c.close()
    await watch.close()


@async_test()
async def test_nats_py_publish_violation_keeps_connection(server_factory):
    srv = server_factory(PERMS)
    async with Clients(srv) as clients:
        watch = await clients.connect(user="watch", password="w")
        got = []

        async def cb(msg):
            got.append(msg.subject)

        await watch.subscribe(">", cb=cb)
        await sync_subs(watch)
        nc = await clients.connect(user="pub", password="p")
        await nc.publish("foo.secret", b"1")
        await nc.publish("foo.ok", b"2")
        await nc.flush(timeout=5)
        await nc.flush(timeout=5)
        assert nc.is_connected
        await watch.flush(timeout=5)
        assert got == ["foo.ok"]
        assert [str(e) for e in clients.errors] == ['nats: permissions violation for publish to "foo.secret"']


@async_test()
async def test_subscribe_allow_deny_and_wildcard_tricks(server_factory):
    """Only a.b and foo.> (minus foo.secret) may be subscribed; wildcards cannot widen that."""
    srv = server_factory(PERMS)
    c = await login(srv, "sub", "s")
    subs = [(">", 1), ("*.b", 2), ("a.>", 3), ("a.*", 4), ("_INBOX.>", 5), ("_INBOX.x", 6),
            ("a.b", 7), ("foo.>", 8), ("foo.secret", 9), ("foo.*", 10), ("*", 11), ("foo", 12)]
    await c.send(b"".join(f"SUB {s} {sid}\r\n".encode() for s, sid in subs))
    errs = await c.ping()
    assert errs == [sub_denied(s) for s in (">", "*.b", "a.>", "a.*", "_INBOX.>", "_INBOX.x", "foo.secret", "*", "foo")]
    w = await login(srv, "watch", "w")
    sent = ["a.b", "a.c", "b.b", "foo.ok", "foo.secret", "foo.secret.deeper", "x.y", "_INBOX.x", "foo"]
    await w.send(b"".join(pub(s) for s in sent))
    assert await w.ping() == []
    got = sorted((m[0], m[1]) for m in msgs(await c.ping()))
    # foo.> and foo.* overlap the deny foo.secret: accepted, but foo.secret is never delivered.
    assert got == sorted([("a.b", "7"), ("foo.ok", "8"), ("foo.ok", "10"), ("foo.secret.deeper", "8")])
    await c.close()
    await w.close()


@async_test()
async def test_queue_permissions(server_factory):
    srv = server_factory(PERMS)
    c = await login(srv, "q", "q")
    await c.send(b"SUB q.x 3\r\nSUB q.x grp 4\r\nSUB q.x other 5\r\nSUB q.y.z grp 6\r\n")
    errs = await c.ping()
    assert errs == [sub_denied("q.x"), sub_denied("q.x", "other"), sub_denied("q.y.z", "grp")]
    assert errs[0] == (b"-ERR 'Permissions Violation for Subscription to \"q.x\"'",)
    w = await login(srv, "watch", "w")
    await w.send(pub("q.x", b"m"))
    assert await w.ping() == []
    assert msgs(await c.ping()) == [("q.x", "4", None, "m")]

    # Deny of one queue group only.
    d = await login(srv, "qd", "q")
    await d.send(b"SUB foo v1 1\r\nSUB foo v2 2\r\nSUB foo 3\r\n")
    assert await d.ping() == [sub_denied("foo", "v1")]
    await w.send(pub("foo", b"f"))
    assert await w.ping() == []
    assert sorted(m[1] for m in msgs(await d.ping())) == ["2", "3"]
    for x in (c, w, d):
        await x.close()


@async_test()
async def test_verbose_violation_replaces_ok(server_factory):
    """verbose: a refused PUB or SUB gets its -ERR instead of +OK (not both)."""
    srv = server_factory(PERMS)
    c = await RawClient.connect(srv, {"verbose": True, "user": "simple", "pass": "s"})
    assert await c.readline() == b"+OK"  # the CONNECT
    await c.send(pub("other") + pub("only.x") + b"SUB other 1\r\nSUB only.x 2\r\n")
    assert await c.ping() == [pub_denied("other"), (b"+OK",), sub_denied("other"), (b"+OK",)]
    await c.close()


# nats-server's reserved reply prefixes (client.go isReservedReply): service-import
# replies "_R_.", JetStream acks "$JS.ACK.", gateway replies "_GR_.". "$GNR." is not one.
@pytest.mark.parametrize("reply,reserved", [("_R_.abc", True), ("$JS.ACK.x.y", True), ("_GR_.a.b", True),
                                            ("$GNR.a.b", False), ("_R_", False)])
@async_test()
async def test_reserved_reply_subjects_refused(server_factory, reply, reserved):
    """Clients may not publish with replies in the server's reserved namespaces."""
    srv = server_factory(PERMS)
    watch = await raw_watch(srv, ">", user="watch", **{"pass": "w"})
    c = await login(srv, "watch", "w")
    await c.send(pub("foo", b"r", reply=reply))
    if reserved:
        assert await c.ping() == [(f"-ERR 'Permissions Violation for Publish with Reply of \"{reply}\"'".encode(),)]
        assert await watch.ping() == []
    else:
        assert await c.ping() == []
        assert msgs(await watch.ping()) == [("foo", "1", reply, "r")]
    await c.close()
    await watch.close()


ALLOW_RESPONSES = """
authorization {
  users: [
    { user: resp, password: r, permissions: {
        publish: { allow: ["nothing"] }, subscribe: ["svc"], allow_responses: { max: 2 } } }
    { user: resp1, password: r, permissions: { subscribe: ["svc1"], allow_responses: true } }
    { user: req, password: q }
  ]
}
"""


@async_test()
async def test_allow_responses_max(server_factory):
    """A responder may answer a delivered request's reply subject max times, nothing else."""
    srv = server_factory(ALLOW_RESPONSES)
    resp = await login(srv, "resp", "r")
    await resp.send(b"SUB svc 1\r\n")
    assert await resp.ping() == []
    req = await raw_watch(srv, "_INBOX.z", user="req", **{"pass": "q"})
    # Before any request the inbox is not publishable.
    await resp.send(pub("_INBOX.z", b"early"))
    assert await resp.ping() == [pub_denied("_INBOX.z")]
    await req.send(pub("svc", b"hi", reply="_INBOX.z"))
    assert await req.ping() == []
    assert await resp.read_op() == ("MSG", b"svc", b"1", b"_INBOX.z", b"hi")
    await resp.send(pub("_INBOX.z", b"r1") + pub("_INBOX.z", b"r2") + pub("_INBOX.z", b"r3")
                    + pub("_INBOX.other", b"o") + pub("nothing", b"n"))
    assert await resp.ping() == [pub_denied("_INBOX.z"), pub_denied("_INBOX.other")]
    assert msgs(await req.ping()) == [("_INBOX.z", "1", None, "r1"), ("_INBOX.z", "1", None, "r2")]
    await resp.close()
    await req.close()


@async_test()
async def test_allow_responses_true_means_one_reply_and_nothing_else(server_factory):
    srv = server_factory(ALLOW_RESPONSES)
    resp = await login(srv, "resp1", "r")
    await resp.send(b"SUB svc1 1\r\n" + pub("anything"))
    assert await resp.ping() == [pub_denied("anything")]
    req = await raw_watch(srv, "_INBOX.y", user="req", **{"pass": "q"})
    await req.send(pub("svc1", b"q", reply="_INBOX.y"))
    assert await req.ping() == []
    assert await resp.read_op() == ("MSG", b"svc1", b"1", b"_INBOX.y", b"q")
    await resp.send(pub("_INBOX.y", b"a") + pub("_INBOX.y", b"b"))
    assert await resp.ping() == [pub_denied("_INBOX.y")]
    assert msgs(await req.ping()) == [("_INBOX.y", "1", None, "a")]
    await resp.close()
    await req.close()


@async_test()
async def test_allow_responses_with_nats_py_request(server_factory):
    srv = server_factory(ALLOW_RESPONSES)
    async with Clients(srv) as clients:
        responder = await clients.connect(user="resp", password="r")

        async def handler(msg):
            await msg.respond(b"pong:" + msg.data)

        await responder.subscribe("svc", cb=handler)
        await sync_subs(responder)
        requester = await clients.connect(user="req", password="q")
        reply = await requester.request("svc", b"1", timeout=5)
        assert reply.data == b"pong:1"
        assert clients.errors == []


DEFAULT_PERMS_AUTH = """
authorization {
  default_permissions: { publish: { deny: ["forbidden"] } }
  users: [
    { user: d, password: d }
    { user: own, password: o, permissions: { publish: { deny: ["own.secret"] } } }
    { user: watch, password: w, permissions: { publish: "nothing" } }
  ]
}
"""

DEFAULT_PERMS_ACCOUNT = """
accounts {
  A: {
    default_permissions: { publish: { deny: ["forbidden"] } }
    users: [
      { user: d, password: d }
      { user: own, password: o, permissions: { publish: { deny: ["own.secret"] } } }
      { user: watch, password: w, permissions: { publish: "nothing" } }
    ]
  }
}
"""


@pytest.mark.parametrize("config", [DEFAULT_PERMS_AUTH, DEFAULT_PERMS_ACCOUNT], ids=["authorization", "account"])
@async_test()
async def test_default_permissions(server_factory, config):
    """Defaults apply to users without their own permissions; own permissions replace them."""
    srv = server_factory(config)
    watch = await raw_watch(srv, ">", user="watch", **{"pass": "w"})
    d = await login(srv, "d", "d")
    await d.send(pub("forbidden", b"d1") + pub("fine", b"d2"))
    assert await d.ping() == [pub_denied("forbidden")]
    own = await login(srv, "own", "o")
    await own.send(pub("forbidden", b"o1") + pub("own.secret", b"o2"))
    assert await own.ping() == [pub_denied("own.secret")]
    # watch's own permissions (publish "nothing") replace the defaults too.
    await watch.send(pub("fine", b"w"))
    assert await watch.ping() == [("MSG", b"fine", b"1", None, b"d2"),
                                  ("MSG", b"forbidden", b"1", None, b"o1"),
                                  pub_denied("fine")]
    for x in (watch, d, own):
        await x.close()


# ==========================================================================
# 6. Accounts
# ==========================================================================

TWO_ACCOUNTS = """
accounts {
  A: { users: [ { user: a1, password: a1 }, { user: a2, password: a2 } ] }
  B: { users: [ { user: b1, password: b1 } ] }
}
"""


@async_test()
async def test_accounts_are_isolated(server_factory):
    srv = server_factory(TWO_ACCOUNTS)
    b_watch = await raw_watch(srv, ">", user="b1", **{"pass": "b1"})
    async with Clients(srv) as clients:
        a1 = await clients.connect(user="a1", password="a1")
        b1 = await clients.connect(user="b1", password="b1")

        async def echo(msg):
            await msg.respond(b"from-b")

        # A service in B ...
        svc = await b1.subscribe("svc.echo", cb=echo)
        await sync_subs(b1)
        assert (await b1.request("svc.echo", b"?", timeout=5)).data == b"from-b"
        assert [m[0] for m in msgs(await b_watch.ping())][:1] == ["svc.echo"]
        # ... is invisible from A: no responders there.
        with pytest.raises(nats.errors.NoRespondersError):
            await a1.request("svc.echo", b"?", timeout=5)
        a_watch = await raw_watch(srv, ">", user="a2", **{"pass": "a2"})
        await a1.publish("news", b"for-A")
        await a1.flush(timeout=5)
        await svc.unsubscribe()
        await sync_subs(b1)
    assert msgs(await a_watch.ping()) == [("news", "1", None, "for-A")]
    # B's wildcard subscriber saw none of A's traffic.
    assert await b_watch.ping() == []
    await a_watch.close()
    await b_watch.close()


EXPORTS = """
accounts {
  A: {
    users: [ { user: a, password: a } ]
    exports: [ { stream: "events.>" }, { service: "svc.>" } ]
  }
  B: {
    users: [ { user: b, password: b } ]
    imports: [
      { stream: { account: A, subject: "events.>" }, prefix: "pfx" }
      { service: { account: A, subject: "svc.>" }, to: "asvc.>" }
    ]
  }
  C: {
    users: [ { user: c, password: c } ]
    imports: [ { stream: { account: A, subject: "events.x" }, to: "mapped.x" } ]
  }
}
"""


@async_test()
async def test_stream_import_prefix_and_to(server_factory):
    srv = server_factory(EXPORTS)
    b = await raw_watch(srv, ">", user="b", **{"pass": "b"})
    c = await raw_watch(srv, ">", user="c", **{"pass": "c"})
    a = await login(srv, "a", "a")
    await a.send(pub("events.x", b"e1") + pub("events.y.z", b"e2") + pub("other.x", b"o"))
    assert await a.ping() == []
    assert msgs(await b.ping()) == [("pfx.events.x", "1", None, "e1"), ("pfx.events.y.z", "1", None, "e2")]
    assert msgs(await c.ping()) == [("mapped.x", "1", None, "e1")]
    # Nothing flows back from importer to exporter.
    aw = await raw_watch(srv, ">", user="a", **{"pass": "a"})
    await b.send(pub("events.x", b"from-b") + pub("pfx.events.x", b"from-b"))
    # (b's own '>' subscription sees its own two messages, under their own names.)
    assert msgs(await b.ping()) == [("events.x", "1", None, "from-b"), ("pfx.events.x", "1", None, "from-b")]
    assert await aw.ping() == []
    for x in (a, b, c, aw):
        await x.close()


@async_test()
async def test_service_import_request_reply(server_factory):
    """B requests asvc.foo; A's responder sees svc.foo with an _R_. reply; the answer comes back."""
    srv = server_factory(EXPORTS)
    # Without header support, so that the request arrives as a plain MSG (nats-server
    # would otherwise add its own Nats-Request-Info header).
    a = await raw_login(srv, user="a", headers=False, no_responders=False, **{"pass": "a"})
    await a.send(b"SUB svc.> 1\r\n")
    assert await a.ping() == []
    b = await raw_watch(srv, "_INBOX.r", user="b", **{"pass": "b"})
    await b.send(pub("asvc.foo", b"req", reply="_INBOX.r"))
    assert await b.ping() == []
    op = await a.read_op()
    assert op[:3] == ("MSG", b"svc.foo", b"1") and op[4] == b"req", op
    reply = op[3].decode()
    assert re.fullmatch(r"_R_\.[0-9A-Za-z]{6}\.[0-9A-Za-z]{6}", reply), reply
    # Singleton response: only the first reply is delivered.
    await a.send(pub(reply, b"resp1") + pub(reply, b"resp2"))
    assert await a.ping() == []
    assert msgs(await b.ping()) == [("_INBOX.r", "1", None, "resp1")]
    # The exporter's own subject name means nothing in B: no responders (status 503).
    await b.send(pub("svc.foo", b"direct", reply="_INBOX.r"))
    # (nats-server 2.9 sends a bare 503; since 2.10 it adds the subject as Nats-Subject.)
    assert await b.ping() in ([("HMSG", b"_INBOX.r", b"1", None, b"NATS/1.0 503\r\n\r\n", b"")],
                              [("HMSG", b"_INBOX.r", b"1", None, b"NATS/1.0 503\r\nNats-Subject: svc.foo\r\n\r\n", b"")])
    assert await a.quiet(0.3) == []
    await a.close()
    await b.close()


@async_test()
async def test_service_import_with_nats_py(server_factory):
    srv = server_factory(EXPORTS)
    async with Clients(srv) as clients:
        a = await clients.connect(user="a", password="a")
        seen = []

        async def handler(msg):
            seen.append(msg.subject)
            await msg.respond(b"A says " + msg.data)

        await a.subscribe("svc.>", cb=handler)
        await sync_subs(a)
        b = await clients.connect(user="b", password="b")
        reply = await b.request("asvc.ping", b"hello", timeout=5)
        assert reply.data == b"A says hello"
        assert seen == ["svc.ping"]
        with pytest.raises(nats.errors.NoRespondersError):
            await b.request("svc.ping", b"hello", timeout=5)
        c = await clients.connect(user="c", password="c")
        with pytest.raises(nats.errors.NoRespondersError):
            await c.request("asvc.ping", b"hello", timeout=5)


NO_EXPORT = """
accounts {
  A: { users: [ { user: a, password: a } ], exports: [ { stream: "events.>" } ] }
  B: { users: [ { user: b, password: b } ],
       imports: [ { stream: { account: A, subject: "private.>" } },
                  { service: { account: A, subject: "hidden" } } ] }
}
"""


def test_import_without_export_refuses_to_start(tmp_path):
    """An import no export authorizes is a configuration error: the server does not start (as
    nats-server: 'stream import not authorized'), rather than run with a bridge it cannot have."""
    import subprocess
    from conftest import BIN

    conf = tmp_path / "no-export.conf"
    conf.write_text("listen: 127.0.0.1:-1\n" + NO_EXPORT)
    args = [BIN, "-c", str(conf)]
    if not IS_NATS_SERVER:
        args += ["-m", "0", "--mqtt-port", "0", "--ws-port", "0", "--in-memory"]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("the server started with an import no export allows")
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "not authorized" in out, out
    assert "private.>" in out, out


GLOBAL_AND_ACCOUNTS = """
authorization { users: [ { user: g, password: g }, { user: g2, password: g2 } ] }
accounts { A: { users: [ { user: a, password: a } ] } }
"""


@async_test()
async def test_authorization_users_live_in_global_account(server_factory):
    srv = server_factory(GLOBAL_AND_ACCOUNTS)
    g2 = await raw_watch(srv, ">", user="g2", **{"pass": "g2"})
    a = await raw_watch(srv, ">", user="a", **{"pass": "a"})
    g = await login(srv, "g", "g")
    await g.send(pub("hello", b"from-g"))
    assert await g.ping() == []
    await a.send(pub("hello", b"from-a"))
    assert await a.ping() == [("MSG", b"hello", b"1", None, b"from-a")]
    assert await g2.ping() == [("MSG", b"hello", b"1", None, b"from-g")]
    for x in (g, g2, a):
        await x.close()
