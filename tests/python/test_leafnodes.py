"""Junction as a leaf node of a real NATS cluster (issue 14).

A three-server nats-server cluster (Debian's nats-server, routes on loopback, each with a leaf
node port) is the backbone; Junction nodes attach to it with ``leafnodes { remotes }``. Clients
are unmodified: nats-py on every server, paho-mqtt on the Junction nodes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
import uuid

import nats
import pytest
from nats.js import api

from conftest import async_test, wait_until
from mqtt_helpers import V5, Broker, Mqtt, _MQTT_LISTEN_RE, free_port

NATS_SERVER = os.environ.get("NATS_SERVER_BIN", "/usr/sbin/nats-server")


class NatsServer:
    """One nats-server process started from a config file, with its log."""

    def __init__(self, workdir, name: str, config: str):
        self.name = name
        self.port = free_port()
        self.http_port = free_port()
        self.config_path = workdir / f"{name}.conf"
        self.config_path.write_text(f"port: {self.port}\nhttp_port: {self.http_port}\n"
                                    f"server_name: {name}\n{config}")
        self.log: list[str] = []
        self.proc = subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-c", str(self.config_path)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(10):
            self.stop()
            pytest.fail(f"{name} did not start:\n{self.log_text()}")

    def _drain(self):
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self.log.append(line)
            if "Server is ready" in line:
                self._ready.set()
        self._ready.set()

    def log_text(self) -> str:
        return "\n".join(self.log[-80:])

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
            return json.loads(r.read())

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def nats_servers(tmp_path):
    if not os.path.exists(NATS_SERVER):
        pytest.fail(f"{NATS_SERVER} is missing (apt-get install nats-server): ./scripts/test installs it")
    started: list[NatsServer] = []

    def start(name: str, config: str) -> NatsServer:
        s = NatsServer(tmp_path, name, config)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
        print(f"---- {s.name} log ----\n{s.log_text()}")


def start_cluster(nats_servers, n: int = 3, extra: str = "") -> list[NatsServer]:
    """A cluster of ``n`` nats-servers with routes and leaf node ports, once every route is up."""
    cports = [free_port() for _ in range(n)]
    lports = [free_port() for _ in range(n)]
    servers = []
    for i in range(n):
        routes = ", ".join(f'"nats://127.0.0.1:{p}"' for j, p in enumerate(cports) if j != i)
        servers.append(nats_servers(f"n{i + 1}", f"""
cluster {{ name: backbone, listen: "127.0.0.1:{cports[i]}", routes: [{routes}] }}
leafnodes {{ listen: "127.0.0.1:{lports[i]}" }}
{extra}
"""))
        servers[-1].leaf_port = lports[i]
    deadline = time.monotonic() + 15
    while any(s.get("/routez")["num_routes"] < n - 1 for s in servers):
        assert time.monotonic() < deadline, "the cluster's routes did not come up"
        time.sleep(0.1)
    return servers


def leaf_config(*hubs, account_block: str = "", remote_extra: str = "", extra: str = "") -> str:
    urls = ", ".join(f'"nats://127.0.0.1:{h.leaf_port}"' for h in hubs)
    return f"""
{account_block}
leafnodes {{ reconnect: "250ms", remotes: [ {{ urls: [{urls}] {remote_extra} }} ] }}
{extra}
"""


def mqtt_broker(srv) -> Broker:
    for line in srv.log:
        m = _MQTT_LISTEN_RE.search(line)
        if m:
            return Broker(kind="junction", port=int(m.group(2)), nats_port=srv.port,
                          http_port=srv.http_port, process=srv)
    pytest.fail(f"no MQTT listener logged:\n{srv.log_text()}")


def leafz(srv) -> dict:
    status, body = srv.http_get("/leafz")
    assert status == 200
    return json.loads(body)


def wait_linked(srv, hub: NatsServer | None = None, timeout: float = 10.0) -> dict:
    """Waits until Junction's /leafz shows its link up (to ``hub`` when given)."""
    deadline = time.monotonic() + timeout
    while True:
        z = leafz(srv)
        if z["leafnodes"] == 1 and (hub is None or z["leafs"][0]["port"] == hub.leaf_port):
            return z["leafs"][0]
        if time.monotonic() > deadline:
            pytest.fail(f"no leaf node link{' to ' + hub.name if hub else ''}: {z}\n{srv.log_text()}")
        time.sleep(0.05)


async def until_logged(srv, *words: str, timeout: float = 10.0) -> str:
    """Waits until a line of ``srv``'s log holds every one of ``words`` (logs are read by a
    thread, so a line written just before a message arrived may not be in ``srv.log`` yet)."""
    return await wait_until(
        lambda: next((line for line in list(srv.log) if all(w in line for w in words)), None),
        timeout, 0.05, what=f"a log line with {words!r}")


async def until_flows(publish, received, timeout: float = 10.0, what: str = "messages to flow"):
    """Publishes probes until one arrives (interest crosses the cluster asynchronously).
    ``received()`` waits a short bounded time itself and returns the probe or ``None``."""
    deadline = time.monotonic() + timeout
    while True:
        await publish()
        got = await received()
        if got is not None:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"


