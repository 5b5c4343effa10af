"""Durable MQTT state across crashes (issue 6).

Every test drives the real binary (``JUNCTION_BIN``, default target/debug/junction)
with ``--data-dir`` in the test's tmp_path, crashes it with SIGKILL and starts a
new process on the same directory (new random ports), then checks with
unmodified paho-mqtt 2.x clients (3.1.1 and 5.0) or a raw socket client what
survived:

* once the broker sent PUBACK (QoS 1) or PUBREC (QoS 2) a message is durable:
  a persistent subscriber receives every acknowledged message after a crash
  at any point, and QoS 2 messages exactly once;
* retained messages, persistent sessions with their subscriptions (options,
  identifiers), session expiry, wills with a delay, in-flight and queued
  messages, inbound QoS 2 packet identifiers that got a PUBREC;
* the queue limit (``mqtt { max_queued_messages }``), the directory lock, and
  a damaged store (an error naming the file, a non-zero exit).

``DURABILITY_N`` (default 10000) sets the size of the big bursts.

``MQTT_BROKER=mosquitto`` runs the scenarios that mosquitto supports against
Debian's mosquitto with ``persistence true`` (a "crash" is then SIGTERM: mosquitto
only saves its store on a clean stop), to check the tests themselves.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from pathlib import Path

import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from durable_helpers import (
    Durable,
    burst,
    check_delivery,
    collect,
    describe_ids,
    session_client,
)
from mqtt_helpers import (
    CONNACK,
    IS_JUNCTION,
    MQTT_BROKER,
    P_SESSION_EXPIRY,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    PUBACK,
    V5,
    V311,
    Mqtt,
    RawMqtt,
    Will,
    wait_for,
)

N = int(os.environ.get("DURABILITY_N", "10000"))
KIND = "junction" if IS_JUNCTION else "mosquitto"

VERSIONS = pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
QOS12 = pytest.mark.parametrize("qos", [1, 2], ids=["qos1", "qos2"])

junction_only = pytest.mark.skipif(not IS_JUNCTION, reason=f"Junction-only behaviour (MQTT_BROKER={MQTT_BROKER})")


def mosquitto_deviation(why: str):
    """Scenarios where mosquitto 2.0.11 (stopped with SIGTERM) behaves otherwise; they always run on Junction."""
    return pytest.mark.skipif(not IS_JUNCTION, reason=f"MOSQUITTO DEVIATION: {why}")


# ==========================================================================
# Fixtures
# ==========================================================================


@pytest.fixture
def durable(tmp_path):
    """``durable(name="data", **Durable kwargs)``: a broker on tmp_path/name,
    stopped at teardown (SIGTERM, which must exit 0)."""
    made: list[Durable] = []

    def make(name: str = "data", **kw) -> Durable:
        kw.setdefault("kind", KIND)
        d = Durable(tmp_path, tmp_path / name, **kw)
        made.append(d)
        return d

    yield make
    problems = []
    for d in made:
        problems += d.close()
        print(d.logs())  # shown when the test failed
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture
def clients():
    """``clients(Mqtt or RawMqtt)`` registers a client to close at teardown."""
    made = []

    def track(c):
        made.append(c)
        return c

    yield track
    for c in made:
        try:
            c.close()
        except Exception:
            pass


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def se(version: int, seconds: int = 3600) -> list:
    return [(P_SESSION_EXPIRY, seconds)] if version == V5 else []


# MOSQUITTO DEVIATION: mosquitto 2.0 does not write a 5.0 session created with
# clean_start=1 to its store even when its session expiry is > 0; Junction must.
FIRST_CLEAN = IS_JUNCTION


def persistent_subscriber(clients, broker, cid, version, topic, qos, expiry=3600) -> Mqtt:
    """Connect a persistent session (5.0: clean start), subscribe, disconnect."""
    sub = clients(session_client(broker, cid, version, expiry))
    sub.connect(clean=FIRST_CLEAN) if version == V5 else sub.connect()
    assert sub.subscribe(topic, qos) == [qos], "SUBACK did not grant the QoS asked for"
    sub.disconnect()
    return sub


def reconnect(clients, broker, cid, version, expiry=3600, expect_present=True) -> Mqtt:
    sub = clients(session_client(broker, cid, version, expiry))
    sub.connect()
    if expect_present is not None:
        assert sub.session_present is expect_present, \
            f"session_present={sub.session_present} after the restart, expected {expect_present}"
    return sub


def wait_connections(node, n: int, timeout: float = 5.0) -> None:
    """Wait until Junction's /varz shows ``n`` connections (the broker noticed a close)."""
    if node.kind != "junction":
        time.sleep(0.5)
        return
    wait_for(lambda: node.varz()["connections"] == n, timeout, interval=0.05,
             what=f"/varz connections == {n}")


