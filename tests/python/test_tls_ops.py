"""TLS beyond the client listeners: the HTTPS monitoring port (`https_port` with the top-level
`tls` block, as nats-server serves it) and certificates reloaded on SIGHUP without a restart.

Fixtures: tests/fixtures/tls (see its README)."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import IS_NATS_SERVER

TLS = Path(__file__).resolve().parents[1] / "fixtures" / "tls"

pytestmark = pytest.mark.skipif(IS_NATS_SERVER, reason="Junction's own listeners and flags")


def https_port(srv) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        m = re.search(r"Starting https monitor on https://[0-9.]+:(\d+)", srv.log_text())
        if m:
            return int(m.group(1))
        time.sleep(0.05)
    pytest.fail("no https monitor in the log:\n" + srv.log_text())


def tls_config(cert: Path, key: Path) -> str:
    return f"""
tls {{ cert_file: "{cert}", key_file: "{key}" }}
https_port: -1
"""


def served_certificate(port: int, nats: bool = False) -> bytes:
    """The DER certificate the server presents on `port` (not verified: only compared). On
    the NATS port the INFO line comes in the clear first."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        if nats:
            info = b""
            while not info.endswith(b"\r\n"):
                chunk = raw.recv(1)
                assert chunk, "closed before INFO"
                info += chunk
            assert info.startswith(b"INFO ") and b'"tls_required":true' in info, info
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.getpeercert(binary_form=True)


def pem_to_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_https_monitor_serves_varz_with_the_tls_certificate(server_factory):
    srv = server_factory(tls_config(TLS / "server.pem", TLS / "server-key.pem"))
    port = https_port(srv)
    ctx = ssl.create_default_context(cafile=str(TLS / "ca.pem"))
    with urllib.request.urlopen(f"https://localhost:{port}/varz", context=ctx, timeout=5) as r:
        varz = json.load(r)
    assert varz["port"] == srv.port
    # Plain HTTP to the HTTPS port gets no HTTP answer (a TLS alert, then the close).
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/varz", timeout=3).read()
    # A client that does not trust the CA refuses the server.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"https://localhost:{port}/varz", context=ssl.create_default_context(), timeout=5)


def test_https_port_without_tls_is_a_startup_error(tmp_path):
    import subprocess

    from conftest import BIN

    conf = tmp_path / "bad.conf"
    conf.write_text("https_port: -1\n")
    done = subprocess.run([BIN, "-c", str(conf), "-p", "-1", "--in-memory"], capture_output=True, text=True, timeout=10)
    assert done.returncode != 0
    assert "tls" in (done.stdout + done.stderr)


def test_sighup_reloads_certificates_for_new_connections(server_factory, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(TLS / "server.pem", cert)
    shutil.copy(TLS / "server-key.pem", key)
    srv = server_factory(tls_config(cert, key))
    port = https_port(srv)
    assert served_certificate(srv.port, nats=True) == pem_to_der(TLS / "server.pem")
    assert served_certificate(port) == pem_to_der(TLS / "server.pem")

    # A broken file: the reload fails, says so, and the old certificate stays.
    cert.write_text("not a certificate")
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "reloading the client TLS certificate failed" not in srv.log_text():
        assert time.monotonic() < deadline, srv.log_text()
        time.sleep(0.05)
    assert served_certificate(srv.port, nats=True) == pem_to_der(TLS / "server.pem")

    # Another certificate: new connections get it, on the client port and the HTTPS monitor.
    shutil.copy(TLS / "client2.pem", cert)
    shutil.copy(TLS / "client2-key.pem", key)
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while srv.log_text().count("reloaded the client TLS certificate") < 1:
        assert time.monotonic() < deadline, srv.log_text()
        time.sleep(0.05)
    assert served_certificate(srv.port, nats=True) == pem_to_der(TLS / "client2.pem")
    assert served_certificate(port) == pem_to_der(TLS / "client2.pem")
    assert srv.proc.poll() is None, "SIGHUP must not stop the server"
