// The gateway's live status page: one Server-Sent Event per second from /events, drawn with
// textContent only (device data comes off the radio: never parsed as HTML).
"use strict";

const HISTORY = 120;               // sparkline points: two minutes at one event a second
const history = { rate: [], queue: [] };
let last = null;                   // the previous event, for the uplink rate

const $ = (id) => document.getElementById(id);
const text = (id, v) => { $(id).textContent = v; };

function ago(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s.toFixed(0) + " s ago";
  if (s < 3600) return (s / 60).toFixed(0) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  return n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB"
    : (n / 1048576).toFixed(1) + " MiB";
}

function spark(id, values) {
  const max = Math.max(1, ...values);
  const step = 120 / (HISTORY - 1);
  const pts = values.map((v, i) =>
    ((HISTORY - values.length + i) * step).toFixed(1) + "," + (29 - 28 * v / max).toFixed(1));
  $(id).querySelector("polyline").setAttribute("points", pts.join(" "));
  $(id).dataset.points = values.length;
  $(id).dataset.last = values.length ? values[values.length - 1] : "";
}

function push(series, v) {
  series.push(v);
  if (series.length > HISTORY) series.shift();
}

function rows(tableId, items, cells) {
  const body = $(tableId).querySelector("tbody");
  if (items.length === 0) {
    const td = document.createElement("td");
    td.colSpan = $(tableId).querySelectorAll("th").length;
    td.textContent = "none";
    td.className = "none";
    const tr = document.createElement("tr");
    tr.appendChild(td);
    body.replaceChildren(tr);
    return;
  }
  body.replaceChildren(...items.map((item) => {
    const tr = document.createElement("tr");
    for (const [value, cls] of cells(item)) {
      const td = document.createElement("td");
      td.textContent = value === null || value === undefined ? "–" : String(value);
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    return tr;
  }));
}

function render(v) {
  const t = v.totals, q = v.queue, m = v.mqtt;
  text("gateway-id", v.gateway.id);
  text("site", "site " + v.gateway.site);
  text("uptime", ago(v.gateway.uptime_s).replace(" ago", ""));
  text("updated", new Date(v.gateway.time * 1000).toLocaleTimeString());
  const ready = v.ready.length === 0;
  text("state", ready ? "ready" : "NOT READY");
  $("state").className = "state " + (ready ? "ok" : "bad");
  $("problems").hidden = ready;
  text("problems", v.ready.join("; "));
  text("uplinks-accepted", t.uplinks_accepted);
  text("uplinks-rejected", t.uplinks_rejected);
  text("rejected-reasons", Object.entries(t.rejected_by_reason)
    .map(([k, n]) => k + " " + n).join(", ") || "none");
  text("queue-records", q.records === undefined ? "error" : q.records);
  text("queue-bytes", bytes(q.used_bytes) + " of " + bytes(q.max_bytes));
  text("queue-age", q.oldest_age_s ? ago(q.oldest_age_s).replace(" ago", "") : "–");
  text("mqtt-state", m.connected ? "connected" : "DISCONNECTED");
  $("mqtt-state").className = "big " + (m.connected ? "state ok" : "state bad");
  text("mqtt-broker", m.broker || "");
  text("mqtt-error", m.last_error || "");
  text("records-acked", t.records_acked);
  const c = v.commands;
  text("commands-waiting", c.waiting);
  text("commands-summary", c.accepted + " accepted, " + c.acknowledged + " acknowledged, " +
       c.failed + " failed, " + c.expired + " expired, " + c.rejected + " rejected");

  if (last !== null && v.gateway.time > last.gateway.time) {
    const rate = (t.uplinks_accepted - last.totals.uplinks_accepted) /
      (v.gateway.time - last.gateway.time);
    push(history.rate, Math.max(0, rate));
    text("uplink-rate", rate.toFixed(2));
  }
  push(history.queue, q.records || 0);
  spark("spark-uplinks", history.rate);
  spark("spark-queue", history.queue);
  last = v;

  rows("forwarders", v.forwarders, (f) => [[f.eui], [f.addr], [ago(f.last_seen_s)], [f.rx],
    [f.tx]]);
  text("devices-count", "(" + v.devices.count + " heard, " + v.devices.with_alarms +
       " with open alarms" + (v.devices.count > v.devices.shown.length
         ? "; the " + v.devices.shown.length + " that matter most shown" : "") + ")");
  rows("devices", v.devices.shown, (d) => [[d.eui], [d.dev_addr], [ago(d.last_s)], [d.fcnt],
    [d.rssi], [d.snr], [d.uplinks], [d.alarms.join(", ") || "", d.alarms.length ? "alarm" : ""]]);
  rows("modbus", v.modbus.flatMap((b) => b.meters.map((mt) => [b.bus, mt])), ([bus, mt]) => [
    [bus], [mt.address], [mt.polls], [mt.timeouts], [mt.crc_errors], [mt.failed_polls]]);
  rows("rejections", v.rejections, (r) => [[new Date(r.t * 1000).toLocaleTimeString()],
    [r.what], [r.reason], [r.detail]]);
}

function connect() {
  const events = new EventSource("events");
  events.onmessage = (e) => render(JSON.parse(e.data));
  events.addEventListener("stalled", (e) => {
    text("state", "the gateway's event loop does not answer: " + JSON.parse(e.data));
    $("state").className = "state bad";
  });
  events.onerror = () => {
    text("state", "no connection to the gateway (retrying)");
    $("state").className = "state bad";
  };
}

connect();
