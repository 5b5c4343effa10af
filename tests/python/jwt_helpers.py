"""Operator-mode set-ups from the JWT fixtures (tests/fixtures/jwt), with account JWTs signed
again by the fixture operator after a test edits their claims, and creds of fresh users."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import nkeys

JWT_DIR = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "jwt"
KEYS = json.loads((JWT_DIR / "keys.json").read_text())


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def sign(claims: dict, seed: str) -> str:
    """An ed25519-nkey JWT of ``claims`` signed by ``seed`` (its public key as the issuer)."""
    key = nkeys.from_seed(seed.encode())
    claims = dict(claims, iss=key.public_key.decode(), jti="")
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest()).decode().rstrip("=")
    head = _b64u(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}, separators=(",", ":")).encode())
    body = _b64u(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{body}." + _b64u(key.sign(f"{head}.{body}".encode()))


def account_claims(name: str) -> dict:
    """The claims of fixture account ``name`` (A, B, ...), issued now."""
    token = (JWT_DIR / f"{name}.jwt").read_text().strip()
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    claims["iat"] = int(time.time())
    return claims


def operator_config(tmp_path: Path, edits: dict[str, Callable[[dict], None]], extra: str = "") -> str:
    """A full dir-resolver configuration of the fixture operator where each account named in
    ``edits`` has its JWT's claims changed by its function and signed again."""
    resolver = tmp_path / "dr"
    shutil.copytree(JWT_DIR / "dir-resolver", resolver, dirs_exist_ok=True)
    for name, edit in edits.items():
        claims = account_claims(name)
        edit(claims)
        (resolver / f"{KEYS['accounts'][name]['public']}.jwt").write_text(
            sign(claims, KEYS["operator"]["seed"]))
    return (f'operator: "{JWT_DIR / "op.jwt"}"\n'
            f'system_account: {KEYS["accounts"]["SYS"]["public"]}\n'
            f'resolver: {{ type: full, dir: "{resolver}", allow_delete: false, interval: "2m" }}\n'
            + extra)


def user_creds(tmp_path: Path, account: str, name: str = "user") -> str:
    """The creds file of a new user of fixture account ``account``, without limits."""
    user = nkeys.from_seed(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    claims = {"iat": int(time.time()), "name": name, "sub": user.public_key.decode(),
              "nats": {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                       "type": "user", "version": 2}}
    creds = tmp_path / f"{account}-{name}.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n" + sign(claims, KEYS["accounts"][account]["seed"])
                     + "\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n"
                     + user.seed.decode() + "\n------END USER NKEY SEED------\n")
    return str(creds)


def creds_key(creds: str) -> str:
    """The public key of the user of a creds file."""
    token = Path(creds).read_text().split("\n")[1]
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["sub"]
