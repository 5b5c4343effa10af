// Junction WebSocket demo: nats.ws and mqtt.js against one Junction WebSocket listener.
//
// The page expects the two client libraries next to it (vendor/nats.js is nats.ws's
// esm/nats.js, vendor/mqtt.min.js is mqtt's dist/mqtt.min.js); tests/browser/run.mjs
// serves them from node_modules. Broker address: ?host=HOST&port=PORT (default: the
// page's host, port 8080, Junction's default WebSocket port).
import { connect, StringCodec } from "./vendor/nats.js";

const params = new URLSearchParams(location.search);
const host = params.get("host") || location.hostname || "127.0.0.1";
const port = params.get("port") || "8080";
const scheme = params.get("tls") === "1" ? "wss" : "ws";
const natsUrl = `${scheme}://${host}:${port}`;
const mqttUrl = `${scheme}://${host}:${port}/mqtt`;

const NATS_IN = "demo.to_browser";
const NATS_OUT = "demo.from_browser";
const MQTT_IN = "demo/to_browser_mqtt";
const MQTT_OUT = "demo/from_browser_mqtt";

const sc = StringCodec();
const $ = (id) => document.getElementById(id);
$("nats-url").textContent = natsUrl;
$("mqtt-url").textContent = mqttUrl;

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
    nc = await connect({ servers: natsUrl, name: "ws-demo", reconnect: false, timeout: 5000 });
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

window.demo = { publishNats, publishMqtt, ready: Promise.all([startNats(), startMqtt()]) };