def mqtt_probe(dev, topic: str):
    """``received`` for ``until_flows``: the next message on ``topic`` within 0.3 s, or None."""
    async def received():
        def look():
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                try:
                    m = dev.expect(max(0.01, end - time.monotonic()))
                except AssertionError:
                    return None
                if m.topic == topic:
                    return m
            return None
        return await asyncio.to_thread(look)
    return received


def nats_probe(sub, subject: str | None = None):
    async def received():
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            try:
                m = await sub.next_msg(max(0.01, end - time.monotonic()))
            except nats.errors.TimeoutError:
                return None
            if subject is None or m.subject == subject:
                return m
        return None
    return received


async def crossing(pub_nc, sub_nc, subject: str, data: bytes, what: str = ""):
    """Subscribes on ``sub_nc`` and publishes from ``pub_nc`` until the message arrives;
    returns it."""
    sub = await sub_nc.subscribe(subject)
    await sub_nc.flush()

    async def pub():
        await pub_nc.publish(subject, data)
    m = await until_flows(pub, nats_probe(sub), what=what or f"{subject} to cross")
    await sub.unsubscribe()
    return m


@async_test(90)
async def test_mqtt_and_nats_across_the_cluster_both_ways(nats_servers, server_factory):
    n1, n2, n3 = start_cluster(nats_servers)
    a = server_factory(config=leaf_config(n1))
    b = server_factory(config=leaf_config(n2))
    link = wait_linked(a, n1)
    assert link["account"] == "$G" and link["url"] == f"nats://127.0.0.1:{n1.leaf_port}"
    wait_linked(b, n2)
    tag = uuid.uuid4().hex[:6]

    dev_a = Mqtt(mqtt_broker(a), f"dev-a-{tag}", V5)
    dev_b = Mqtt(mqtt_broker(b), f"dev-b-{tag}", V5)
    service = await nats.connect(n3.url)
    watcher = await nats.connect(n3.url)
    on_a = await nats.connect(a.url)
    try:
        await asyncio.to_thread(dev_a.connect)
        await asyncio.to_thread(dev_b.connect)
        assert await asyncio.to_thread(dev_b.subscribe, f"t/{tag}/+", 1) == [1]
        seen_on_cluster = await watcher.subscribe(f"t.{tag}.*")

        # -- device on A -> device on B and a NATS subscriber on the cluster ----------------
        async def pub():
            await asyncio.to_thread(dev_a.publish, f"t/{tag}/probe", b"probe", 1)

        await until_flows(pub, mqtt_probe(dev_b, f"t/{tag}/probe"),
                          what="A's device to reach B's device")
        await asyncio.to_thread(dev_b.drain, 0.3)
        for i in range(20):
            await asyncio.to_thread(dev_a.publish, f"t/{tag}/temp", f"{i}".encode(), 1)
        got = []
        while len(got) < 20:
            m = await asyncio.to_thread(dev_b.expect, 5)
            if m.topic == f"t/{tag}/temp":
                got.append(int(m.payload))
        assert got == list(range(20)), got  # once each, in order
        m = await seen_on_cluster.next_msg(5)
        while m.subject != f"t.{tag}.temp":
            m = await seen_on_cluster.next_msg(5)
        assert m.data == b"0"

        # -- a NATS service on the cluster answers requests from both Junctions -------------
        async def echo(msg):
            await msg.respond(b"echo:" + msg.data)
        await service.subscribe(f"svc.{tag}", cb=echo)
        await service.flush()

        async def req():
            try:
                return await on_a.request(f"svc.{tag}", b"hi", timeout=0.3)
            except nats.errors.NoRespondersError:
                return None
        deadline = time.monotonic() + 10
        reply = None
        while reply is None:
            assert time.monotonic() < deadline, "the cluster's service never answered A"
            try:
                reply = await req()
            except nats.errors.TimeoutError:
                pass
            if reply is None:
                await asyncio.sleep(0.1)
        assert reply.data == b"echo:hi"

        # An MQTT 5 request from B's device (response topic) reaches the NATS service and the
        # answer comes back to the device.
        assert await asyncio.to_thread(dev_b.subscribe, f"r/{tag}", 1) == [1]
        await asyncio.sleep(0.3)  # B's new interest reaches the cluster
        await asyncio.to_thread(dev_b.publish, f"svc/{tag}", b"from mqtt", 1,
                                props={"ResponseTopic": f"r/{tag}"})
        m = await asyncio.to_thread(dev_b.expect, 5)
        while m.topic != f"r/{tag}":
            m = await asyncio.to_thread(dev_b.expect, 5)
        assert m.payload == b"echo:from mqtt"

        # -- the other way: the cluster publishes, devices on A receive ----------------------
        assert await asyncio.to_thread(dev_a.subscribe, f"down/{tag}/#", 1) == [1]

        async def down():
            await watcher.publish(f"down.{tag}.cmd", b"reboot")

        m = await until_flows(down, mqtt_probe(dev_a, f"down/{tag}/cmd"),
                              what="the cluster to reach A's device")
        assert m.payload == b"reboot"

        # /leafz and /varz count the link and its traffic; the hub lists Junction as a leaf.
        z = leafz(a)["leafs"][0]
        assert z["out_msgs"] >= 21 and z["in_msgs"] >= 1 and z["subscriptions"] >= 1, z
        assert a.varz()["leafnodes"] == 1
        hub_view = n1.get("/leafz")
        assert hub_view["leafnodes"] == 1, hub_view
        _, metrics = a.http_get("/metrics")
        lines = metrics.decode().splitlines()
        assert "junction_leafnode_links 1" in lines, metrics.decode()[-2000:]
        out = [x for x in lines if x.startswith('junction_leafnode_messages_total{direction="out"}')]
        assert out and int(out[0].split()[-1]) >= 21, out
        _, dash = a.http_get("/api/dashboard")
        links = json.loads(dash)["leafnodes"]
        assert [(x["up"], x["is_spoke"], x["port"]) for x in links] == [(True, True, n1.leaf_port)], links
    finally:
        dev_a.close()
        dev_b.close()
        for nc in (service, watcher, on_a):
            await nc.close()


