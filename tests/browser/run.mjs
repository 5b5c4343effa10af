// Runs examples/ws-demo in headless Chromium (Debian's /usr/bin/chromium, through
// playwright-core) against a Junction WebSocket listener, and lets a test drive it.
//
//   node run.mjs --host 127.0.0.1 --port WS_PORT [--chromium /usr/bin/chromium] [--screenshot FILE]
//
// It serves the demo page and the two client libraries from node_modules on a static
// HTTP server on 127.0.0.1 (random port), opens the page, waits until both the NATS
// and the MQTT connection are up, and prints one JSON object per line on stdout:
//   {"event":"ready","url":...}            both clients connected and subscribed
//   {"event":"status","nats":...,"mqtt":...} the status texts, when the page failed to connect
//   {"event":"published","via":"nats"|"mqtt","text":...}
//   {"event":"messages","received":[...],"sent":[...]}   the texts of the DOM lists
//   {"event":"console"|"pageerror",...}    what the page logged
//   {"event":"error","message":...}        then exit 1
// Commands, one JSON object per line on stdin:
//   {"cmd":"publish","via":"nats"|"mqtt","text":"..."}   types the text and clicks the button
//   {"cmd":"messages"}
//   {"cmd":"screenshot","path":"..."}
//   {"cmd":"quit"}
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "..", "..");
const demoDir = path.join(repo, "examples", "ws-demo");
const modules = path.join(here, "node_modules");

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const wsHost = arg("host", "127.0.0.1");
const wsPort = arg("port");
const chromiumPath = arg("chromium", process.env.CHROMIUM_BIN || "/usr/bin/chromium");
const timeoutMs = Number(arg("timeout-ms", "20000"));
if (!wsPort) {
  console.error("usage: node run.mjs --host HOST --port WS_PORT");
  process.exit(2);
}

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const FILES = {
  "/": [path.join(demoDir, "index.html"), "text/html; charset=utf-8"],
  "/index.html": [path.join(demoDir, "index.html"), "text/html; charset=utf-8"],
  "/demo.js": [path.join(demoDir, "demo.js"), "text/javascript; charset=utf-8"],
  "/vendor/nats.js": [path.join(modules, "nats.ws", "esm", "nats.js"), "text/javascript; charset=utf-8"],
  "/vendor/mqtt.min.js": [path.join(modules, "mqtt", "dist", "mqtt.min.js"), "text/javascript; charset=utf-8"],
};

const http = createServer(async (req, res) => {
  const pathname = new URL(req.url, "http://x").pathname;
  if (pathname === "/favicon.ico") {
    res.writeHead(204).end();
    return;
  }
  const entry = FILES[pathname];
  if (!entry) {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found");
    return;
  }
  try {
    const body = await readFile(entry[0]);
    res.writeHead(200, { "content-type": entry[1], "cache-control": "no-store" }).end(body);
  } catch (err) {
    res.writeHead(500, { "content-type": "text/plain" }).end(String(err));
  }
});
await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
const pageUrl = `http://127.0.0.1:${http.address().port}/?host=${encodeURIComponent(wsHost)}&port=${wsPort}`;

let browser;
async function finish(code) {
  try { if (browser) await browser.close(); } catch {}
  http.close();
  process.exit(code);
}

try {
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    timeout: timeoutMs,
  });
  const page = await browser.newPage();
  page.setDefaultTimeout(timeoutMs);
  page.on("console", (m) => emit({ event: "console", type: m.type(), text: m.text() }));
  page.on("pageerror", (e) => emit({ event: "pageerror", message: String(e) }));
  await page.goto(pageUrl);

  // Both statuses leave "connecting" (connected, or an error shown on the page).
  await page.waitForFunction(() =>
    ["nats", "mqtt"].every((w) => document.getElementById(`status-${w}`).dataset.state !== "connecting"));
  const status = await page.evaluate(() => ({
    nats: document.getElementById("status-nats").textContent,
    mqtt: document.getElementById("status-mqtt").textContent,
  }));
  if (status.nats !== "connected" || status.mqtt !== "connected") {
    emit({ event: "status", ...status });
    emit({ event: "error", message: `the page did not connect: NATS "${status.nats}", MQTT "${status.mqtt}"` });
    await finish(1);
  }
  emit({ event: "ready", url: pageUrl, version: browser.version() });

  const texts = (sel) => page.$$eval(sel, (els) => els.map((e) => e.textContent));
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const cmd = JSON.parse(line);
    if (cmd.cmd === "publish") {
      const before = (await texts("#sent li")).length;
      await page.fill("#text", cmd.text);
      await page.click(cmd.via === "mqtt" ? "#send-mqtt" : "#send-nats");
      // The page lists what it sent once the client library has handed it over
      // (NATS: after a flush; MQTT: after the PUBACK).
      await page.waitForFunction((n) => document.querySelectorAll("#sent li").length > n, before);
      emit({ event: "published", via: cmd.via, text: cmd.text });
    } else if (cmd.cmd === "messages") {
      emit({ event: "messages", received: await texts("#messages li"), sent: await texts("#sent li") });
    } else if (cmd.cmd === "screenshot") {
      await page.screenshot({ path: cmd.path, fullPage: true });
      emit({ event: "screenshot", path: cmd.path });
    } else if (cmd.cmd === "quit") {
      break;
    } else {
      emit({ event: "error", message: `unknown command ${line}` });
    }
  }
  await finish(0);
} catch (err) {
  emit({ event: "error", message: String(err && err.stack ? err.stack : err) });
  await finish(1);
}
