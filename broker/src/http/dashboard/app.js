// FerroMQ dashboard: polls /api every 2 s and draws everything by hand (no libraries).
"use strict";

const POLL_MS = 2000;
const HISTORY = 150; // samples kept: 5 minutes at 2 s
const $ = (sel) => document.querySelector(sel);

const state = {
  totals: [], // { t, in, out } broker-wide counters per poll
  topics: new Map(), // name -> [{ t, in, out }]
  selected: null, // group shown in the detail panel
};

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function fmtCount(n) {
  if (n == null) return "–";
  if (n >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  if (n < 10 && n !== Math.round(n)) return n.toFixed(1);
  return String(Math.round(n));
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

function fmtAge(s) {
  if (s == null) return "–";
  if (s < 1) return "<1 s";
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

async function api(path, options) {
  const r = await fetch(path, options);
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || body.reason || r.statusText);
  return body;
}

// Rate per second between the last two samples of a series of counters.
function rate(series, key) {
  if (series.length < 2) return null;
  const a = series[series.length - 2], b = series[series.length - 1];
  const dt = (b.t - a.t) / 1000;
  return dt > 0 ? Math.max(0, (b[key] - a[key]) / dt) : null;
}

function rates(series, key) {
  const out = [];
  for (let i = 1; i < series.length; i++) {
    const dt = (series[i].t - series[i - 1].t) / 1000;
    out.push(dt > 0 ? Math.max(0, (series[i][key] - series[i - 1][key]) / dt) : 0);
  }
  return out;
}

function push(series, sample) {
  series.push(sample);
  if (series.length > HISTORY + 1) series.shift();
}

// Line chart of in/out rates with a light grid and a labelled y axis.
function drawChart(canvas, lines, opts = {}) {
  const dpr = window.devicePixelRatio || 1;
  // CSS fixes the drawn size; the bitmap follows it (sharp on high-DPI screens).
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  const pad = opts.axis ? { l: 48, r: 8, t: 8, b: 18 } : { l: 1, r: 1, t: 2, b: 2 };
  const max = Math.max(1, ...lines.flatMap((l) => l.values));
  const x = (i) => pad.l + (i / (HISTORY - 1)) * (w - pad.l - pad.r);
  const y = (v) => h - pad.b - (v / max) * (h - pad.t - pad.b);
  if (opts.axis) {
    g.strokeStyle = "#25303c"; g.fillStyle = "#7d8a99"; g.font = "11px system-ui"; g.lineWidth = 1;
    for (let k = 0; k <= 4; k++) {
      const v = (max * k) / 4, yy = Math.round(y(v)) + 0.5;
      g.beginPath(); g.moveTo(pad.l, yy); g.lineTo(w - pad.r, yy); g.stroke();
      g.fillText(fmtCount(v), 4, yy + 4);
    }
    g.fillText("now", w - pad.r - 22, h - 4);
    g.fillText("-5 min", pad.l, h - 4);
  }
  for (const line of lines) {
    const off = HISTORY - line.values.length;
    g.strokeStyle = line.color; g.lineWidth = opts.axis ? 2 : 1.5; g.lineJoin = "round";
    g.beginPath();
    line.values.forEach((v, i) => (i ? g.lineTo(x(i + off), y(v)) : g.moveTo(x(i + off), y(v))));
    g.stroke();
    const n = line.values.length;
    if (opts.axis && n > 1) {
      // The area under the line, closed along the x axis.
      g.globalAlpha = 0.12; g.fillStyle = line.color;
      g.lineTo(x(n - 1 + off), y(0)); g.lineTo(x(off), y(0)); g.closePath(); g.fill();
      g.globalAlpha = 1;
    }
    if (n) {
      // The newest point, so that a fresh chart shows where it stands.
      g.fillStyle = line.color;
      g.beginPath(); g.arc(x(n - 1 + off), y(line.values[n - 1]), opts.axis ? 3 : 2, 0, 2 * Math.PI); g.fill();
    }
  }
}

const css = getComputedStyle(document.documentElement);
const IN = css.getPropertyValue("--in").trim() || "#4fb3ff";
const OUT = css.getPropertyValue("--out").trim() || "#7ee08a";

async function refreshOverview() {
  const o = await api("/api/overview");
  push(state.totals, { t: Date.now(), in: o.messages_in, out: o.messages_out });
  $("#version").textContent = "v" + o.version;
  $("#uptime").textContent = fmtAge(o.uptime_ms / 1000);
  $("#connections").textContent = o.connections;
  const ri = rate(state.totals, "in"), ro = rate(state.totals, "out");
  $("#rate-in").textContent = ri == null ? "–" : fmtCount(ri) + "/s";
  $("#rate-out").textContent = ro == null ? "–" : fmtCount(ro) + "/s";
  $("#disk").textContent = fmtBytes(o.disk_free_bytes) + (o.disk_full ? " (full)" : "");
  drawChart($("#chart"), [
    { values: rates(state.totals, "in"), color: IN },
    { values: rates(state.totals, "out"), color: OUT },
  ], { axis: true });
}

async function refreshHealth() {
  const el = $("#health");
  try {
    const r = await fetch("/readyz");
    const b = await r.json();
    el.textContent = b.ready ? "ready" : "not ready: " + b.reason;
    el.className = "badge " + (b.ready ? "ok" : "bad");
  } catch (e) {
    el.textContent = "unreachable";
    el.className = "badge bad";
  }
}

async function refreshTopics() {
  const { topics } = await api("/api/topics");
  const now = Date.now();
  const body = $("#topics tbody");
  $("#topics-empty").hidden = topics.length > 0;
  body.innerHTML = topics.map((t) => {
    const series = state.topics.get(t.name) || [];
    push(series, { t: now, in: t.messages_in, out: t.messages_out });
    state.topics.set(t.name, series);
    const ri = rate(series, "in"), ro = rate(series, "out");
    const queues = t.queues.map((q) => `q${q.queue_id}: ${q.min_offset}–${q.max_offset}`).join(" · ");
    return `<tr data-topic="${esc(t.name)}" title="${esc(queues)}">
      <td class="name">${esc(t.name)}</td>
      <td class="num queues">${t.queue_count}</td>
      <td class="num messages">${t.messages}</td>
      <td class="num timers">${t.timers_pending}</td>
      <td class="num">${ri == null ? "–" : fmtCount(ri)}</td>
      <td class="num">${ro == null ? "–" : fmtCount(ro)}</td>
      <td><canvas class="spark"></canvas></td></tr>`;
  }).join("");
  body.querySelectorAll("tr").forEach((tr) => {
    const series = state.topics.get(tr.dataset.topic) || [];
    drawChart(tr.querySelector("canvas"), [
      { values: rates(series, "in"), color: IN },
      { values: rates(series, "out"), color: OUT },
    ]);
  });
}

async function refreshGroups() {
  const { groups } = await api("/api/groups");
  $("#groups-empty").hidden = groups.length > 0;
  const maxLag = Math.max(1, ...groups.map((g) => g.lag));
  $("#groups tbody").innerHTML = groups.map((g) => {
    const age = g.oldest_unacked_age_s;
    const cls = g.lag === 0 ? "ok-lag" : age != null && age > 300 ? "far" : "behind";
    const sel = g.name === state.selected ? " selected" : "";
    return `<tr class="row ${cls}${sel}" data-group="${esc(g.name)}">
      <td class="name">${esc(g.name)}</td>
      <td class="num lag">${g.lag}</td>
      <td class="bar"><div class="lagbar"><span style="width:${(100 * g.lag) / maxLag}%"></span></div></td>
      <td class="num age">${fmtAge(age)}</td>
      <td class="num members">${g.members}</td>
      <td class="num leases" title="received, not yet acked">${g.leases_in_flight == null ? "–" : g.leases_in_flight}</td>
      <td class="num retries" title="retries waiting on the timer">${g.retries_pending}</td>
      <td class="num dlq ${g.dlq ? "dlq-some" : ""}">${g.dlq}</td></tr>`;
  }).join("");
  if (state.selected) await renderGroup(state.selected);
}

async function renderGroup(name) {
  const box = $("#group-detail");
  let g, dlq;
  try {
    [g, dlq] = await Promise.all([
      api(`/api/groups/${encodeURIComponent(name)}`),
      api(`/api/groups/${encodeURIComponent(name)}/dlq?max=20`),
    ]);
  } catch (e) {
    box.hidden = false;
    box.innerHTML = `<p class="muted">${esc(e.message)}</p>`;
    return;
  }
  const queues = g.queues.map((q) => `<tr data-queue="${esc(q.topic)}/${q.queue_id}">
      <td>${esc(q.topic)}</td><td class="num">${q.queue_id}</td>
      <td class="num">${q.committed ?? "–"}</td><td class="num">${q.max_offset}</td>
      <td class="num lag">${q.lag}</td><td class="num">${fmtAge(q.oldest_unacked_age_s)}</td></tr>`).join("");
  const members = g.members.length
    ? g.members.map((m) => `<div><span class="chip">${esc(m.client_id)}</span> ${m.assignment
      .map((a) => `${esc(a.topic)} [${a.queue_ids.join(", ")}]`).join("; ")}</div>`).join("")
    : `<p class="muted">No live members.</p>`;
  const letters = dlq.messages.map((m) => `<tr><td><code>${esc(m.msg_id)}</code></td>
      <td>${esc(m.properties.ORIGIN_TOPIC || "?")}</td><td>${esc((m.body ?? m.body_preview).slice(0, 80))}</td></tr>`).join("");
  box.hidden = false;
  box.innerHTML = `<h3>${esc(name)} <span class="muted">lag ${g.lag} · oldest unacked ${fmtAge(g.oldest_unacked_age_s)}</span></h3>
    <div class="cols"><div><table><thead><tr><th>topic</th><th class="num">queue</th><th class="num">committed</th>
      <th class="num">max</th><th class="num">lag</th><th class="num">oldest unacked</th></tr></thead>
      <tbody>${queues}</tbody></table></div>
      <div><h3>Members</h3>${members}</div></div>
    <h3>Dead-letter queue <span class="muted" id="dlq-depth">${dlq.depth} waiting</span></h3>
    ${dlq.depth ? `<table><thead><tr><th>message id</th><th>from topic</th><th>body</th></tr></thead><tbody>${letters}</tbody></table>
      <p><button class="danger" data-resend="${esc(name)}">Resend ${dlq.depth} to their topics</button>
      <span id="resend-result" class="muted"></span></p>` : `<p class="muted">Empty.</p>`}`;
  const button = box.querySelector("button[data-resend]");
  if (button) button.onclick = () => resend(name, button);
}

async function resend(group, button) {
  button.disabled = true;
  try {
    const r = await api(`/api/groups/${encodeURIComponent(group)}/dlq/resend`, { method: "POST" });
    $("#resend-result").textContent = `resent ${r.resent}` + (r.skipped_without_origin ? `, ${r.skipped_without_origin} without an origin skipped` : "");
    document.body.dataset.lastResend = String(r.resent);
  } catch (e) {
    $("#resend-result").textContent = e.message;
  }
  await refreshGroups();
}

$("#groups tbody").addEventListener("click", (ev) => {
  const tr = ev.target.closest("tr[data-group]");
  if (!tr) return;
  state.selected = state.selected === tr.dataset.group ? null : tr.dataset.group;
  if (!state.selected) $("#group-detail").hidden = true;
  refreshGroups().catch(showError);
});

$("#lookup").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("#lookup-result");
  out.hidden = false;
  try {
    const m = await api(`/api/messages/${encodeURIComponent($("#lookup-id").value.trim())}`);
    out.className = "result";
    out.textContent = JSON.stringify(m, null, 2);
  } catch (e) {
    out.className = "result error";
    out.textContent = e.message;
  }
});

$("#send").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("#send-result");
  out.hidden = false;
  const topic = $("#send-topic").value.trim();
  try {
    const r = await api(`/api/topics/${encodeURIComponent(topic)}/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ body: $("#send-body").value, tags: $("#send-tags").value, keys: $("#send-keys").value }),
    });
    out.className = "result";
    out.textContent = `stored as ${r.msg_id} (queue ${r.queue_id}, offset ${r.queue_offset})`;
    $("#lookup-id").value = r.msg_id;
  } catch (e) {
    out.className = "result error";
    out.textContent = e.message;
  }
});

function showError(e) {
  const el = $("#health");
  el.textContent = "error: " + e.message;
  el.className = "badge bad";
}

async function tick() {
  try {
    await Promise.all([refreshOverview(), refreshTopics(), refreshGroups()]);
    await refreshHealth();
    document.body.dataset.loaded = "true";
    document.body.dataset.samples = String(state.totals.length);
  } catch (e) {
    showError(e);
  }
}

tick();
setInterval(tick, POLL_MS);