@async_test(90)
async def test_a_queue_group_spread_over_cluster_and_junctions_gets_each_message_once(
        nats_servers, server_factory):
    n1, n2, n3 = start_cluster(nats_servers)
    a = server_factory(config=leaf_config(n1))
    b = server_factory(config=leaf_config(n2))
    wait_linked(a)
    wait_linked(b)
    members = {}
    received: list[tuple[str, bytes]] = []
    conns = []
    try:
        for where, url in (("n1", n1.url), ("n3", n3.url), ("a", a.url), ("b", b.url)):
            nc = await nats.connect(url)
            conns.append(nc)

            async def cb(msg, where=where):
                received.append((where, msg.data))
            members[where] = await nc.subscribe("jobs", queue="workers", cb=cb)
            await nc.flush()
        # An MQTT shared subscription on B is one more member of the same group.
        dev = Mqtt(mqtt_broker(b), "worker-mqtt", V5)
        await asyncio.to_thread(dev.connect)
        assert await asyncio.to_thread(dev.subscribe, "$share/workers/jobs", 1) == [1]

        pub_n2 = await nats.connect(n2.url)
        pub_a = await nats.connect(a.url)
        conns += [pub_n2, pub_a]
        # Interest settles: a probe from n2 lands somewhere in the group.
        await wait_until(lambda: n2.get("/subsz?subs=1")["num_subscriptions"] > 0, 10)
        await asyncio.sleep(1.0)
        received.clear()
        n = 200
        for i in range(n):
            await pub_n2.publish("jobs", f"n2-{i}".encode())
            await pub_a.publish("jobs", f"a-{i}".encode())
        await pub_n2.flush()
        await pub_a.flush()
        mqtt_got = []

        async def everything_arrived():
            while True:
                try:
                    m = await asyncio.to_thread(dev.expect, 0.05)
                    mqtt_got.append(m.payload)
                except AssertionError:
                    pass
                if len(received) + len(mqtt_got) >= 2 * n:
                    return True
        await asyncio.wait_for(everything_arrived(), 20)
        await asyncio.sleep(0.5)  # and nothing more
        while True:
            try:
                mqtt_got.append((await asyncio.to_thread(dev.expect, 0.05)).payload)
            except AssertionError:
                break
        ids = [d for _, d in received] + mqtt_got
        assert len(ids) == 2 * n, f"{len(ids)} deliveries for {2 * n} messages"
        assert len(set(ids)) == 2 * n, "a message was delivered twice"
        by = {w: sum(1 for x, _ in received if x == w) for w in members}
        # What A publishes stays with A's local member (local members first).
        assert all(d.startswith(b"n2-") for w, d in received if w != "a") or by["a"] >= n, by
        assert sum(1 for w, d in received if w == "a" and d.startswith(b"a-")) == n, by
        dev.close()
    finally:
        for nc in conns:
            await nc.close()


@async_test(120)
async def test_losing_the_hub_server_moves_the_link_and_qos1_traffic_resumes(
        nats_servers, server_factory):
    n1, n2, n3 = start_cluster(nats_servers)
    a = server_factory(config=leaf_config(n1, n2))
    b = server_factory(config=leaf_config(n3))
    wait_linked(a, n1)
    wait_linked(b, n3)
    dev_a = Mqtt(mqtt_broker(a), "mover-a", V5)
    dev_b = Mqtt(mqtt_broker(b), "mover-b", V5)
    await asyncio.to_thread(dev_a.connect)
    await asyncio.to_thread(dev_b.connect)
    assert await asyncio.to_thread(dev_b.subscribe, "move/#", 1) == [1]

    async def pub():
        await asyncio.to_thread(dev_a.publish, "move/probe", b"p", 1)

    await until_flows(pub, mqtt_probe(dev_b, "move/probe"), what="A to reach B")
    await asyncio.to_thread(dev_b.drain, 0.3)

    # A steady QoS 1 stream from A's device; n1 (A's hub) is killed in the middle of it.
    sent = 0
    stop = threading.Event()

    def publisher():
        nonlocal sent
        while not stop.is_set() and sent < 3000:
            dev_a.publish("move/seq", str(sent).encode(), 1)
            sent += 1
            time.sleep(0.002)
    t = threading.Thread(target=publisher)
    t.start()
    await asyncio.sleep(1.0)
    n1.stop(signal.SIGKILL)
    link = await asyncio.to_thread(wait_linked, a, n2, 15)
    assert link["connects"] == 2, link
    await asyncio.sleep(1.5)
    stop.set()
    t.join(10)
    seqs = []
    while True:
        try:
            m = await asyncio.to_thread(dev_b.expect, 1.0)
        except AssertionError:
            break
        if m.topic == "move/seq":
            seqs.append(int(m.payload))
    assert seqs, "nothing arrived"
    assert len(seqs) == len(set(seqs)), "a message arrived twice"
    lost = sorted(set(range(sent)) - set(seqs))
    print(f"failover: {sent} sent, {len(seqs)} received, {len(lost)} lost: {lost[:20]}")
    # Traffic resumed: everything published well after the switch arrived.
    assert max(seqs) == sent - 1
    assert not [x for x in lost if x > sent - 200], lost[-20:]
    await until_logged(a, "Leafnode connection created", str(n2.leaf_port))
    dev_a.close()
    dev_b.close()


