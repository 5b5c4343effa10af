// What the nats.js scenarios share: arguments, the JSON lines they print, reading the client's
// iterators with a deadline, the API error of a rejected request, and the run of the steps.
import assert from "node:assert/strict";

export function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

export const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const readers = new WeakMap();
/** Collects what an iterator of the client yields until `n` items or `ms` pass. The client's
 * iterators can be iterated once only, so each keeps one reader across calls. */
export async function take(iter, n, ms = 5000) {
  if (!readers.has(iter)) readers.set(iter, iter[Symbol.asyncIterator]());
  const reader = readers.get(iter);
  const out = [];
  const deadline = Date.now() + ms;
  while (out.length < n) {
    let timer;
    const timeout = new Promise((r) => (timer = setTimeout(() => r({ timeout: true }), Math.max(0, deadline - Date.now()))));
    const next = await Promise.race([reader.next(), timeout]);
    clearTimeout(timer);
    if (next.timeout || next.done) break;
    out.push(next.value);
  }
  return out;
}

/** Runs what a rejected request throws through `describe` (the client's error to
 * `{message, code, err_code}`); fails when the request succeeds. */
export async function failure(promise, describe) {
  try {
    await promise;
  } catch (err) {
    return describe(err);
  }
  assert.fail("expected the request to fail");
}

/** Polls `get` until `done` holds of what it returns (at most 50 times, 50 ms apart). */
export async function until(get, done) {
  let value;
  for (let i = 0; i < 50; i++) {
    value = await get();
    if (done(value)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return value;
}

/** Connects with `connect`, runs the steps (only `--step NAME` when given) and exits: 0 when
 * every step passed, 1 at the first that failed. */
export async function run(connect, steps) {
  const port = Number(arg("port"));
  const only = arg("step");
  if (!port) {
    console.error("usage: node SCRIPT --port N [--step NAME]");
    process.exit(2);
  }
  let nc;
  let current = "connect";
  try {
    nc = await connect({ servers: `127.0.0.1:${port}`, timeout: 5000 });
    for (const [name, step] of Object.entries(steps)) {
      if (only && only !== name) continue;
      current = name;
      const facts = await step(nc);
      emit({ step: name, ok: true, ...facts });
    }
    await nc.drain();
    emit({ done: true });
    process.exit(0);
  } catch (err) {
    emit({ step: current, ok: false, error: String(err && err.stack ? err.stack : err) });
    process.exit(1);
  }
}
