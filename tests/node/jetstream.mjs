// nats.js (the `nats` package, unmodified) against a server's JetStream, the way a Node
// application uses it: streams and their limits, publishing with the headers the client sets,
// pull consumers (fetch, consume, next), ordered consumers, key-value and object store, and
// the errors the client turns into exceptions. Every step checks what the application would
// see; the first failed check ends the run.
//
//   node jetstream.mjs --port N [--step NAME]
//
// Prints one JSON object per line: {"step": NAME, "ok": true, ...facts} for each step that
// passed, then {"done": true}; on a failure {"step": NAME, "ok": false, "error": ...} and exit 1.
// Driven by tests/python/test_jetstream_natsjs.py, against Junction and nats-server alike.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { failure, run, take, until } from "./common.mjs";
import {
  AckPolicy,
  DeliverPolicy,
  RetentionPolicy,
  StorageType,
  StringCodec,
  connect,
  consumerOpts,
  createInbox,
  headers,
  nanos,
} from "nats";

const sc = StringCodec();

/** The API error of a rejected request: nats.js v2 keeps the server's code and err_code. */
const apiError = (promise) =>
  failure(promise, (err) => ({ message: err.message, code: err.api_error?.code, err_code: err.api_error?.err_code }));

const steps = {
  async account(nc) {
    const jsm = await nc.jetstreamManager();
    const info = await jsm.getAccountInfo();
    assert.equal(typeof info.limits.max_memory, "number");
    assert.equal(info.streams, 0);
    return { limits: Object.keys(info.limits).sort() };
  },

  async streams(nc) {
    const jsm = await nc.jetstreamManager();
    const si = await jsm.streams.add({
      name: "ORDERS",
      subjects: ["orders.>"],
      storage: StorageType.File,
      max_msgs_per_subject: 3,
      duplicate_window: nanos(60_000),
    });
    assert.equal(si.config.name, "ORDERS");
    assert.equal(si.config.retention, RetentionPolicy.Limits);
    assert.equal(si.state.messages, 0);
    // The same config again is accepted; a different one under the same name is not.
    await jsm.streams.add({ name: "ORDERS", subjects: ["orders.>"], storage: StorageType.File,
      max_msgs_per_subject: 3, duplicate_window: nanos(60_000) });
    const clash = await apiError(jsm.streams.add({ name: "ORDERS", subjects: ["other.>"] }));
    assert.equal(clash.err_code, 10058, JSON.stringify(clash));
    const overlap = await apiError(jsm.streams.add({ name: "MORE", subjects: ["orders.eu.>"] }));
    assert.equal(overlap.err_code, 10065, JSON.stringify(overlap));
    const missing = await apiError(jsm.streams.info("NOPE"));
    assert.equal(missing.code, 404);
    assert.equal(missing.err_code, 10059);

    const js = nc.jetstream();
    const first = await js.publish("orders.eu.1", sc.encode("one"), { msgID: "m-1" });
    assert.deepEqual([first.stream, first.seq, first.duplicate], ["ORDERS", 1, false]);
    const again = await js.publish("orders.eu.1", sc.encode("one"), { msgID: "m-1" });
    assert.deepEqual([again.seq, again.duplicate], [1, true]);
    const wrong = await apiError(js.publish("orders.eu.1", sc.encode("x"), { expect: { lastSequence: 7 } }));
    assert.match(wrong.message, /wrong last sequence: 1/);
    const h = headers();
    h.set("Trace", "abc");
    await js.publish("orders.eu.1", sc.encode("two"), { headers: h, expect: { lastSequence: 1, streamName: "ORDERS" } });
    for (let i = 0; i < 5; i++) await js.publish("orders.us.1", sc.encode(`us-${i}`));
    // max_msgs_per_subject 3: the first two of orders.us.1 are gone.
    const info = await jsm.streams.info("ORDERS", { subjects_filter: ">" });
    assert.equal(info.state.messages, 5);
    assert.deepEqual(info.state.subjects, { "orders.eu.1": 2, "orders.us.1": 3 });
    assert.equal(info.state.first_seq, 1);
    assert.equal(info.state.last_seq, 7);
    const m = await jsm.streams.getMessage("ORDERS", { last_by_subj: "orders.eu.1" });
    assert.equal(m.seq, 2);
    assert.equal(m.header.get("Trace"), "abc");
    assert.equal(sc.decode(m.data), "two");
    assert.equal(await jsm.streams.deleteMessage("ORDERS", 1), true);
    const names = [];
    for await (const n of jsm.streams.names()) names.push(n);
    assert.deepEqual(names, ["ORDERS"]);
    const purged = await jsm.streams.purge("ORDERS", { filter: "orders.us.>", keep: 1 });
    assert.equal(purged.purged, 2);
    return { last_seq: info.state.last_seq };
  },

  async pull(nc) {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: "JOBS", subjects: ["jobs.*"], retention: RetentionPolicy.Workqueue });
    const js = nc.jetstream();
    for (let i = 1; i <= 120; i++) await js.publish(`jobs.${i % 3}`, sc.encode(`${i}`));
    await jsm.consumers.add("JOBS", { durable_name: "worker", ack_policy: AckPolicy.Explicit, max_ack_pending: 500 });
    const c = await js.consumers.get("JOBS", "worker");
    // fetch: a batch, every message acknowledged.
    const batch = await c.fetch({ max_messages: 50, expires: 3000 });
    const got = [];
    for await (const m of batch) {
      got.push(Number(sc.decode(m.data)));
      m.ack();
    }
    assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => i + 1));
    // next: one at a time, with a double ack (the server's reply confirms it).
    const one = await c.next({ expires: 3000 });
    assert.equal(sc.decode(one.data), "51");
    assert.equal(one.info.deliveryCount, 1);
    assert.equal(await one.ackAck(), true);
    // consume: the rest, one nak'd once and redelivered.
    const rest = [];
    let nakd = false;
    const iter = await c.consume({ max_messages: 32 });
    for await (const m of iter) {
      const n = Number(sc.decode(m.data));
      if (n === 60 && !nakd) {
        nakd = true;
        m.nak();
        continue;
      }
      rest.push(n);
      if (n === 60) assert.equal(m.info.redelivered, true);
      m.ack();
      if (rest.length === 69) break;
    }
    assert.deepEqual([...rest].sort((a, b) => a - b), Array.from({ length: 69 }, (_, i) => i + 52));
    // Workqueue retention: everything acknowledged is gone; the consumer's counts say so.
    const info = await until(() => c.info(), (i) => i.num_ack_pending === 0);
    assert.equal(info.num_pending, 0);
    assert.equal(info.num_ack_pending, 0);
    assert.equal(info.delivered.stream_seq, 120);
    assert.equal(info.ack_floor.stream_seq, 120);
    const si = await jsm.streams.info("JOBS");
    assert.equal(si.state.messages, 0);
    // An empty stream: next() ends with null once its request expires.
    assert.equal(await c.next({ expires: 1000 }), null);
    const gone = await apiError(js.consumers.get("JOBS", "nobody"));
    assert.equal(gone.err_code, 10014);
    return { redelivered: nakd };
  },

  async ordered(nc) {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: "FEED", subjects: ["feed.>"], storage: StorageType.Memory });
    const js = nc.jetstream();
    for (let i = 0; i < 30; i++) await js.publish(`feed.${i % 2 ? "a" : "b"}`, sc.encode(`${i}`));
    const oc = await js.consumers.get("FEED", { filterSubjects: "feed.a" });
    const iter = await oc.consume();
    const seen = await take(iter, 15);
    assert.deepEqual(seen.map((m) => sc.decode(m.data)), Array.from({ length: 15 }, (_, i) => `${2 * i + 1}`));
    // Live messages follow.
    await js.publish("feed.a", sc.encode("live"));
    const [live] = await take(iter, 1);
    assert.equal(sc.decode(live.data), "live");
    iter.stop();
    const last = await js.consumers.get("FEED", { deliver_policy: DeliverPolicy.Last });
    const m = await last.next({ expires: 2000 });
    assert.equal(sc.decode(m.data), "live");
    return { ordered: seen.length };
  },

  async push(nc) {
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: "EVENTS", subjects: ["events.>"] });
    const js = nc.jetstream();
    for (let i = 0; i < 20; i++) await js.publish(`events.${i % 4}`, sc.encode(`${i}`));
    // A durable push consumer with flow control and heartbeats, acknowledging explicitly.
    const opts = consumerOpts();
    opts.durable("pusher");
    opts.deliverTo(createInbox());
    opts.ackExplicit();
    opts.idleHeartbeat(500);
    opts.flowControl();
    const sub = await js.subscribe("events.>", opts);
    const got = await take(sub, 20);
    assert.deepEqual(got.map((m) => sc.decode(m.data)), Array.from({ length: 20 }, (_, i) => `${i}`));
    for (const m of got) m.ack();
    const info = await until(() => jsm.consumers.info("EVENTS", "pusher"), (i) => i.num_ack_pending === 0);
    assert.equal(info.num_ack_pending, 0);
    assert.equal(info.config.flow_control, true);
    sub.unsubscribe();
    // An ordered push consumer on one subject.
    const o = consumerOpts();
    o.orderedConsumer();
    o.filterSubject("events.1");
    const osub = await js.subscribe("events.1", o);
    const seen = await take(osub, 5);
    assert.deepEqual(seen.map((m) => sc.decode(m.data)), ["1", "5", "9", "13", "17"]);
    assert.deepEqual(seen.map((m) => m.info.streamSequence), [2, 6, 10, 14, 18]);
    osub.unsubscribe();
    const consumers = [];
    for await (const c of jsm.consumers.list("EVENTS")) consumers.push(c.name);
    assert.ok(consumers.includes("pusher"), JSON.stringify(consumers));
    // No stream captures the subject: the client says there is none.
    await assert.rejects(js.publish("nowhere.x", sc.encode("lost")), (err) => err.code === "503");
    return { consumers: consumers.length };
  },

  async kv(nc) {
    const js = nc.jetstream();
    const kv = await js.views.kv("config", { history: 5 });
    const r1 = await kv.put("app.color", sc.encode("red"));
    const r2 = await kv.put("app.color", sc.encode("blue"));
    assert.equal(r2, r1 + 1);
    const e = await kv.get("app.color");
    assert.deepEqual([sc.decode(e.value), e.revision, e.operation], ["blue", r2, "PUT"]);
    // Optimistic concurrency: update at the current revision only; create only when absent.
    const r3 = await kv.update("app.color", sc.encode("green"), r2);
    await assert.rejects(kv.update("app.color", sc.encode("late"), r2), /wrong last sequence/);
    await assert.rejects(kv.create("app.color", sc.encode("again")), /wrong last sequence|key exists/);
    await kv.create("app.size", sc.encode("L"));
    // Watch: current values first, then what changes.
    const watch = await kv.watch({ key: "app.>" });
    const initial = await take(watch, 2);
    assert.deepEqual(initial.map((x) => x.key).sort(), ["app.color", "app.size"]);
    await kv.put("app.size", sc.encode("XL"));
    const [change] = await take(watch, 1);
    assert.deepEqual([change.key, sc.decode(change.value)], ["app.size", "XL"]);
    watch.stop();
    const hist = await take(await kv.history({ key: "app.color" }), 3);
    assert.deepEqual(hist.map((x) => sc.decode(x.value)), ["red", "blue", "green"]);
    await kv.delete("app.color");
    const deleted = await kv.get("app.color");
    assert.equal(deleted.operation, "DEL");
    const keys = await take(await kv.keys(), 10, 3000);
    assert.deepEqual(keys, ["app.size"]);
    await kv.purge("app.size");
    assert.deepEqual(await take(await kv.keys(), 10, 3000), []);
    const status = await kv.status();
    assert.equal(status.history, 5);
    assert.equal(status.bucket, "config");
    return { revision: r3 };
  },

  async objects(nc) {
    const js = nc.jetstream();
    const os = await js.views.os("files");
    const data = randomBytes(3 * 1024 * 1024 + 123);
    const sha = createHash("sha256").update(data).digest("base64url");
    const info = await os.putBlob({ name: "blob.bin", description: "3 MB" }, data);
    assert.equal(info.size, data.length);
    assert.ok(info.chunks > 1, `chunks ${info.chunks}`);
    const back = await os.getBlob("blob.bin");
    assert.equal(back.length, data.length);
    assert.equal(createHash("sha256").update(back).digest("base64url"), sha);
    await os.putBlob({ name: "small.txt" }, sc.encode("hello"));
    const list = (await os.list()).map((o) => o.name).sort();
    assert.deepEqual(list, ["blob.bin", "small.txt"]);
    await os.delete("blob.bin");
    assert.equal(await os.get("blob.bin"), null);
    assert.deepEqual((await os.list()).map((o) => o.name), ["small.txt"]);
    const status = await os.status();
    assert.equal(status.bucket, "files");
    return { size: info.size, chunks: info.chunks };
  },
};

await run(connect, steps);