@async_test(60)
async def test_bad_hub_credentials_are_a_clear_error_retried_with_backoff(
        nats_servers, server_factory):
    hub = nats_servers("hub", f"""
leafnodes {{ listen: "127.0.0.1:{free_port()}", authorization {{ user: leaf, password: right }} }}
""")
    hub.leaf_port = int(hub.config_path.read_text().split('listen: "127.0.0.1:')[1].split('"')[0])
    bad = server_factory(config=f"""
leafnodes {{ reconnect: "100ms", remotes: [ {{ url: "nats://leaf:wrong@127.0.0.1:{hub.leaf_port}" }} ] }}
""")
    deadline = time.monotonic() + 10
    while sum("Authorization Violation" in line for line in bad.log) < 3:
        assert time.monotonic() < deadline, bad.log_text()
        await asyncio.sleep(0.1)
    errors = [line for line in bad.log if "Authorization Violation" in line]
    assert "[ERR]" in errors[0] and "wrong" not in errors[0] and "[REDACTED]" in errors[0], errors[0]
    assert leafz(bad)["leafnodes"] == 0
    # The waits between attempts grow (100 ms, 200 ms, 400 ms, ...): the fourth attempt comes
    # well after the first.
    await asyncio.sleep(1.0)
    assert sum("Authorization Violation" in line for line in bad.log) < 12
    good = server_factory(config=f"""
leafnodes {{ remotes: [ {{ url: "nats://127.0.0.1:{hub.leaf_port}", user: leaf, password: right }} ] }}
""")
    wait_linked(good)
    hub_nc = await nats.connect(hub.url)
    leaf_nc = await nats.connect(good.url)
    try:
        m = await crossing(leaf_nc, hub_nc, "hello", b"world")
        assert m.data == b"world"
    finally:
        await hub_nc.close()
        await leaf_nc.close()


@async_test(60)
async def test_deny_imports_and_exports_and_account_binding(nats_servers, server_factory):
    lport = free_port()
    hub = nats_servers("hub", f'leafnodes {{ listen: "127.0.0.1:{lport}" }}\n')
    hub.leaf_port = lport
    leaf = server_factory(config=f"""
accounts {{
  EDGE {{ users: [ {{ user: e, password: e }} ] }}
  OTHER {{ users: [ {{ user: o, password: o }} ] }}
}}
leafnodes {{ remotes: [ {{ url: "nats://127.0.0.1:{lport}", account: EDGE,
  deny_exports: ["secret.>"], deny_imports: ["internal.>"] }} ] }}
""")
    wait_linked(leaf)
    hub_nc = await nats.connect(hub.url)
    edge = await nats.connect(leaf.url, user="e", password="e")
    other = await nats.connect(leaf.url, user="o", password="o")
    try:
        on_hub = await hub_nc.subscribe(">")
        on_edge = await edge.subscribe("from.hub.>")
        internal_on_edge = await edge.subscribe("internal.>")
        on_other = await other.subscribe("from.hub.>")
        await hub_nc.flush()
        await edge.flush()
        await other.flush()

        async def pub():
            await edge.publish("public.x", b"ok")

        await until_flows(pub, nats_probe(on_hub, "public.x"))
        await edge.publish("secret.x", b"no")
        await edge.publish("public.y", b"after")
        await edge.flush()
        m = await on_hub.next_msg(2)
        while m.subject == "public.x":
            m = await on_hub.next_msg(2)
        assert m.subject == "public.y", f"{m.subject} crossed a deny_exports"

        async def down():
            await hub_nc.publish("internal.z", b"kept out")
            await hub_nc.publish("from.hub.1", b"in")

        m = await until_flows(down, nats_probe(on_edge))
        assert m.data == b"in"
        with pytest.raises(nats.errors.TimeoutError):
            await internal_on_edge.next_msg(0.5)
        # The link is bound to EDGE: another account on the same Junction sees nothing.
        with pytest.raises(nats.errors.TimeoutError):
            await on_other.next_msg(0.5)
    finally:
        for nc in (hub_nc, edge, other):
            await nc.close()


def jetstream_hub(nats_servers, tmp_path):
    """A nats-server with JetStream in domain `hub`, taking leaf nodes."""
    lport = free_port()
    hub = nats_servers("hub", f"""
jetstream {{ domain: hub, store_dir: "{tmp_path / 'hub-js'}" }}
leafnodes {{ listen: "127.0.0.1:{lport}" }}
""")
    hub.leaf_port = lport
    return hub


