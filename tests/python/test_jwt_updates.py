"""Account JWT updates while the server runs, through the system account, as `nsc push` and
`nsc delete` send them to a full resolver: `$SYS.REQ.CLAIMS.UPDATE` (and the per-account
subjects), `LOOKUP`, `LIST` and `DELETE`. An update is applied before it is answered:
JetStream, mappings and revocations hold at once for connections already open.

Every expectation here is nats-server 2.9.10's and passes against it too (one case, an account
JWT its own account signed, is refused only by Junction):

    JUNCTION_BIN=/usr/sbin/nats-server JUNCTION_EXPECT_EXIT=1 \\
        .venv/bin/python -m pytest tests/python/test_jwt_updates.py
"""

from __future__ import annotations

import asyncio
import json
import time

import nats
import nats.errors
import nkeys
import pytest
from nats.js.errors import APIError

from conftest import EXPECT_EXIT, IS_NATS_SERVER, Clients, async_test, sync_subs, wait_until
from jwt_helpers import JWT_DIR, KEYS, account_claims, creds_key, operator_config, sign, user_creds

A = KEYS["accounts"]["A"]["public"]
B = KEYS["accounts"]["B"]["public"]
SYS = KEYS["accounts"]["SYS"]["public"]
X = KEYS["unregistered_keys"]["X"]["public"]  # an account key the operator does not know
OP = KEYS["operator"]
UPDATE = "$SYS.REQ.CLAIMS.UPDATE"


def account_jwt(name: str = "A", seed: str | None = None, **nats_claims) -> str:
    """Fixture account ``name``'s JWT, issued now with ``nats_claims`` set, signed by the
    operator (or ``seed``)."""
    claims = account_claims(name)
    claims["nats"].update(nats_claims)
    return sign(claims, seed or OP["seed"])


def with_js(**limits) -> dict:
    return dict(account_claims("A")["nats"]["limits"], disk_storage=-1, mem_storage=-1, **limits)


def delete_request(*accounts: str, seed: str = OP["seed"]) -> str:
    """A generic JWT listing ``accounts``, signed (for itself) by ``seed``'s key."""
    key = nkeys.from_seed(seed.encode()).public_key.decode()
    return sign({"iat": int(time.time()), "sub": key,
                 "nats": {"accounts": list(accounts), "type": "generic", "version": 2}}, seed)


async def system_request(sysc, subject: str, body: str) -> dict:
    reply = json.loads((await sysc.request(subject, body.encode(), timeout=5)).data)
    assert reply["server"]["id"]
    return {k: v for k, v in reply.items() if k != "server"}


def updated(account: str) -> dict:
    return {"data": {"account": account, "code": 200, "message": "jwt updated"}}


def failed(account: str, description: str) -> dict:
    return {"error": {"account": account, "code": 500, "description": description}}


