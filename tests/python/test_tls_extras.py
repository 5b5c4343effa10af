"""TLS options as nats-server 2.10 offers them (issue 12): `pinned_certs`, `cipher_suites`,
`curve_preferences` (with a clear startup error for what rustls cannot do), and
`handshake_first` with a fallback delay, over real sockets with Python's ssl module."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time

import pytest

from conftest import BIN, IS_NATS_SERVER, async_test
from test_auth_mqtt_tls import CA, TLS, client_ctx, nats_tls_outcome, raw_nats_tls

pytestmark = pytest.mark.skipif(IS_NATS_SERVER, reason="Junction's TLS options")

HOST = "127.0.0.1"


def spki_sha256(cert: str) -> str:
    """What nats-server pins: SHA-256 of the certificate's SubjectPublicKeyInfo, hex."""
    pub = subprocess.run(["openssl", "x509", "-in", str(TLS / f"{cert}.pem"), "-pubkey", "-noout"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         check=True, capture_output=True).stdout
    import hashlib
    return hashlib.sha256(der).hexdigest()


def tls_conf(*extra: str) -> str:
    lines = [f'cert_file: "{TLS / "server.pem"}"', f'key_file: "{TLS / "server-key.pem"}"',
             f'ca_file: "{CA}"', "timeout: 2", *extra]
    return "tls {\n  " + "\n  ".join(lines) + "\n}\n"


@async_test()
async def test_pinned_certs_accept_only_the_pinned_key(server_factory):
    pin = spki_sha256("client")
    srv = server_factory(tls_conf("verify: true", f'pinned_certs: ["{pin}"]'))
    assert (await nats_tls_outcome(srv.port, client_ctx("client")))[0] == "ok"
    outcome, detail = await nats_tls_outcome(srv.port, client_ctx("client2"))
    assert outcome in ("tls-error", "closed"), (outcome, detail)
    deadline = time.monotonic() + 5
    while "certificate not pinned" not in srv.log_text():
        assert time.monotonic() < deadline, srv.log_text()
        await asyncio.sleep(0.05)


@async_test()
async def test_cipher_suites_limit_what_clients_may_use(server_factory):
    srv = server_factory(tls_conf('cipher_suites: ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]'))

    def ctx12(ciphers: str) -> ssl.SSLContext:
        c = client_ctx()
        c.maximum_version = ssl.TLSVersion.TLSv1_2
        c.set_ciphers(ciphers)
        return c

    assert (await nats_tls_outcome(srv.port, ctx12("ECDHE-ECDSA-AES256-GCM-SHA384")))[0] == "ok"
    outcome, _ = await nats_tls_outcome(srv.port, ctx12("ECDHE-ECDSA-AES128-GCM-SHA256"))
    assert outcome == "tls-error"
    # No TLS 1.3 suite was allowed: a TLS 1.3-only client cannot connect either.
    c13 = client_ctx()
    c13.minimum_version = ssl.TLSVersion.TLSv1_3
    outcome, _ = await nats_tls_outcome(srv.port, c13)
    assert outcome == "tls-error"


@async_test()
async def test_curve_preferences_limit_key_exchange(server_factory):
    srv = server_factory(tls_conf('curve_preferences: ["CurveP384"]'))

    def ctx(curve: str) -> ssl.SSLContext:
        c = client_ctx()
        c.set_ecdh_curve(curve)
        return c

    assert (await nats_tls_outcome(srv.port, ctx("secp384r1")))[0] == "ok"
    outcome, _ = await nats_tls_outcome(srv.port, ctx("prime256v1"))
    assert outcome == "tls-error"


@pytest.mark.parametrize("extra,named", [
    ('cipher_suites: ["TLS_RSA_WITH_RC4_128_SHA"]', "TLS_RSA_WITH_RC4_128_SHA"),
    ('curve_preferences: ["CurveP521"]', "CurveP521"),
    ('pinned_certs: ["abc"]', "abc"),
])
def test_what_rustls_cannot_do_is_a_startup_error(tmp_path, extra, named):
    conf = tmp_path / "t.conf"
    conf.write_text(tls_conf("verify: true", extra))
    r = subprocess.run([BIN, "-c", str(conf), "-a", HOST, "-p", "-1", "-m", "0", "--mqtt-port", "0",
                        "--ws-port", "0", "--in-memory"], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert named in r.stderr, r.stderr


@async_test()
async def test_handshake_first_with_a_fallback_delay(server_factory):
    srv = server_factory(tls_conf('handshake_first: "300ms"'))
    # A client that starts TLS at once gets TLS first.
    c = await raw_nats_tls(srv.port, client_ctx(), handshake_first=True)
    await c.send(b"PING\r\n")
    c.writer.close()
    # A client that waits for INFO gets it after the delay, in the clear, then does TLS.
    started = time.monotonic()
    c = await raw_nats_tls(srv.port, client_ctx(), handshake_first=False)
    waited = time.monotonic() - started
    assert waited >= 0.25, waited
    await c.send(b"PING\r\n")
    c.writer.close()
    # Without a delay (handshake_first: true) such a client gets nothing in the clear.
    srv2 = server_factory(tls_conf("handshake_first: true"))
    s = socket.create_connection((HOST, srv2.port), timeout=5)
    s.settimeout(0.6)
    with pytest.raises(socket.timeout):
        s.recv(1)
    s.close()
