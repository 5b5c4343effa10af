// Opens Junction's dashboard (the monitoring port's `/`) in headless Chromium and lets a test
// read it and use its tester.
//
//   node dashboard.mjs --url http://127.0.0.1:HTTP_PORT/ [--chromium /usr/bin/chromium]
//
// Prints one JSON object per line on stdout:
//   {"event":"ready"}                       the page drew its first figures
//   {"event":"figures", ...}                what the page shows (after {"cmd":"figures"})
//   {"event":"received","items":[...]}      the tester's received list
//   {"event":"screenshot","path":...}
//   {"event":"console"|"pageerror",...}
//   {"event":"error","message":...}         then exit 1
// Commands on stdin, one JSON object per line:
//   {"cmd":"figures"}
//   {"cmd":"subscribe","subject":"..."}     types the subject, clicks Subscribe, waits for it
//   {"cmd":"publish","subject":"...","payload":"..."}
//   {"cmd":"received"}
//   {"cmd":"screenshot","path":"..."}
//   {"cmd":"quit"}
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const url = arg("url");
const chromiumPath = arg("chromium", process.env.CHROMIUM_BIN || "/usr/bin/chromium");
const timeoutMs = Number(arg("timeout-ms", "20000"));
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

let browser;
async function finish(code) {
  try { if (browser) await browser.close(); } catch {}
  process.exit(code);
}

try {
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"],
    timeout: timeoutMs,
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.setDefaultTimeout(timeoutMs);
  page.on("console", (m) => emit({ event: "console", type: m.type(), text: m.text() }));
  page.on("pageerror", (e) => emit({ event: "pageerror", message: String(e) }));
  // The page must work offline: anything it asks of another origin fails the test.
  await page.route("**/*", (route) => {
    const u = new URL(route.request().url());
    if (u.hostname !== "127.0.0.1" && u.hostname !== "localhost") {
      emit({ event: "error", message: `the dashboard fetched ${u.href}` });
      return route.abort();
    }
    return route.continue();
  });
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("conn-total").textContent !== "-");
  emit({ event: "ready" });

  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const cmd = JSON.parse(line);
    if (cmd.cmd === "figures") {
      // Read in one turn of the page's event loop, so every figure comes from the same update.
      const figures = await page.evaluate(() => {
        const text = (id) => document.getElementById(id).textContent;
        const cells = (id) => [...document.querySelectorAll(`#${id} tr`)].map((r) => [...r.children].map((c) => c.textContent));
        return {
          connections: text("conn-total"),
          rate_in: text("rate-in"),
          rate_out: text("rate-out"),
          slow: text("slow"),
          mqtt_sessions: text("mqtt-sessions"),
          legend_msgs: text("legend-msgs"),
          protocols: cells("protocols"),
          accounts: cells("accounts"),
          busiest: cells("busiest"),
          closed: cells("closed"),
          leafs: cells("leafs"),
        };
      });
      emit({ event: "figures", ...figures });
    } else if (cmd.cmd === "subscribe") {
      await page.fill("#t-subject", cmd.subject);
      await page.click("#t-sub");
      await page.waitForFunction((s) => document.getElementById("t-status").textContent === `subscribed to ${s}`, cmd.subject);
      emit({ event: "subscribed", subject: cmd.subject });
    } else if (cmd.cmd === "publish") {
      await page.fill("#t-subject", cmd.subject);
      await page.fill("#t-payload", cmd.payload);
      await page.click("#t-pub");
      emit({ event: "published" });
    } else if (cmd.cmd === "received") {
      emit({ event: "received", items: await page.$$eval("#t-received li", (els) => els.map((e) => e.textContent)) });
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
