// Junction WebSocket demo: nats.ws and mqtt.js against one Junction WebSocket listener.
//
// Junction serves this page at /demo/ on its monitoring port (8222 by default). The page asks
// that same server where its WebSocket listener is (/api/dashboard) unless ?host=HOST&port=PORT
// (and ?tls=1) name one. The two client libraries come from their pinned versions on jsDelivr;
// to use copies of your own, pass ?nats_js=URL&mqtt_js=URL.

const NATS_WS_VERSION = "1.30.3";
const MQTT_JS_VERSION = "5.16.0";

const params = new URLSearchParams(location.search);
const natsLib = params.get("nats_js") || `https://cdn.jsdelivr.net/npm/nats.ws@${NATS_WS_VERSION}/esm/nats.js`;
const mqttLib = params.get("mqtt_js") || `https://cdn.jsdelivr.net/npm/mqtt@${MQTT_JS_VERSION}/dist/mqtt.min.js`;

const NATS_IN = "demo.to_browser";
const NATS_OUT = "demo.from_browser";
const MQTT_IN = "demo/to_browser_mqtt";
const MQTT_OUT = "demo/from_browser_mqtt";

const $ = (id) => document.getElementById(id);
let nats = null; // the nats.ws module
let sc = null;
let natsUrl = "";
let mqttUrl = "";

function setStatus(which, state, detail) {
  const el = $(`status-${which}`);
  el.dataset.state = state;
  el.textContent = detail ? `${state}: ${detail}` : state;
}

function show(listId, via, where, text) {
  const li = document.createElement("li");
  li.className = "msg";
  li.dataset.via = via;
  li.dataset.where = where;
  li.textContent = `${via} ${where}: ${text}`;
  $(listId).appendChild(li);
}

let nc = null;
let mc = null;

async function startNats() {
  try {
    nc = await nats.connect({ servers: natsUrl, name: "ws-demo", reconnect: false, timeout: 5000 });
    const sub = nc.subscribe(NATS_IN);
    (async () => {
      for await (const m of sub) show("messages", "NATS", m.subject, sc.decode(m.data));
    })();
    await nc.flush(); // the SUB has reached the server
    setStatus("nats", "connected");
    nc.closed().then((err) => setStatus("nats", "closed", err ? String(err) : ""));
  } catch (err) {
    setStatus("nats", "error", String(err && err.message ? err.message : err));
  }
}

function startMqtt() {
  return new Promise((resolve) => {
    mc = mqtt.connect(mqttUrl, {
      clientId: `ws-demo-${Math.random().toString(16).slice(2, 10)}`,
      protocolVersion: 5,
      reconnectPeriod: 0,
      connectTimeout: 5000,
    });
    mc.on("message", (topic, payload) => show("messages", "MQTT", topic, new TextDecoder().decode(payload)));
    mc.on("error", (err) => { setStatus("mqtt", "error", String(err && err.message ? err.message : err)); resolve(); });
    mc.on("close", () => {
      const state = $("status-mqtt").dataset.state;
      if (state === "connected") setStatus("mqtt", "closed");
      else if (state === "connecting") { setStatus("mqtt", "error", "connection closed"); resolve(); }
    });
    mc.on("connect", () => {
      mc.subscribe(MQTT_IN, { qos: 1 }, (err) => {
        if (err) setStatus("mqtt", "error", String(err.message || err));
        else setStatus("mqtt", "connected");
        resolve();
      });
    });
  });
}

async function publishNats(text) {
  if (!nc) throw new Error("NATS is not connected");
  nc.publish(NATS_OUT, sc.encode(text));
  await nc.flush();
  show("sent", "NATS", NATS_OUT, text);
}

function publishMqtt(text) {
  return new Promise((resolve, reject) => {
    if (!mc || !mc.connected) return reject(new Error("MQTT is not connected"));
    mc.publish(MQTT_OUT, text, { qos: 1 }, (err) => {
      if (err) return reject(err);
      show("sent", "MQTT", MQTT_OUT, text);
      resolve();
    });
  });
}

$("send-nats").addEventListener("click", () => publishNats($("text").value).catch((e) => setStatus("nats", "error", e.message)));
$("send-mqtt").addEventListener("click", () => publishMqtt($("text").value).catch((e) => setStatus("mqtt", "error", e.message)));

// Where the WebSocket listener is: the query string, else the server that served this page.
async function findBroker() {
  const host = params.get("host") || location.hostname || "127.0.0.1";
  let port = params.get("port");
  let scheme = params.get("tls") === "1" ? "wss" : "ws";
  if (!port) {
    const resp = await fetch("/api/dashboard", { cache: "no-store" });
    if (!resp.ok) throw new Error(`/api/dashboard: HTTP ${resp.status}`);
    const ws = (await resp.json()).websocket;
    if (!ws) throw new Error("the server's WebSocket listener is off (websocket { port } in the config)");
    port = String(ws.port);
    scheme = ws.scheme || "ws";
  }
  natsUrl = `${scheme}://${host}:${port}`;
  mqttUrl = `${scheme}://${host}:${port}/mqtt`;
  $("nats-url").textContent = natsUrl;
  $("mqtt-url").textContent = mqttUrl;
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const el = document.createElement("script");
    el.src = src;
    el.onload = resolve;
    el.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.appendChild(el);
  });
}

async function start() {
  try {
    await findBroker();
  } catch (err) {
    const why = String(err && err.message ? err.message : err);
    setStatus("nats", "error", why);
    setStatus("mqtt", "error", why);
    return;
  }
  try {
    [nats] = await Promise.all([import(natsLib), loadScript(mqttLib)]);
    sc = nats.StringCodec();
    setStatus("libs", "connected", "loaded");
  } catch (err) {
    const why = String(err && err.message ? err.message : err);
    setStatus("libs", "error", why);
    setStatus("nats", "error", `nats.ws: ${why}`);
    setStatus("mqtt", "error", `mqtt.js: ${why}`);
    return;
  }
  await Promise.all([startNats(), startMqtt()]);
}

window.demo = { publishNats, publishMqtt, ready: start() };
