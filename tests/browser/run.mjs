// Opens examples/ws-demo as Junction itself serves it (http://HOST:HTTP_PORT/demo/) in headless
// Chromium (Debian's /usr/bin/chromium, through playwright-core), and lets a test drive it.
//
//   node run.mjs --url http://127.0.0.1:HTTP_PORT/demo/ [--chromium /usr/bin/chromium] [--timeout-ms N]
//
// The page loads nats.ws and mqtt.js from their pinned jsDelivr addresses; with no Internet here,
// the runner answers exactly those two requests from node_modules, after checking that the pinned
// versions are the installed ones. Any other request off the Junction server fails the run.
// It waits until both the NATS and the MQTT connection are up, and prints one JSON object per
// line on stdout:
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
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = path.join(here, "node_modules");

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const pageUrl = arg("url");
const chromiumPath = arg("chromium", process.env.CHROMIUM_BIN || "/usr/bin/chromium");
const timeoutMs = Number(arg("timeout-ms", "20000"));
if (!pageUrl) {
  console.error("usage: node run.mjs --url http://HOST:HTTP_PORT/demo/");
  process.exit(2);
}

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

async function installed(pkg) {
  return JSON.parse(await readFile(path.join(modules, pkg, "package.json"), "utf8")).version;
}
// The CDN addresses the page uses, answered from node_modules (same version, or the run fails).
const CDN = {
  [`https://cdn.jsdelivr.net/npm/nats.ws@${await installed("nats.ws")}/esm/nats.js`]:
    path.join(modules, "nats.ws", "esm", "nats.js"),
  [`https://cdn.jsdelivr.net/npm/mqtt@${await installed("mqtt")}/dist/mqtt.min.js`]:
    path.join(modules, "mqtt", "dist", "mqtt.min.js"),
};
const origin = new URL(pageUrl).origin;

let browser;
async function finish(code) {
  try { if (browser) await browser.close(); } catch {}
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
  await page.route("**/*", async (route) => {
    const url = route.request().url();
    const file = CDN[url];
    if (file) {
      const body = await readFile(file);
      return route.fulfill({
        status: 200,
        body,
        headers: { "content-type": "text/javascript; charset=utf-8", "access-control-allow-origin": "*" },
      });
    }
    const u = new URL(url);
    if (u.origin === origin || u.protocol === "ws:" || u.protocol === "wss:") return route.continue();
    emit({ event: "error", message: `the page fetched ${url}, which is neither Junction nor a pinned library` });
    return route.abort();
  });
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