def start(server_factory, tmp_path, allow_delete: bool = False):
    config = operator_config(tmp_path, {}, extra=f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n')
    if allow_delete:
        config = config.replace("allow_delete: false", "allow_delete: true")
    return server_factory(config=config)


@async_test(timeout=60)
async def test_an_account_jwt_update_applies_at_once(server_factory, tmp_path):
    srv = start(server_factory, tmp_path)
    async with Clients(srv) as c:
        sysc = await c.connect(user_credentials=str(JWT_DIR / "sys.creds"))
        a1 = await c.connect(user_credentials=user_creds(tmp_path, "A", "a1"))
        a2_creds = user_creds(tmp_path, "A", "a2")
        a2 = await c.connect(user_credentials=a2_creds)
        a2_key = creds_key(a2_creds)
        js = a1.jetstream()
        with pytest.raises(APIError) as e:
            await js.account_info()
        assert e.value.err_code == 10039

        # JetStream, a mapping and a revocation of a2, in one update.
        token = account_jwt(limits=with_js(), mappings={"old": [{"subject": "new"}]},
                            revocations={a2_key: int(time.time())})
        assert await system_request(sysc, UPDATE, token) == updated(A)
        assert (tmp_path / "dr" / f"{A}.jwt").read_text().strip() == token

        info = await js.account_info()
        assert (info.limits.max_storage, info.limits.max_memory) == (-1, -1)
        got = []

        async def on_new(m):
            got.append(m.data)

        sub = await a1.subscribe("new", cb=on_new)
        await sync_subs(a1)
        await a1.publish("old", b"mapped")
        await wait_until(lambda: got == [b"mapped"], what="the mapped publication")
        await wait_until(lambda: a2.is_closed, what="the revoked user closed")
        await sub.unsubscribe()

        # LOOKUP answers the JWT itself; LIST names the accounts the directory holds.
        looked = await sysc.request(f"$SYS.REQ.ACCOUNT.{A}.CLAIMS.LOOKUP", b"", timeout=5)
        assert looked.data.decode() == token
        listed = await system_request(sysc, "$SYS.REQ.CLAIMS.LIST", "")
        assert A in listed["data"] and B in listed["data"] and SYS in listed["data"]

        # JetStream taken away and given back: the stream is still there.
        await js.add_stream(name="KEEP", subjects=["keep"])
        await js.publish("keep", b"1")
        assert await system_request(sysc, f"$SYS.REQ.ACCOUNT.{A}.CLAIMS.UPDATE",
                                    account_jwt(limits=with_js(), iat=1)) == updated(A)
        assert await system_request(sysc, UPDATE, account_jwt()) == updated(A)
        with pytest.raises(APIError) as e:
            await js.account_info()
        assert e.value.err_code == 10039
        # The older subject form works as well.
        assert await system_request(sysc, f"$SYS.ACCOUNT.{A}.CLAIMS.UPDATE",
                                    account_jwt(limits=with_js())) == updated(A)
        assert (await js.stream_info("KEEP")).state.messages == 1
        await js.publish("keep", b"2")
        assert (await js.stream_info("KEEP")).state.messages == 2
        assert not a1.is_closed


@async_test(timeout=60)
async def test_bad_account_jwt_updates_are_refused(server_factory, tmp_path):
    srv = start(server_factory, tmp_path)
    async with Clients(srv) as c:
        sysc = await c.connect(user_credentials=str(JWT_DIR / "sys.creds"))
        before = (tmp_path / "dr" / f"{A}.jwt").read_text()

        r = await system_request(sysc, UPDATE, "not a jwt")
        assert r["error"]["account"] == "n/a" and r["error"]["code"] == 500
        assert r["error"]["description"].startswith("jwt update resulted in error - ")
        assert await system_request(sysc, f"$SYS.REQ.ACCOUNT.{B}.CLAIMS.UPDATE", account_jwt()) == failed(
            B, "jwt update resulted in error - subject does not match jwt content")
        user_jwt = (JWT_DIR / "alice.jwt").read_text().strip()
        assert await system_request(sysc, UPDATE, user_jwt) == failed(
            "n/a", "jwt update resulted in error - not account claim")
        r = await system_request(sysc, UPDATE, account_jwt(
            mappings={"w": [{"subject": "x", "weight": 150}]}))
        assert r["error"]["account"] == A
        assert r["error"]["description"].startswith("jwt validation failed - ")
        if not IS_NATS_SERVER:
            # Signed by an account instead of the operator: nats-server 2.9.10 writes it (the
            # account then refuses its users); Junction refuses it.
            r = await system_request(sysc, UPDATE, account_jwt(seed=KEYS["accounts"]["B"]["seed"]))
            assert r["error"]["description"].startswith("jwt update resulted in error - ")
        assert (tmp_path / "dr" / f"{A}.jwt").read_text() == before

        # A lookup of an account the directory does not hold gets no answer.
        with pytest.raises(nats.errors.TimeoutError):
            await sysc.request(f"$SYS.REQ.ACCOUNT.{X}.CLAIMS.LOOKUP", b"", timeout=0.5)

        # Only the system account reaches these subjects.
        a = await c.connect(user_credentials=user_creds(tmp_path, "A"))
        with pytest.raises(nats.errors.NoRespondersError):
            await a.request(UPDATE, account_jwt(limits=with_js()).encode(), timeout=2)


@async_test(timeout=60)
async def test_accounts_are_deleted_only_when_allowed(server_factory, tmp_path):
    srv = start(server_factory, tmp_path / "no")
    async with Clients(srv) as c:
        sysc = await c.connect(user_credentials=str(JWT_DIR / "sys.creds"))
        assert await system_request(sysc, "$SYS.REQ.CLAIMS.DELETE", delete_request(A)) == {"error": {
            "code": 500, "description": f"delete accounts request by {OP['public']} failed - "
                                        "delete must be enabled in server config"}}

    srv = start(server_factory, tmp_path / "yes", allow_delete=True)
    async with Clients(srv) as c:
        sysc = await c.connect(user_credentials=str(JWT_DIR / "sys.creds"))
        a = await c.connect(user_credentials=user_creds(tmp_path, "A"))
        refused = {
            delete_request(SYS): "not allowed to delete system account",
            delete_request("not-a-key"): "malformed request",
        }
        for token, why in refused.items():
            assert await system_request(sysc, "$SYS.REQ.CLAIMS.DELETE", token) == {"error": {
                "code": 500, "description": f"delete accounts request by {OP['public']} failed - {why}"}}
        # Signed by someone other than the operator (for itself).
        r = await system_request(sysc, "$SYS.REQ.CLAIMS.DELETE",
                                 delete_request(A, seed=KEYS["accounts"]["B"]["seed"]))
        assert r["error"]["code"] == 500 and "failed" in r["error"]["description"], r
        assert not a.is_closed

        assert await system_request(sysc, "$SYS.REQ.CLAIMS.DELETE", delete_request(A)) == {
            "data": {"code": 200, "message": "deleted 1 accounts"}}
        await wait_until(lambda: a.is_closed, what="the deleted account's user closed")
        dr = tmp_path / "yes" / "dr"
        assert not (dr / f"{A}.jwt").exists() and (dr / f"{A}.jwt.deleted").exists()
        assert A not in (await system_request(sysc, "$SYS.REQ.CLAIMS.LIST", ""))["data"]
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await c.connect(user_credentials=user_creds(tmp_path, "A", "late"))


@async_test(timeout=60)
async def test_stored_streams_wait_for_their_account_to_have_jetstream(server_factory, tmp_path):
    """An account that lost JetStream keeps its streams through a restart: they come back
    when an update gives it JetStream again."""
    config = operator_config(tmp_path, {"A": lambda c: c["nats"].__setitem__("limits", with_js())},
                             extra=f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n')
    first = server_factory(config=config)
    async with Clients(first) as c:
        sysc = await c.connect(user_credentials=str(JWT_DIR / "sys.creds"))
        js = (await c.connect(user_credentials=user_creds(tmp_path, "A"))).jetstream()
        await js.add_stream(name="KEEP", subjects=["keep"])
        for i in range(3):
            await js.publish("keep", str(i).encode())
        await js.add_consumer("KEEP", durable_name="reader")
        assert await system_request(sysc, UPDATE, account_jwt()) == updated(A)
    assert first.terminate() == EXPECT_EXIT

    second = server_factory(config=config)
    async with Clients(second) as c:
        sysc = await c.connect(user_credentials=str(JWT_DIR / "sys.creds"))
        js = (await c.connect(user_credentials=user_creds(tmp_path, "A"))).jetstream()
        with pytest.raises(APIError) as e:
            await js.account_info()
        assert e.value.err_code == 10039
        assert await system_request(sysc, UPDATE, account_jwt(limits=with_js())) == updated(A)
        info = await js.stream_info("KEEP")
        assert (info.state.messages, info.state.last_seq) == (3, 3)
        assert (await js.consumer_info("KEEP", "reader")).num_pending == 3
        await js.publish("keep", b"3")
        assert (await js.stream_info("KEEP")).state.messages == 4
