"""nats.js, unmodified (the ``nats`` npm package, pinned in tests/node/package.json), against
JetStream: ``tests/node/jetstream.mjs`` runs what a Node application does (streams and their
errors, PubAck headers, pull consumers with fetch / next / consume, push and ordered consumers,
key-value with watch and history, a 3 MB object) and checks every answer; each step here runs on
a fresh server, so the steps cannot lean on one another.

The same steps pass against nats-server 2.9.10 (``JUNCTION_BIN=/usr/sbin/nats-server``). The
packages are installed by ./scripts/test (``cd tests/node && npm ci``); missing, the test fails
rather than skips, so CI cannot pass without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest


NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SCRIPT = NODE_DIR / "jetstream.mjs"
STEPS = ["account", "streams", "pull", "ordered", "push", "kv", "objects"]


def _prerequisites() -> None:
    problems = []
    if shutil.which("node") is None:
        problems.append("node is not installed")
    if not (NODE_DIR / "node_modules" / "nats").is_dir():
        problems.append("tests/node/node_modules/nats is missing (cd tests/node && npm ci)")
    if problems:
        pytest.fail("nats.js test prerequisites: " + "; ".join(problems) + " -- ./scripts/test installs them")


def js_args(tmp_path) -> list:
    store = tmp_path / "js"
    store.mkdir(exist_ok=True)
    return ["-js", "-sd", str(store)]


def test_the_scenario_lists_every_step():
    # The steps this file runs are the script's: a step added there runs here too.
    text = SCRIPT.read_text()
    body = text[text.index("const steps = {"):text.index("\nlet nc;")]
    named = [line.strip().split("(")[0].removeprefix("async ") for line in body.splitlines() if line.startswith("  async ")]
    assert named == STEPS


@pytest.mark.parametrize("step", STEPS)
def test_natsjs_jetstream(server_factory, tmp_path, step):
    _prerequisites()
    srv = server_factory(args=js_args(tmp_path))
    run = subprocess.run(
        ["node", str(SCRIPT), "--port", str(srv.port), "--step", step],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=90,
    )
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    report = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert run.returncode == 0, report
    assert [line.get("step") for line in lines[:-1]] == [step], report
    assert lines[0]["ok"] is True and lines[-1] == {"done": True}, report