def jetstream_edge(server_factory, hub):
    """A Junction with JetStream in domain `edge` (in memory), linked to `hub` as its leaf."""
    leaf = server_factory(config=leaf_config(hub, extra="jetstream { domain: edge }"),
                          args=["--in-memory"])
    wait_linked(leaf)
    return leaf


@async_test(60)
async def test_jetstream_domains_both_ways(nats_servers, server_factory, tmp_path):
    hub = jetstream_hub(nats_servers, tmp_path)
    leaf = jetstream_edge(server_factory, hub)
    hub_nc = await nats.connect(hub.url)
    leaf_nc = await nats.connect(leaf.url)
    try:
        async def domain_of(nc, domain):
            js = nc.jetstream(domain=domain) if domain else nc.jetstream()
            return (await js.account_info()).domain
        await wait_until_async(lambda: domain_of(leaf_nc, "hub"), "hub")
        # Without a domain each side's clients reach their own JetStream.
        assert await domain_of(leaf_nc, None) == "edge"
        assert await domain_of(hub_nc, None) == "hub"
        assert await domain_of(hub_nc, "edge") == "edge"
        # A stream made from the edge in the hub's domain lives on the hub, and the other way.
        await leaf_nc.jetstream(domain="hub").add_stream(name="ONHUB", subjects=["onhub.>"])
        await hub_nc.jetstream(domain="edge").add_stream(name="ONEDGE", subjects=["onedge.>"])
        assert (await hub_nc.jetstream().stream_info("ONHUB")).config.name == "ONHUB"
        assert (await leaf_nc.jetstream().stream_info("ONEDGE")).config.name == "ONEDGE"
        with pytest.raises(nats.js.errors.NotFoundError):
            await leaf_nc.jetstream().stream_info("ONHUB")
        # Publishing from the edge into the hub's stream, with its PubAck back.
        ack = await leaf_nc.jetstream(domain="hub").publish("onhub.x", b"1")
        assert ack.stream == "ONHUB" and ack.domain == "hub"
        await hub_nc.jetstream(domain="edge").publish("onedge.y", b"2")
        # A direct get of the edge's stream from the hub, through its domain
        # (`$JS.edge.API.DIRECT.GET.<stream>`).
        je = hub_nc.jetstream(domain="edge")
        await je.add_stream(name="EDGED", subjects=["edged.>"], allow_direct=True)
        await leaf_nc.jetstream().publish("edged.a", b"direct")
        m = await je.get_msg("EDGED", seq=1, direct=True)
        assert (m.subject, m.data, m.headers["Nats-Stream"]) == ("edged.a", b"direct", "EDGED")
        m = await je.get_msg("EDGED", subject="edged.a", direct=True)
        assert m.seq == 1
        # Consuming across the link, both ways: the messages reach the requester's inbox with
        # their own subjects and acknowledgement replies (nats-server carries the subject in
        # the reply, `$JS.ACK...@subject`), and the acknowledgements come back.
        for nc, domain, stream, subject, data in ((leaf_nc, "hub", "ONHUB", "onhub.x", b"1"),
                                                  (hub_nc, "edge", "ONEDGE", "onedge.y", b"2")):
            js = nc.jetstream(domain=domain)
            sub = await js.pull_subscribe(subject, "across", stream=stream)
            [m] = await sub.fetch(1, timeout=5)
            assert (m.subject, m.data, m.metadata.sequence.stream) == (subject, data, 1)
            assert m.reply.startswith(f"$JS.ACK.{domain}.") or m.reply.startswith(f"$JS.ACK.{stream}."), m.reply
            assert "@" not in m.reply, m.reply
            await m.ack_sync()
            info = await js.consumer_info(stream, "across")
            assert (info.ack_floor.stream_seq, info.num_ack_pending) == (1, 0), (domain, info)
            # A push consumer whose deliver subject is across the link.
            inbox = nc.new_inbox()
            psub = await nc.subscribe(inbox)
            await nc.flush()
            await js.add_consumer(stream, durable_name="pushed", deliver_subject=inbox,
                                  ack_policy=api.AckPolicy.EXPLICIT)
            p = await psub.next_msg(5)
            assert (p.subject, p.data) == (subject, data), (domain, p.subject)
            await p.ack()
    finally:
        await hub_nc.close()
        await leaf_nc.close()