# ==========================================================================
# The crash test: a burst to a persistent subscriber, SIGKILL, restart
# ==========================================================================


@VERSIONS
@QOS12
@pytest.mark.parametrize("kill_point", ["after_last_ack", "mid_burst"])
def test_crash_burst_to_persistent_subscriber(durable, clients, version, qos, kill_point):
    d = durable()
    b = d.start()
    cid = uid("crash-sub")
    topic = "crash/q1" if qos == 1 else "crash/q2"
    persistent_subscriber(clients, b, cid, version, topic, qos)

    # A retained message, acknowledged before the crash.
    retained_topic = f"crash/retained/{uuid.uuid4().hex[:6]}"
    setter = clients(Mqtt(b, uid("ret"), version))
    setter.connect()
    setter.publish(retained_topic, b"keep", qos=1, retain=True)
    setter.disconnect()

    if kill_point == "after_last_ack":
        res, _ = burst(b, version, qos, N, topic)
        assert res.published == N and not res.refused, f"refused: {dict(list(res.refused.items())[:10])}"
        assert len(res.acked) == N
        d.crash()
    else:
        res, _ = burst(b, version, qos, N, topic, durable=d, kill_after=N // 2)
        assert res.killed
        assert not res.refused, f"refused: {dict(list(res.refused.items())[:10])}"
        assert len(res.acked) >= N // 2
    print(f"published {res.published}, acknowledged {len(res.acked)} in {res.elapsed:.1f}s")

    b = d.start()
    sub = reconnect(clients, b, cid, version)
    counts = collect(sub, topic, res.acked, timeout=180)
    problems = check_delivery(counts, res.acked, res.published, qos)
    extra = set(counts) - res.acked
    print(f"received {sum(counts.values())} messages, {len(counts)} distinct; beyond the acknowledged: "
          f"{describe_ids(extra)}")
    assert not problems, f"after the crash ({kill_point}, {len(res.acked)} acknowledged): " + "; ".join(problems)

    # The retained message is still there.
    watcher = clients(Mqtt(b, uid("watch"), version))
    watcher.connect()
    watcher.subscribe(retained_topic, 1)
    m = watcher.expect(timeout=5)
    assert (m.topic, m.payload, m.retain) == (retained_topic, b"keep", True)


@VERSIONS
@pytest.mark.parametrize("kill_point", ["after_last_ack", "mid_burst"])
def test_crash_with_online_persistent_subscriber_loses_nothing_acknowledged(durable, clients, version,
                                                                          kill_point):
    """The subscriber is connected during the burst, so QoS 1 copies go to it at once and its
    PUBACKs can release the publisher's before the store commits them. Whatever the publisher
    saw acknowledged must have reached the subscriber before the crash, or reach it after the
    restart: nothing acknowledged is lost, whichever way the acknowledgement came."""
    d = durable()
    b = d.start()
    cid = uid("online-sub")
    topic = "crash/online"
    sub = clients(session_client(b, cid, version, 3600))
    sub.connect(clean=FIRST_CLEAN) if version == V5 else sub.connect()
    assert sub.subscribe(topic, 1) == [1]
    if kill_point == "after_last_ack":
        res, _ = burst(b, version, 1, N, topic)
        assert len(res.acked) == N
        before = collect(sub, topic, res.acked, timeout=60, settle=0.2)
        d.crash()
    else:
        res, _ = burst(b, version, 1, N, topic, durable=d, kill_after=N // 2)
        assert res.killed and len(res.acked) >= N // 2
        before = collect(sub, topic, set(), timeout=1, settle=0.5)
    sub.close()
    b = d.start()
    again = reconnect(clients, b, cid, version)
    still_needed = res.acked - set(before)
    after = collect(again, topic, still_needed, timeout=120)
    counts = before + after
    problems = check_delivery(counts, res.acked, res.published, 1)
    print(f"acknowledged {len(res.acked)}; received {len(before)} distinct before the crash and "
          f"{len(after)} after it")
    assert not problems, f"after the crash ({kill_point}): " + "; ".join(problems)


@VERSIONS
@QOS12
def test_crash_before_burst_keeps_session_and_subscription(durable, clients, version, qos):
    d = durable()
    b = d.start()
    cid = uid("early-sub")
    topic = f"crash/early/{qos}"
    persistent_subscriber(clients, b, cid, version, topic, qos)
    d.crash()

    b = d.start()
    n = min(N, 2000)
    res, _ = burst(b, version, qos, n, topic)
    assert len(res.acked) == n and not res.refused
    sub = reconnect(clients, b, cid, version)
    counts = collect(sub, topic, res.acked, timeout=120)
    problems = check_delivery(counts, res.acked, n, qos)
    assert not problems, "the session's subscription did not survive the crash: " + "; ".join(problems)
    # Delivered at the subscription's QoS (the session's subscription, not a new one).
    sub.publish(topic, b"0", qos=qos)
    m = sub.expect(timeout=5)
    assert m.qos == qos, f"delivered at QoS {m.qos}, the subscription asked for {qos}"


@QOS12
def test_crash_mid_burst_publisher_resumes_exactly_once(durable, clients, qos):
    """A 3.1.1 publisher with a persistent session resumes after the restart:
    paho retransmits every unacknowledged PUBLISH (DUP) and, for QoS 2, the
    PUBRELs of those that got a PUBREC. Every message arrives; at QoS 2 once.

    Kept below 1024 unacknowledged messages: paho 2.2 resends *every* pending
    message at once on reconnect (it ignores its own max_inflight there), and
    Junction closes a client with more than 1024 QoS 2 messages awaiting PUBREL
    (its receive maximum, enforced for 3.1.1 too), which is not what this test is about."""
    n, inflight = min(N, 1600), 100
    d = durable()
    b = d.start()
    cid = uid("resume-sub")
    topic = f"crash/resume/{qos}"
    persistent_subscriber(clients, b, cid, V311, topic, qos)

    pub = clients(Mqtt(b, uid("resume-pub"), V311, clean=False))
    pub.client.max_inflight_messages_set(inflight)
    pub.connect()
    res, pub = burst(b, V311, qos, n, topic, durable=d, kill_after=n // 2, client=pub, keep_open=True)
    assert res.killed and not res.refused
    pub.client.loop_stop()

    b = d.start()
    pub.connected.clear()
    pub.disconnected.clear()
    pub.client.connect("127.0.0.1", b.port, 60)
    pub.client.loop_start()
    assert pub.connected.wait(10) and pub.connack_rc == 0, "publisher could not reconnect"
    assert pub.session_present, "the publisher's 3.1.1 session (clean_session=False) did not survive"
    # Publish the rest that the crash interrupted, then wait for everything.
    mids_needed = n - res.published
    for i in range(res.published, n):
        info = pub.client.publish(topic, str(i).encode(), qos)
        assert info.rc == 0
    with pub._cond:
        ok = pub._cond.wait_for(lambda: len(pub.puback_rcs) >= n, 120)
    assert ok, (f"after resuming, {len(pub.puback_rcs)} of {n} publishes acknowledged within 120s "
                f"({len(res.acked)} before the crash, {mids_needed} published after the restart; "
                f"publisher connected: {pub.client.is_connected()}, disconnect rc {pub.disconnect_rc})")

    sub = reconnect(clients, b, cid, V311)
    counts = collect(sub, topic, set(range(n)), timeout=180)
    problems = check_delivery(counts, set(range(n)), n, qos)
    assert not problems, "after the publisher resumed: " + "; ".join(problems)


# ==========================================================================
# Retained messages, subscriptions, in-flight messages
# ==========================================================================


@VERSIONS
def test_retained_set_replace_clear_survive_crash(durable, clients, version):
    d = durable()
    b = d.start()
    base = f"ret/{uuid.uuid4().hex[:6]}"
    p = clients(Mqtt(b, uid("ret-pub"), version))
    p.connect()
    p.publish(f"{base}/a", b"first", qos=1, retain=True)
    p.publish(f"{base}/a", b"second", qos=1, retain=True)      # replaced
    p.publish(f"{base}/b", b"gone", qos=1, retain=True)
    p.publish(f"{base}/b", b"", qos=1, retain=True)            # cleared
    p.publish(f"{base}/c", b"qos2", qos=2, retain=True)
    d.crash()

    b = d.start()
    s = clients(Mqtt(b, uid("ret-sub"), version))
    s.connect()
    s.subscribe(f"{base}/#", 1)
    got = sorted((m.topic, m.payload, m.retain) for m in s.drain(1.5))
    assert got == [(f"{base}/a", b"second", True), (f"{base}/c", b"qos2", True)], got


def test_subscription_options_and_identifiers_survive_crash(durable, clients):
    d = durable()
    b = d.start()
    cid = uid("opts")
    c = clients(session_client(b, cid, V5))
    c.connect(clean=FIRST_CLEAN)
    assert c.subscribe("opt/#", options=SubscribeOptions(qos=1, noLocal=True), sub_id=42) == [1]
    assert c.subscribe("opt2/+", options=SubscribeOptions(qos=2), sub_id=7) == [2]
    c.disconnect()
    d.crash()

    b = d.start()
    c = reconnect(clients, b, cid, V5)
    c.publish("opt/self", b"mine", qos=1)  # no local: not back to c
    other = clients(Mqtt(b, uid("other"), V5))
    other.connect()
    other.publish("opt/x", b"one", qos=1)
    other.publish("opt2/y", b"two", qos=2)
    got = sorted(c.expect_n(2, timeout=5), key=lambda m: m.topic)
    assert [(m.topic, m.payload, m.qos) for m in got] == [("opt/x", b"one", 1), ("opt2/y", b"two", 2)]
    assert got[0].sub_ids == [42] and got[1].sub_ids == [7], [m.sub_ids for m in got]
    c.expect_none(0.5)  # in particular not "opt/self"


@VERSIONS
def test_v311_and_v5_session_without_clean_survives_and_unsubscribe_too(durable, clients, version):
    """An UNSUBACK is as durable as a SUBACK: an unsubscribed filter stays gone."""
    d = durable()
    b = d.start()
    cid = uid("unsub")
    c = clients(session_client(b, cid, version))
    c.connect(clean=FIRST_CLEAN) if version == V5 else c.connect()
    c.subscribe([("keep/t", 1), ("drop/t", 1)])
    c.unsubscribe("drop/t")
    c.disconnect()
    d.crash()

    b = d.start()
    p = clients(Mqtt(b, uid("p"), version))
    p.connect()
    p.publish("drop/t", b"no", qos=1)
    p.publish("keep/t", b"yes", qos=1)
    c = reconnect(clients, b, cid, version)
    m = c.expect(timeout=5)
    assert (m.topic, m.payload) == ("keep/t", b"yes")
    c.expect_none(0.5)


@VERSIONS
@QOS12
def test_inflight_messages_redelivered_with_dup_after_crash(durable, clients, version, qos):
    d = durable()
    b = d.start()
    cid = uid("inflight")
    topic = f"inflight/{qos}"
    r = clients(RawMqtt(b, version))
    r.connect(cid, clean=False, props=se(version))
    ack = r.subscribe([(topic, qos)])
    assert ack.codes == [qos]

    p = clients(Mqtt(b, uid("p"), version))
    p.connect()
    for i in range(5):
        p.publish(topic, f"m{i}".encode(), qos=qos)
    first = [r.expect(PUBLISH) for _ in range(5)]  # not acknowledged
    assert [x.payload for x in first] == [f"m{i}".encode() for i in range(5)]
    d.crash()
    r.close()

    b = d.start()
    r = clients(RawMqtt(b, version))
    ack = r.connect(cid, clean=False, props=se(version))
    assert ack.session_present, "session_present=0 after the restart"
    again = [r.expect(PUBLISH, timeout=5) for _ in range(5)]
    assert [(x.pid, x.payload, x.qos) for x in again] == [(x.pid, x.payload, qos) for x in first], \
        "in-flight messages not redelivered with their packet identifiers"
    assert all(x.dup for x in again), f"redelivered without DUP: {again}"
    for x in again:
        if qos == 1:
            r.ack(PUBACK, x.pid)
        else:
            r.ack(PUBREC, x.pid)
            rel = r.expect(PUBREL)
            assert rel.pid == x.pid
            r.ack(PUBCOMP, x.pid)
    assert r.quiet(0.7) == []


@mosquitto_deviation("after a restart it resends the PUBLISH (DUP) instead of the PUBREL")
def test_qos2_outbound_pubrel_state_survives_crash(durable, clients):
    """A QoS 2 delivery whose PUBREC the broker answered with PUBREL: after the
    restart the broker resends PUBREL (MQTT-4.4.0-1), and never the PUBLISH."""
    d = durable()
    b = d.start()
    cid = uid("rel")
    r = clients(RawMqtt(b, V311))
    r.connect(cid, clean=False)
    r.subscribe([("rel/t", 2)])
    p = clients(Mqtt(b, uid("p"), V311))
    p.connect()
    p.publish("rel/t", b"x", qos=2)
    pub = r.expect(PUBLISH)
    r.ack(PUBREC, pub.pid)
    rel = r.expect(PUBREL)
    assert rel.pid == pub.pid
    time.sleep(0.3)
    d.crash()
    r.close()

    b = d.start()
    r = clients(RawMqtt(b, V311))
    assert r.connect(cid, clean=False).session_present
    got = r.quiet(1.0)
    assert [(x.type, x.pid) for x in got] == [(PUBREL, pub.pid)], f"after the restart: {got}"
    r.ack(PUBCOMP, pub.pid)
    assert r.quiet(0.5) == []


# ==========================================================================
# Inbound QoS 2: a packet identifier that got PUBREC
# ==========================================================================


@VERSIONS
@pytest.mark.parametrize("resume", ["republish_dup", "pubrel"])
def test_inbound_qos2_pubrec_survives_crash(durable, clients, version, resume):
    d = durable()
    b = d.start()
    topic = f"inq2/{uuid.uuid4().hex[:6]}"
    sub_id = uid("inq2-sub")
    persistent_subscriber(clients, b, sub_id, version, topic, 2)

    pid = uid("inq2-pub")
    r = clients(RawMqtt(b, version))
    r.connect(pid, clean=False, props=se(version))
    r.publish(topic, b"exactly-once", qos=2, pid=7)
    rec = r.expect(PUBREC)
    assert rec.pid == 7 and rec.rc in (0, None), rec
    d.crash()
    r.close()

    b = d.start()
    r = clients(RawMqtt(b, version))
    ack = r.connect(pid, clean=False, props=se(version))
    assert ack.session_present, "the publisher's session did not survive"
    if resume == "republish_dup":
        r.publish(topic, b"exactly-once", qos=2, pid=7, dup=True)
        rec = r.expect(PUBREC)
        assert rec.pid == 7 and rec.rc in (0, None), rec
    r.ack(PUBREL, 7)
    comp = r.expect(PUBCOMP)
    assert comp.pid == 7
    assert comp.rc in (0, None), f"PUBCOMP reason {comp.rc:#x} (0x92: packet identifier not found: the PUBREC was lost)"

    sub = reconnect(clients, b, sub_id, version)
    got = sub.drain(1.5)
    assert [(m.topic, m.payload) for m in got] == [(topic, b"exactly-once")], \
        f"the subscriber got {[(m.topic, m.payload, m.dup) for m in got]}"


# ==========================================================================
# Session expiry and wills across restarts
# ==========================================================================


@mosquitto_deviation("a session whose expiry passed while it was down is still present after a restart")
def test_session_expiry_runs_across_restart(durable, clients):
    d = durable()
    b = d.start()
    short, long_, running = uid("short"), uid("long"), uid("running")
    persistent_subscriber(clients, b, short, V5, "exp/short", 1, expiry=2)
    persistent_subscriber(clients, b, long_, V5, "exp/long", 1, expiry=3600)
    persistent_subscriber(clients, b, running, V5, "exp/running", 1, expiry=4)
    t0 = time.monotonic()
    d.crash()
    remaining = t0 + 2.5 - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)

    b = d.start()
    # The 4 s session has not expired yet at the restart: its deadline must keep running.
    c = reconnect(clients, b, short, V5, expiry=2, expect_present=False)
    c.disconnect()
    c = reconnect(clients, b, long_, V5, expect_present=True)
    p = clients(Mqtt(b, uid("p"), V5))
    p.connect()
    p.publish("exp/long", b"still", qos=1)
    m = c.expect(timeout=5)
    assert (m.topic, m.payload) == ("exp/long", b"still")

    remaining = t0 + 5.0 - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    reconnect(clients, b, running, V5, expiry=4, expect_present=False)


def test_session_not_expired_at_restart_is_present(durable, clients):
    d = durable()
    b = d.start()
    cid = uid("mid")
    persistent_subscriber(clients, b, cid, V5, "exp/mid", 1, expiry=30)
    d.crash()
    b = d.start()
    c = reconnect(clients, b, cid, V5, expiry=30, expect_present=True)
    p = clients(Mqtt(b, uid("p"), V5))
    p.connect()
    p.publish("exp/mid", b"x", qos=1)
    assert c.expect(timeout=5).payload == b"x"


def _will_client(b, cid, topic, delay, payload=b"last words"):
    return Mqtt(b, cid, V5, clean=FIRST_CLEAN, session_expiry=60, will=Will(topic, payload, qos=1),
                will_props={"WillDelayInterval": delay})


@mosquitto_deviation("a clean stop publishes every pending delayed will at once")
def test_will_delay_across_restart(durable, clients):
    d = durable()
    b = d.start()
    topic = f"will/{uuid.uuid4().hex[:6]}"
    watch_id = uid("will-watch")
    persistent_subscriber(clients, b, watch_id, V5, topic, 1)

    w = clients(_will_client(b, uid("will"), topic, delay=2))
    w.connect()
    w.abort()  # no DISCONNECT: the will is due 2 s later
    t0 = time.monotonic()
    wait_connections(d.node, 0)
    d.crash()

    b = d.start()
    watch = reconnect(clients, b, watch_id, V5)
    m = watch.expect(timeout=15)
    arrived = time.monotonic() - t0
    assert (m.topic, m.payload) == (topic, b"last words")
    assert arrived >= 1.8, f"the will arrived {arrived:.2f}s after the connection dropped, before its 2 s delay"
    watch.expect_none(1.0)


@mosquitto_deviation("a clean stop publishes every pending delayed will at once")
def test_will_not_published_when_client_returns_after_restart(durable, clients):
    d = durable()
    b = d.start()
    topic = f"will/{uuid.uuid4().hex[:6]}"
    watch_id, will_id = uid("will-watch"), uid("will")
    persistent_subscriber(clients, b, watch_id, V5, topic, 1)

    w = clients(_will_client(b, will_id, topic, delay=5))
    w.connect()
    w.abort()
    t0 = time.monotonic()
    wait_connections(d.node, 0)
    d.crash()

    b = d.start()
    back = clients(Mqtt(b, will_id, V5, clean=False, session_expiry=60))
    back.connect()
    assert back.session_present, "the will client's session did not survive the crash"
    assert time.monotonic() - t0 < 4.5, "restart too slow for this test's 5 s will delay"
    watch = reconnect(clients, b, watch_id, V5)
    watch.expect_none(max(0.5, t0 + 6.5 - time.monotonic()))


# ==========================================================================
# Queue limit
# ==========================================================================


@VERSIONS
def test_queue_limit_survives_crash(durable, clients, version):
    limit, total = 100, 300
    d = durable(config=f"mqtt {{\n  max_queued_messages: {limit}\n}}\n", max_queued=limit)
    b = d.start()
    cid = uid("limited")
    topic = "queue/limit"
    persistent_subscriber(clients, b, cid, version, topic, 1)
    dropped_before = d.node.varz().get("mqtt_queue_dropped", 0) if IS_JUNCTION else 0
    res, _ = burst(b, version, 1, total, topic)
    assert len(res.acked) == total
    if IS_JUNCTION:
        v = d.node.varz()
        assert "mqtt_queue_dropped" in v, f"/varz has no mqtt_queue_dropped: {sorted(v)}"
        assert v["mqtt_queue_dropped"] - dropped_before == total - limit, \
            f"/varz mqtt_queue_dropped={v['mqtt_queue_dropped']}, expected {total - limit}"
    d.crash()

    b = d.start()
    sub = reconnect(clients, b, cid, version)
    counts = collect(sub, topic, set(), timeout=30, settle=1.5)
    ids = sorted(counts)
    print(f"kept after the restart: {describe_ids(ids)}")
    assert len(ids) == limit, f"{len(ids)} messages kept, the limit is {limit}: {describe_ids(ids)}"
    assert ids in (list(range(limit)), list(range(total - limit, total))), \
        f"kept neither the first nor the last {limit}: {describe_ids(ids)}"
    which = "the first (oldest) 100: new messages dropped" if ids[0] == 0 else "the last (newest) 100: oldest dropped"
    print(f"queue limit: kept {which}")


# ==========================================================================
# The data directory: flags, default, lock, damage
# ==========================================================================


@junction_only
def test_in_memory_keeps_nothing(durable, clients, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    d = durable(data_args=["--in-memory"], cwd=cwd)
    b = d.start()
    cid = uid("mem")
    persistent_subscriber(clients, b, cid, V311, "mem/t", 1)
    p = clients(Mqtt(b, uid("p"), V311))
    p.connect()
    p.publish("mem/r", b"ret", qos=1, retain=True)
    p.publish("mem/t", b"queued", qos=1)
    d.crash()
    assert not (cwd / "junction-data").exists(), "--in-memory created ./junction-data"
    assert list(cwd.iterdir()) == [], f"--in-memory wrote {list(cwd.iterdir())}"

    b = d.start()
    c = reconnect(clients, b, cid, V311, expect_present=False)
    c.subscribe("mem/#", 1)
    c.expect_none(1.0)


@junction_only
def test_default_data_dir_is_junction_data_in_cwd(durable, clients, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    d = durable(data_args=[], cwd=cwd)
    b = d.start()
    p = clients(Mqtt(b, uid("p"), V311))
    p.connect()
    p.publish("def/r", b"ret", qos=1, retain=True)
    d.crash()
    store = cwd / "junction-data"
    assert store.is_dir() and any(store.iterdir()), "no ./junction-data store was written"

    b = d.start()
    s = clients(Mqtt(b, uid("s"), V311))
    s.connect()
    s.subscribe("def/r", 1)
    assert s.expect(timeout=5).payload == b"ret"


@junction_only
def test_data_dir_config_key(durable, clients, tmp_path):
    store = tmp_path / "from-config"
    d = durable(data_args=[], cwd=tmp_path, config=f'data_dir: "{store}"\n')
    b = d.start()
    p = clients(Mqtt(b, uid("p"), V311))
    p.connect()
    p.publish("cfg/r", b"ret", qos=1, retain=True)
    d.crash()
    assert store.is_dir() and any(store.iterdir()), f"data_dir in the config: nothing written to {store}"
    assert not (tmp_path / "junction-data").exists(), "data_dir in the config ignored: ./junction-data used"
    b = d.start()
    s = clients(Mqtt(b, uid("s"), V311))
    s.connect()
    s.subscribe("cfg/r", 1)
    assert s.expect(timeout=5).payload == b"ret"


@junction_only
def test_second_broker_on_same_data_dir_fails(durable, clients):
    d = durable()
    b = d.start()
    other = durable().launch()  # same directory ("data")
    rc = other.wait_exit(15)
    out = other.full_log()
    assert rc is not None, f"a second broker on {d.data_dir} kept running; log:\n{out[-3000:]}"
    assert rc != 0, f"a second broker on the same data directory exited 0; log:\n{out[-3000:]}"
    assert not other.saw_ready(), "the second broker reported ready before failing"
    names = [str(d.data_dir)] + [p.name for p in d.data_dir.rglob("*")]
    assert any(n in out for n in names), \
        f"the error does not name the data directory {d.data_dir} or a file in it:\n{out[-3000:]}"
    print(f"second broker (rc {rc}) said:\n{out[-1500:]}")

    # The first broker is unharmed.
    c = clients(Mqtt(b, uid("c"), V311))
    c.connect()
    c.subscribe("lock/t", 1)
    c.publish("lock/t", b"ok", qos=1)
    assert c.expect(timeout=5).payload == b"ok"


@junction_only
def test_stale_lock_of_a_crashed_broker_does_not_block_restart(durable, clients):
    d = durable()
    d.start()
    d.crash()
    d.start()  # would raise if the dead process's lock were still honoured
    d.crash()
    d.start()


BODY = random.Random(1).randbytes(1024)


def fill_store_and_stop(d, clients, stop) -> str:
    """Leaves `d`'s data directory holding 1,500 retained and 1,500 queued messages of 1 KiB,
    stopped by `stop` (after a `sigkill` the newest of them are only in the log). Returns the
    persistent subscriber's client id."""
    b = d.start()
    p = clients(Mqtt(b, uid("p"), V311))
    p.client.max_inflight_messages_set(1000)
    p.connect()
    sub_id = uid("bulk-sub")
    persistent_subscriber(clients, b, sub_id, V311, "bulk/q", 1)
    infos = [p.client.publish(f"bulk/r/{i}", BODY, 1, True) for i in range(1500)]
    infos += [p.client.publish("bulk/q", BODY, 1) for _ in range(1500)]
    for info in infos:
        info.wait_for_publish(60)
        assert info.is_published()
    p.close()
    if stop == "sigterm":
        assert d.node.terminate() == 0
    else:
        d.crash()
    return sub_id


def assert_refuses_to_start(d, damaged):
    node = d.launch()
    rc = node.wait_exit(30)
    out = node.full_log()
    assert rc is not None, f"the broker kept running on a damaged store; log:\n{out[-3000:]}"
    refused_naming(node, rc, damaged)


def refused_naming(node, rc, damaged):
    out = node.full_log()
    assert rc != 0, f"exit code 0 on a damaged store; log:\n{out[-3000:]}"
    assert not node.saw_ready(), f"the broker served on a damaged store; log:\n{out[-3000:]}"
    named = [f for f in damaged if str(f) in out or f.name in out]
    assert named, f"the error names none of the damaged files {[f.name for f in damaged]}:\n{out[-3000:]}"
    print(f"rc {rc}; output:\n{out[-1500:]}")


@junction_only
def test_a_damaged_store_is_refused_or_recovered_whole(durable, clients):
    """After a clean stop everything is in redb's file. With every copy of the messages' bytes
    in it damaged, the broker either refuses to start and names the file, or (when redb falls
    back to its previous durable commit and the log still holds what came after) serves every
    message intact: never a partial or corrupted store."""
    d = durable()
    sub_id = fill_store_and_stop(d, clients, "sigterm")
    store = d.data_dir / "junction.redb"
    data = bytearray(store.read_bytes())
    needle = BODY[:64]
    hits = []
    at = data.find(needle)
    while at >= 0:
        hits.append(at)
        at = data.find(needle, at + 1)
    assert len(hits) >= 3000, f"{len(hits)} copies of the messages in {store.name}"
    rng = random.Random(6)
    for at in hits:
        data[at:at + len(BODY)] = rng.randbytes(len(BODY))
    store.write_bytes(bytes(data))
    print(f"damaged {len(hits)} copies in {store.name} ({len(data)} B)")

    node = d.launch()
    deadline = time.monotonic() + 30
    while not node.saw_ready() and node.proc.poll() is None:
        assert time.monotonic() < deadline, f"neither ready nor refused:\n{node.log_text()}"
        time.sleep(0.05)
    if not node.saw_ready():
        refused_naming(node, node.wait_exit(5), [store])
        return
    d.node = node
    b = node.broker()
    print(f"recovered:\n{node.log_text(20)}")
    sub = reconnect(clients, b, sub_id, V311)
    got = [sub.messages.get(timeout=30) for _ in range(1500)]
    assert all(m.topic == "bulk/q" and m.payload == BODY for m in got)
    sub.expect_none(0.5)
    r = clients(Mqtt(b, uid("r"), V311))
    r.connect()
    r.subscribe("bulk/r/#", 1)
    retained = [r.messages.get(timeout=30) for _ in range(1500)]
    assert all(m.payload == BODY and m.retain for m in retained)
    assert sorted(m.topic for m in retained) == sorted(f"bulk/r/{i}" for i in range(1500))
    r.expect_none(0.5)


@junction_only
def test_damage_inside_the_log_fails_startup_naming_it(durable, clients):
    """After a crash the newest acknowledged messages are only in the write-ahead log: damage
    before its last frame is refused, not replayed partially (a torn last frame is what a crash
    leaves, and is dropped)."""
    d = durable()
    fill_store_and_stop(d, clients, "sigkill")
    wal = d.data_dir / "junction.wal"
    with open(wal, "r+b") as fh:
        fh.seek(64 * 1024)
        fh.write(random.Random(7).randbytes(4096))
    assert_refuses_to_start(d, [wal])


# --------------------------------------------------------------------------
# Fault injection (scripts/soak-durability runs this at a large size)
# --------------------------------------------------------------------------


@junction_only
def test_fault_injection_soak(tmp_path):
    """A few iterations of the soak: mixed QoS 1/2 load, one subscriber online and one away,
    SIGKILL at a random point. SOAK_SEED picks the iterations (a failure prints its seed)."""
    import random

    from durable_helpers import default_bin, soak_iteration

    seed = int(os.environ.get("SOAK_SEED", str(time.time_ns() % 1_000_000)))
    rng = random.Random(seed)
    failures = []
    for i in range(int(os.environ.get("SOAK_ITERATIONS", "4"))):
        ok, line = soak_iteration(i, rng, default_bin(), int(os.environ.get("SOAK_TEST_N", "800")), tmp_path)
        print(line)
        if not ok:
            failures.append(line)
    assert not failures, f"seed {seed}:\n" + "\n".join(failures)
