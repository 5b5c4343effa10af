"""nats.js, unmodified, against JetStream, in both of its generations (pinned in
tests/node/package.json): ``tests/node/jetstream.mjs`` with v2 (the ``nats`` package) and
``tests/node/jetstream-v3.mjs`` with v3 (``@nats-io/transport-node``, ``@nats-io/jetstream``,
``@nats-io/kv``, ``@nats-io/obj``). Each runs what a Node application does (streams and their
errors, PubAck headers, pull consumers with fetch / next / consume, push and ordered consumers,
key-value with watch and history, a 3 MB object) and checks every answer; each step here runs on
a fresh server, so the steps cannot lean on one another.

The same steps pass against nats-server 2.9.10 (``JUNCTION_BIN=/usr/sbin/nats-server``), but for
v3's ordered consumers, which ask for nats-server 2.10 (the client refuses 2.9 itself). The
packages are installed by ./scripts/test (``cd tests/node && npm ci``); missing, the test fails
rather than skips, so CI cannot pass without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import IS_NATS_SERVER


NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SCRIPTS = ["jetstream.mjs", "jetstream-v3.mjs"]
STEPS = ["account", "streams", "pull", "ordered", "push", "kv", "objects"]
# v3's ordered consumers send filter_subjects, which the client allows from nats-server 2.10 on.
NEEDS_2_10 = {("jetstream-v3.mjs", "ordered"), ("jetstream-v3.mjs", "push")}


def _prerequisites() -> None:
    problems = []
    if shutil.which("node") is None:
        problems.append("node is not installed")
    for pkg in ("nats", "@nats-io/jetstream", "@nats-io/kv", "@nats-io/obj", "@nats-io/transport-node"):
        if not (NODE_DIR / "node_modules" / pkg).is_dir():
            problems.append(f"tests/node/node_modules/{pkg} is missing (cd tests/node && npm ci)")
    if problems:
        pytest.fail("nats.js test prerequisites: " + "; ".join(problems) + " -- ./scripts/test installs them")


def js_args(tmp_path) -> list:
    store = tmp_path / "js"
    store.mkdir(exist_ok=True)
    return ["-js", "-sd", str(store)]


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_scenario_lists_every_step(script):
    # The steps this file runs are the script's: a step added there runs here too.
    text = (NODE_DIR / script).read_text()
    body = text[text.index("const steps = {"):text.index("\n};\n")]
    named = [line.strip().split("(")[0].removeprefix("async ") for line in body.splitlines() if line.startswith("  async ")]
    assert named == STEPS


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("script", SCRIPTS)
def test_natsjs_jetstream(server_factory, tmp_path, script, step):
    _prerequisites()
    if IS_NATS_SERVER and (script, step) in NEEDS_2_10:
        pytest.skip("nats.js v3 asks for nats-server 2.10 here; the reference is 2.9.10")
    srv = server_factory(args=js_args(tmp_path))
    run = subprocess.run(
        ["node", str(NODE_DIR / script), "--port", str(srv.port), "--step", step],
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