@async_test(60)
async def test_the_hub_sources_a_stream_of_the_edge(nats_servers, server_factory, tmp_path):
    """The usual edge set-up: devices publish into a stream on the edge (Junction), and a
    stream in the cluster (nats-server) sources it through the edge's domain, with the push
    consumer, flow control and heartbeats that nats-server's sourcing uses across the link."""
    hub = jetstream_hub(nats_servers, tmp_path)
    leaf = jetstream_edge(server_factory, hub)
    hub_nc = await nats.connect(hub.url)
    leaf_nc = await nats.connect(leaf.url)
    try:
        async def domain_of():
            return (await hub_nc.jetstream(domain="edge").account_info()).domain
        await wait_until_async(domain_of, "edge")
        jl = leaf_nc.jetstream()
        await jl.add_stream(name="READINGS", subjects=["readings.>"])
        for i in range(5):
            await jl.publish(f"readings.t{i}", f"r{i}".encode())
        body = json.dumps({"name": "ALL", "sources": [{"name": "READINGS", "external": {"api": "$JS.edge.API"}}]})
        resp = json.loads((await hub_nc.request("$JS.API.STREAM.CREATE.ALL", body.encode(), timeout=5)).data)
        assert "error" not in resp, resp
        jh = hub_nc.jetstream()

        async def count():
            return (await jh.stream_info("ALL")).state.messages
        await wait_until_async(count, 5)
        # What the edge stores later follows, in order, with its subjects.
        for i in range(5, 8):
            await jl.publish(f"readings.t{i}", f"r{i}".encode())
        await wait_until_async(count, 8)
        got = [await jh.get_msg("ALL", seq) for seq in range(1, 9)]
        assert [(m.subject, m.data) for m in got] == [(f"readings.t{i}", f"r{i}".encode()) for i in range(8)]
    finally:
        await hub_nc.close()
        await leaf_nc.close()


@async_test(90)
async def test_the_edge_mirrors_and_sources_streams_of_the_hub(nats_servers, server_factory, tmp_path):
    """The other direction: a Junction stream mirrors (or sources, filtered) a cluster stream
    through the cluster's domain (`external: {api: "$JS.hub.API"}`), keeps up with what the
    cluster stores later, and after a restart of the edge goes on from where it was."""
    hub = jetstream_hub(nats_servers, tmp_path)
    config = leaf_config(hub, extra=f'jetstream {{ domain: edge, store_dir: "{tmp_path / "edge-js"}" }}')
    leaf = server_factory(config=config)
    wait_linked(leaf)
    hub_nc = await nats.connect(hub.url)
    leaf_nc = await nats.connect(leaf.url)
    external = {"api": "$JS.hub.API"}
    try:
        jh = hub_nc.jetstream()
        await jh.add_stream(name="CFG", subjects=["cfg.>"])
        for i in range(5):
            await jh.publish(f"cfg.k{i % 2}", f"v{i}".encode())
        jl = leaf_nc.jetstream()

        async def create(body):
            resp = json.loads((await leaf_nc.request(f"$JS.API.STREAM.CREATE.{body['name']}",
                                                     json.dumps(body).encode(), timeout=5)).data)
            assert "error" not in resp, resp

        await create({"name": "MIRROR", "mirror": {"name": "CFG", "external": external}})
        await create({"name": "K1", "subjects": ["local.>"],
                      "sources": [{"name": "CFG", "filter_subject": "cfg.k1", "external": external}]})

        async def counts():
            return ((await jl.stream_info("MIRROR")).state.messages, (await jl.stream_info("K1")).state.messages)
        await wait_until_async(counts, (5, 2))
        for i in range(5, 8):
            await jh.publish(f"cfg.k{i % 2}", f"v{i}".encode())
        await wait_until_async(counts, (8, 4))
        # A mirror keeps the cluster's sequences and subjects.
        m = await jl.get_msg("MIRROR", 8)
        assert (m.subject, m.data) == ("cfg.k1", b"v7")
        assert [(await jl.get_msg("K1", s)).data for s in (1, 2, 3, 4)] == [b"v1", b"v3", b"v5", b"v7"]
    finally:
        await leaf_nc.close()
    leaf.terminate()

    # What the cluster stores while the edge is down arrives once it is back, once.
    for i in range(8, 10):
        await jh.publish(f"cfg.k{i % 2}", f"v{i}".encode())
    leaf = server_factory(config=config)
    wait_linked(leaf)
    leaf_nc = await nats.connect(leaf.url)
    try:
        jl = leaf_nc.jetstream()
        await wait_until_async(counts, (10, 5), timeout=20)
        assert (await jl.get_msg("MIRROR", 10)).data == b"v9"
        assert (await jl.get_msg("K1", 5)).data == b"v9"
        await asyncio.sleep(1)
        assert await counts() == (10, 5)
        # The cluster's stream purged far past the end (nats-server then numbers on from
        # there): the mirror follows without keeping millions of empty slots.
        purge = json.dumps({"seq": 50_000_000}).encode()
        resp = json.loads((await hub_nc.request("$JS.API.STREAM.PURGE.CFG", purge, timeout=5)).data)
        assert resp.get("success"), resp
        assert (await jh.publish("cfg.k0", b"far")).seq == 50_000_000

        async def mirror_last():
            st = (await jl.stream_info("MIRROR")).state
            return (st.last_seq, st.messages)
        await wait_until_async(mirror_last, (50_000_000, 1), timeout=20)
        assert (await jl.get_msg("MIRROR", 50_000_000)).data == b"far"
    finally:
        await hub_nc.close()
        await leaf_nc.close()


