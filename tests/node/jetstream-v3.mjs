// nats.js v3 (@nats-io/transport-node, @nats-io/jetstream, @nats-io/kv and @nats-io/obj,
// unmodified: the current nats.js, written for nats-server 2.10 and later) against a server's
// JetStream, the same ground as jetstream.mjs with v3's API: streams and their errors, pull
// consumers (fetch, next, consume), ordered pull and push consumers, a push durable, key-value
// through Kvm and object store through Objm. Every step checks what the application would see.
//
//   node jetstream-v3.mjs --port N [--step NAME]
//
// Output and exit code as jetstream.mjs (see common.mjs). Driven by
// tests/python/test_jetstream_natsjs.py.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { connect, createInbox, headers, nanos } from "@nats-io/transport-node";
import {
  AckPolicy,
  DeliverPolicy,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Objm } from "@nats-io/obj";
import { failure, run, take, until } from "./common.mjs";

/** The API error of a rejected request: v3's JetStreamApiError keeps the server's answer. */
const apiError = (promise) =>
  failure(promise, (err) => {
    const api = typeof err.apiError === "function" ? err.apiError() : {};
    return { message: err.message, code: api.code, err_code: api.err_code, name: err.name };
  });

const steps = {
  async account(nc) {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.getAccountInfo();
    assert.equal(typeof info.limits.max_memory, "number");
    assert.equal(info.streams, 0);
    return { api: info.api?.level ?? null };
  },

  async streams(nc) {
    const jsm = await jetstreamManager(nc);
    const si = await jsm.streams.add({ name: "ORDERS", subjects: ["orders.>"], storage: StorageType.File });
    assert.equal(si.config.retention, RetentionPolicy.Limits);
    const clash = await apiError(jsm.streams.add({ name: "ORDERS", subjects: ["other.>"] }));
    assert.equal(clash.err_code, 10058, JSON.stringify(clash));
    const missing = await apiError(jsm.streams.info("NOPE"));
    assert.equal(missing.err_code, 10059, JSON.stringify(missing));
    assert.equal(missing.name, "StreamNotFoundError");
    const js = jetstream(nc);
    const first = await js.publish("orders.eu.1", "one", { msgID: "m-1" });
    assert.deepEqual([first.stream, first.seq, first.duplicate], ["ORDERS", 1, false]);
    const again = await js.publish("orders.eu.1", "one", { msgID: "m-1" });
    assert.deepEqual([again.seq, again.duplicate], [1, true]);
    const wrong = await apiError(js.publish("orders.eu.1", "x", { expect: { lastSequence: 7 } }));
    assert.equal(wrong.err_code, 10071, JSON.stringify(wrong));
    const h = headers();
    h.set("Trace", "abc");
    await js.publish("orders.eu.1", "two", { headers: h, expect: { lastSubjectSequence: 1 } });
    const m = await jsm.streams.getMessage("ORDERS", { last_by_subj: "orders.eu.1" });
    assert.deepEqual([m.seq, m.string(), m.header.get("Trace")], [2, "two", "abc"]);
    const stream = await js.streams.get("ORDERS");
    const info = await stream.info(false, { subjects_filter: ">" });
    assert.deepEqual(info.state.subjects, { "orders.eu.1": 2 });
    return { last_seq: info.state.last_seq };
  },

  async pull(nc) {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "JOBS", subjects: ["jobs.*"], retention: RetentionPolicy.Workqueue });
    const js = jetstream(nc);
    for (let i = 1; i <= 60; i++) await js.publish(`jobs.${i % 3}`, `${i}`);
    await jsm.consumers.add("JOBS", { durable_name: "worker", ack_policy: AckPolicy.Explicit });
    const c = await js.consumers.get("JOBS", "worker");
    const got = [];
    for await (const m of await c.fetch({ max_messages: 30, expires: 3000 })) {
      got.push(Number(m.string()));
      m.ack();
    }
    assert.deepEqual(got, Array.from({ length: 30 }, (_, i) => i + 1));
    const one = await c.next({ expires: 3000 });
    assert.equal(one.string(), "31");
    assert.equal(await one.ackAck(), true);
    const rest = [];
    const iter = await c.consume({ max_messages: 16 });
    for await (const m of iter) {
      rest.push(Number(m.string()));
      m.ack();
      if (rest.length === 29) break;
    }
    assert.deepEqual(rest, Array.from({ length: 29 }, (_, i) => i + 32));
    const info = await until(() => c.info(), (i) => i.num_ack_pending === 0);
    assert.deepEqual([info.num_pending, info.delivered.stream_seq, info.ack_floor.stream_seq], [0, 60, 60]);
    assert.equal((await jsm.streams.info("JOBS")).state.messages, 0);
    assert.equal(await c.next({ expires: 1000 }), null);
    return { consumed: got.length + 1 + rest.length };
  },

  async ordered(nc) {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "FEED", subjects: ["feed.>"], storage: StorageType.Memory });
    const js = jetstream(nc);
    for (let i = 0; i < 30; i++) await js.publish(`feed.${i % 2 ? "a" : "b"}`, `${i}`);
    // v3 asks for a list of filters (filter_subjects, nats-server 2.10).
    const oc = await js.consumers.get("FEED", { filter_subjects: ["feed.a"] });
    const iter = await oc.consume();
    const seen = await take(iter, 15);
    assert.deepEqual(seen.map((m) => m.string()), Array.from({ length: 15 }, (_, i) => `${2 * i + 1}`));
    await js.publish("feed.a", "live");
    const [live] = await take(iter, 1);
    assert.equal(live.string(), "live");
    iter.stop();
    const last = await js.consumers.get("FEED", { deliver_policy: DeliverPolicy.Last });
    assert.equal((await last.next({ expires: 2000 })).string(), "live");
    return { ordered: seen.length };
  },

  async push(nc) {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "EVENTS", subjects: ["events.>"] });
    const js = jetstream(nc);
    for (let i = 0; i < 20; i++) await js.publish(`events.${i % 4}`, `${i}`);
    await jsm.consumers.add("EVENTS", {
      durable_name: "pusher",
      deliver_subject: createInbox(),
      ack_policy: AckPolicy.Explicit,
      idle_heartbeat: nanos(500),
      flow_control: true,
    });
    const pc = await js.consumers.getPushConsumer("EVENTS", "pusher");
    const msgs = await pc.consume();
    const got = await take(msgs, 20);
    assert.deepEqual(got.map((m) => m.string()), Array.from({ length: 20 }, (_, i) => `${i}`));
    for (const m of got) m.ack();
    const info = await until(() => jsm.consumers.info("EVENTS", "pusher"), (i) => i.num_ack_pending === 0);
    assert.equal(info.num_ack_pending, 0);
    msgs.stop();
    const opc = await js.consumers.getPushConsumer("EVENTS", { filter_subjects: ["events.1"] });
    const omsgs = await opc.consume();
    const seen = await take(omsgs, 5);
    assert.deepEqual(seen.map((m) => m.info.streamSequence), [2, 6, 10, 14, 18]);
    omsgs.stop();
    return { pushed: got.length };
  },

  async kv(nc) {
    const kvm = new Kvm(nc);
    const kv = await kvm.create("config", { history: 5 });
    const r1 = await kv.put("app.color", "red");
    const r2 = await kv.put("app.color", "blue");
    assert.equal(r2, r1 + 1);
    const e = await kv.get("app.color");
    assert.deepEqual([e.string(), e.revision, e.operation], ["blue", r2, "PUT"]);
    await kv.update("app.color", "green", r2);
    await assert.rejects(kv.update("app.color", "late", r2));
    await assert.rejects(kv.create("app.color", "again"));
    await kv.create("app.size", "L");
    const watch = await kv.watch({ key: "app.>" });
    const initial = await take(watch, 2);
    assert.deepEqual(initial.map((x) => x.key).sort(), ["app.color", "app.size"]);
    await kv.put("app.size", "XL");
    const [change] = await take(watch, 1);
    assert.deepEqual([change.key, change.string()], ["app.size", "XL"]);
    watch.stop();
    const hist = await take(await kv.history({ key: "app.color" }), 3);
    assert.deepEqual(hist.map((x) => x.string()), ["red", "blue", "green"]);
    await kv.delete("app.color");
    assert.equal((await kv.get("app.color")).operation, "DEL");
    assert.deepEqual(await take(await kv.keys(), 10, 3000), ["app.size"]);
    await kv.purge("app.size");
    assert.deepEqual(await take(await kv.keys(), 10, 3000), []);
    const status = await kv.status();
    assert.deepEqual([status.bucket, status.history], ["config", 5]);
    const buckets = [];
    for await (const s of kvm.list()) buckets.push(s.bucket);
    assert.deepEqual(buckets, ["config"]);
    return { buckets: buckets.length };
  },

  async objects(nc) {
    const objm = new Objm(nc);
    const os = await objm.create("files");
    const data = randomBytes(3 * 1024 * 1024 + 123);
    const sha = createHash("sha256").update(data).digest("base64url");
    const info = await os.putBlob({ name: "blob.bin" }, data);
    assert.equal(info.size, data.length);
    const back = await os.getBlob("blob.bin");
    assert.equal(createHash("sha256").update(back).digest("base64url"), sha);
    await os.putBlob({ name: "small.txt" }, new TextEncoder().encode("hello"));
    assert.deepEqual((await os.list()).map((o) => o.name).sort(), ["blob.bin", "small.txt"]);
    await os.delete("blob.bin");
    assert.equal(await os.get("blob.bin"), null);
    return { size: info.size, chunks: info.chunks };
  },
};

await run(connect, steps);