async def wait_until_async(make, expected, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = await make()
            if last == expected:
                return
        except Exception as e:
            last = e
        assert time.monotonic() < deadline, f"never got {expected!r}, last {last!r}"
        await asyncio.sleep(0.1)


@async_test(60)
async def test_nats_server_and_junction_attach_to_a_junction_hub(nats_servers, server_factory):
    lport = free_port()
    hub = server_factory(config=f"""
accounts {{ EDGE {{ users: [ {{ user: e, password: e }} ] }} }}
leafnodes {{ port: {lport}, authorization {{ users: [
  {{ user: ns, password: nsp, account: EDGE }},
  {{ user: jl, password: jlp, account: EDGE }} ] }} }}
""")
    assert any(f"Listening for leafnode connections on" in line and str(lport) in line for line in hub.log)
    ns_leaf = nats_servers("nsleaf", f"""
leafnodes {{ remotes: [ {{ url: "nats://ns:nsp@127.0.0.1:{lport}" }} ] }}
""")
    j_leaf = server_factory(config=f"""
leafnodes {{ remotes: [ {{ url: "nats://jl:jlp@127.0.0.1:{lport}" }} ] }}
""")
    wrong = server_factory(config=f"""
leafnodes {{ reconnect: "100ms", remotes: [ {{ url: "nats://jl:nope@127.0.0.1:{lport}" }} ] }}
""")
    wait_linked(j_leaf)
    deadline = time.monotonic() + 10
    while leafz(hub)["leafnodes"] < 2:
        assert time.monotonic() < deadline, leafz(hub)
        await asyncio.sleep(0.05)
    z = leafz(hub)
    assert all(not link["is_spoke"] and link["account"] == "EDGE" for link in z["leafs"]), z
    await asyncio.sleep(0.5)
    await until_logged(wrong, "Authorization Violation")
    assert leafz(wrong)["leafnodes"] == 0

    on_hub = await nats.connect(hub.url, user="e", password="e")
    on_ns = await nats.connect(ns_leaf.url)
    on_j = await nats.connect(j_leaf.url)
    conns = (on_hub, on_ns, on_j)
    try:
        subs = {name: await nc.subscribe("x.>") for name, nc in zip(("hub", "ns", "j"), conns)}
        for nc in conns:
            await nc.flush()
        # Every side reaches every other, leaf to leaf through the Junction hub.
        for src_name, src in zip(("hub", "ns", "j"), conns):
            for dst_name, sub in subs.items():
                async def pub(src=src, src_name=src_name):
                    await src.publish(f"x.{src_name}", b"hi")
                await until_flows(pub, nats_probe(sub, f"x.{src_name}"),
                                  what=f"{src_name} to reach {dst_name}")
    finally:
        for nc in conns:
            await nc.close()


@async_test(60)
async def test_a_leaf_loop_is_detected_and_the_link_held_down(nats_servers, server_factory):
    j_port = free_port()
    n_port = free_port()
    j = server_factory(config=f"""
leafnodes {{ port: {j_port}, remotes: [ {{ url: "nats://127.0.0.1:{n_port}" }} ] }}
""")
    nats_servers("loopy", f"""
leafnodes {{ port: {n_port}, remotes: [ {{ url: "nats://127.0.0.1:{j_port}" }} ] }}
""")
    deadline = time.monotonic() + 10
    while not any("Leafnode loop detected" in line for line in j.log):
        assert time.monotonic() < deadline, j.log_text()
        await asyncio.sleep(0.05)
    line = next(line for line in j.log if "Leafnode loop detected" in line)
    assert "[ERR]" in line and "30s" in line
    # Held down: no new dial in the next second.
    before = sum("Leafnode connection created" in x and f":{n_port}" in x for x in j.log)
    await asyncio.sleep(1.0)
    after = sum("Leafnode connection created" in x and f":{n_port}" in x for x in j.log)
    assert after == before


@async_test(60)
async def test_tls_links_both_ways_and_a_wrong_authority_refused(nats_servers, server_factory):
    from conftest import REPO
    tls = REPO / "tests" / "fixtures" / "tls"
    ns_port = free_port()
    ns_hub = nats_servers("tlshub", f"""
leafnodes {{ listen: "127.0.0.1:{ns_port}",
  tls {{ cert_file: "{tls / 'server.pem'}", key_file: "{tls / 'server-key.pem'}" }} }}
""")
    j_port = free_port()
    # Junction dials the nats-server hub over TLS, and is itself a TLS hub.
    j = server_factory(config=f"""
leafnodes {{
  port: {j_port}
  tls {{ cert_file: "{tls / 'server.pem'}", key_file: "{tls / 'server-key.pem'}" }}
  remotes: [ {{ url: "tls://127.0.0.1:{ns_port}", tls {{ ca_file: "{tls / 'ca.pem'}" }} }} ]
}}
""")
    ns_leaf = nats_servers("tlsleaf", f"""
leafnodes {{ remotes: [ {{ url: "tls://localhost:{j_port}", tls {{ ca_file: "{tls / 'ca.pem'}" }} }} ] }}
""")
    rogue = server_factory(config=f"""
leafnodes {{ reconnect: "100ms", remotes: [ {{ url: "tls://127.0.0.1:{ns_port}",
  tls {{ ca_file: "{tls / 'rogue-ca.pem'}" }} }} ] }}
""")
    deadline = time.monotonic() + 10
    while leafz(j)["leafnodes"] < 2:
        assert time.monotonic() < deadline, (leafz(j), j.log_text())
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert leafz(rogue)["leafnodes"] == 0
    await until_logged(rogue, "TLS handshake", "[ERR]")

    top = await nats.connect(ns_hub.url)
    bottom = await nats.connect(ns_leaf.url)
    try:
        m = await crossing(bottom, top, "through.tls", b"two TLS links",
                           what="a message over two TLS links")
        assert m.data == b"two TLS links"
    finally:
        await top.close()
        await bottom.close()


@async_test(60)
async def test_nkey_and_creds_remotes_authenticate_to_nats_server(nats_servers, server_factory):
    """The hub checks the remote's signature of its nonce: an nkey user, and a user JWT from a
    .creds file (operator mode)."""
    from conftest import REPO
    fixtures = REPO / "tests" / "fixtures"
    alice_pub = (fixtures / "nkeys" / "nk-alice.pub").read_text().strip()
    alice_seed = (fixtures / "nkeys" / "nk-alice.nk").read_text().strip()
    nk_port = free_port()
    nk_hub = nats_servers("nkhub", f"""
accounts {{ NK {{ users: [ {{ nkey: {alice_pub} }} ] }} }}
leafnodes {{ listen: "127.0.0.1:{nk_port}" }}
""")
    shutil.copy(fixtures / "jwt" / "preload-inline.conf", nk_hub.config_path.parent / "preload-inline.conf")
    op_port = free_port()
    op_hub = nats_servers("ophub", f"""
include "./preload-inline.conf"
leafnodes {{ listen: "127.0.0.1:{op_port}" }}
""")
    leaf = server_factory(config=f"""
leafnodes {{ remotes: [
  {{ url: "nats://127.0.0.1:{nk_port}", nkey: "{alice_seed}" }},
  {{ url: "nats://127.0.0.1:{op_port}", credentials: "{fixtures / 'jwt' / 'bob.creds'}" }} ] }}
""")
    deadline = time.monotonic() + 10
    while leafz(leaf)["leafnodes"] < 2:
        assert time.monotonic() < deadline, (leafz(leaf), leaf.log_text())
        await asyncio.sleep(0.05)
    on_nk = await nats.connect(nk_hub.url, nkeys_seed_str=alice_seed)
    on_op = await nats.connect(op_hub.url, user_credentials=str(fixtures / "jwt" / "bob.creds"))
    local = await nats.connect(leaf.url)
    try:
        for hub_nc, subj in ((on_nk, "via.nkey"), (on_op, "via.creds")):
            m = await crossing(local, hub_nc, subj, b"signed")
            assert m.data == b"signed"
    finally:
        for nc in (on_nk, on_op, local):
            await nc.close()


@async_test(60)
async def test_accepted_leaf_nodes_are_held_to_the_servers_users_and_permissions(
        nats_servers, server_factory):
    """Without `leafnodes { authorization }` a leaf node logs in like a client: the server's
    users bind it to an account and their permissions hold on the link."""
    lport = free_port()
    hub = server_factory(config=f"""
accounts {{
  A {{ users: [ {{ user: leafy, password: lp,
                  permissions: {{ publish: "up.>", subscribe: "down.>" }} }},
               {{ user: ha, password: ha }} ] }}
}}
leafnodes {{ port: {lport} }}
""")
    good = nats_servers("goodleaf", f"""
leafnodes {{ remotes: [ {{ url: "nats://leafy:lp@127.0.0.1:{lport}" }} ] }}
""")
    nats_servers("badleaf", f"""
leafnodes {{ remotes: [ {{ url: "nats://leafy:wrong@127.0.0.1:{lport}" }} ] }}
""")
    nats_servers("anonleaf", f"""
leafnodes {{ remotes: [ {{ url: "nats://127.0.0.1:{lport}" }} ] }}
""")
    deadline = time.monotonic() + 10
    while leafz(hub)["leafnodes"] < 1:
        assert time.monotonic() < deadline, hub.log_text()
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    z = leafz(hub)
    assert [link["account"] for link in z["leafs"]] == ["A"], z
    assert sum("leafnode Authorization Violation" in line for line in hub.log) >= 2, hub.log_text()

    on_hub = await nats.connect(hub.url, user="ha", password="ha")
    on_leaf = await nats.connect(good.url)
    try:
        up = await on_hub.subscribe(">")
        await on_hub.flush()

        async def pub_up():
            await on_leaf.publish("up.1", b"allowed")
        m = await until_flows(pub_up, nats_probe(up, "up.1"))
        assert m.data == b"allowed"
        # Outside the user's publish permission: dropped at the hub, logged.
        await on_leaf.publish("side.1", b"denied")
        await on_leaf.publish("up.2", b"after")
        await on_leaf.flush()
        m = await up.next_msg(3)
        while m.subject == "up.1":
            m = await up.next_msg(3)
        assert m.subject == "up.2", f"{m.subject} passed the leaf user's publish permission"
        await until_logged(hub, "Publish Violation", "side.1")

        down = await on_leaf.subscribe("down.1")
        side = await on_leaf.subscribe("side.2")
        await on_leaf.flush()

        async def pub_down():
            await on_hub.publish("side.2", b"never")
            await on_hub.publish("down.1", b"allowed")
        m = await until_flows(pub_down, nats_probe(down))
        assert m.data == b"allowed"
        with pytest.raises(nats.errors.TimeoutError):
            await side.next_msg(0.5)
    finally:
        await on_hub.close()
        await on_leaf.close()
