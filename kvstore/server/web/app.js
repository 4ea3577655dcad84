// The page: every second it asks a pod for `/v1/cluster` (the set as that pod sees it through
// DNS), updates the table of pods, notes what changed as events and on the timeline, and
// redraws the charts. If the pod this page came from stops answering, it asks the other pods it
// knows instead. Each pod reports its template revision (KV_REVISION); the newest revision seen
// is the one being rolled out, and a pod at another one is still to be rolled.
"use strict";

const POLL_MS = 1000;
const TIMEOUT_MS = 2500;
const WINDOW_S = 300; // the charts show the last five minutes
const GAP_S = 3.5; // a chart line breaks where samples are further apart than this
const ORIGIN_RETRY_MS = 15000;
const GONE_KEEP_S = 600; // a pod gone from DNS stays listed this long
const MAX_EVENTS = 80;
const COLORS = ["#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2", "#ca8a04"];

const $ = (id) => document.getElementById(id);

const state = {
  base: "", // whom /v1/cluster is asked: "" is this page's own pod, else another pod's URL
  originTried: 0,
  selfName: null, // the pod this page came from
  pods: new Map(), // name -> what the page last knew of it
  samples: [], // {t, writes, lag: {name: entries}}; t is this browser's clock, in seconds
  previousManager: null, // {t, seq} for writes per second
  token: sessionStorage.getItem("kvstore-token") || "",
  lastWriteSeq: 0,
  first: true,
};

// --- HTTP ------------------------------------------------------------------------------------
function request(url, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  return fetch(url, {
    method: options.method || "GET",
    body: options.body,
    headers,
    cache: "no-store",
    signal: AbortSignal.timeout(options.timeout || TIMEOUT_MS),
  });
}

function candidates() {
  const out = [state.base];
  const retryOrigin = Date.now() - state.originTried > ORIGIN_RETRY_MS;
  if (state.base !== "" && retryOrigin) {
    out.unshift("");
    state.originTried = Date.now();
  }
  out.push("");
  const known = [...state.pods.values()]
    .filter((p) => p.url && p.state !== "gone" && p.url !== location.origin)
    .sort((a, b) => (a.state === "unreachable") - (b.state === "unreachable"));
  for (const pod of known) out.push(pod.url);
  return [...new Set(out)];
}

async function askCluster() {
  for (const base of candidates()) {
    try {
      const resp = await request(base + "/v1/cluster");
      if (resp.status === 401) {
        askForToken();
        return null;
      }
      if (!resp.ok) continue;
      const doc = await resp.json();
      if (base !== state.base) switchTo(base, doc);
      return doc;
    } catch (err) {
      // this pod does not answer: try the next one
    }
  }
  return null;
}

function switchTo(base, doc) {
  const before = state.base;
  state.base = base;
  if (base === "") {
    if (before !== "") addEvent(doc.pod, "info", `${doc.pod}, this page's pod, answers again`);
  } else {
    const self = state.selfName ? `${state.selfName}, this page's pod,` : "this page's pod";
    addEvent(doc.pod, "info", `${self} does not answer: asking ${doc.pod} at ${hostOf(base)}`);
  }
}

// --- what changed --------------------------------------------------------------------------
function podState(entry) {
  if (!entry.reachable) return "unreachable";
  return entry.status.ready ? "ready" : "not-ready";
}

function hostOf(url) {
  try {
    return new URL(url).host;
  } catch (err) {
    return url || "";
  }
}

const isUp = (s) => s === "ready" || s === "not-ready";

function note(name, known, now, entry) {
  const next = podState(entry);
  const where = hostOf(entry.url);
  const role = entry.reachable ? entry.status.role : known && known.role;
  const label = role === "manager" ? `${name} (manager)` : name;
  if (!known) {
    if (!state.first) addEvent(name, "up", `${name} joined at ${where}`);
    return;
  }
  const moved = known.address && where && known.address !== where;
  const restarted =
    entry.reachable && known.startedAt && Math.abs(entry.started_at - known.startedAt) > 1.5;
  if (isUp(known.state) && !isUp(next)) {
    addEvent(name, "down", `${label} unreachable: ${entry.error}`);
  } else if (!isUp(known.state) && isUp(next)) {
    addEvent(name, "up", `${label} back` + (moved ? ` at ${where}` : ""));
  } else if (isUp(next) && (moved || restarted)) {
    addEvent(name, "restart", `${label} restarted: gone and back between two looks` +
      (moved ? `, now at ${where}` : ""));
  }
  if (isUp(known.state) && isUp(next) && known.state !== next) {
    addEvent(name, "info", `${name} ${next === "ready" ? "ready" : "not ready"}`);
  }
  const revision = entry.reachable ? entry.status.revision : null;
  if (revision && known.revision && revision !== known.revision) {
    addEvent(name, "update", `${name} updated: revision ${known.revision} → ${revision}`);
  }
  if (entry.reachable && role === "follower" && known.connected !== undefined) {
    const connected = entry.status.manager.connected;
    if (known.connected && !connected) addEvent(name, "info", `${name} lost its stream`);
    if (!known.connected && connected && isUp(known.state)) {
      addEvent(name, "info", `${name} streams from the manager again`);
    }
  }
}

function update(doc) {
  const now = Date.now() / 1000;
  const seen = new Set();
  if (state.base === "") state.selfName = doc.pod;
  for (const entry of doc.pods) {
    seen.add(entry.name);
    const known = state.pods.get(entry.name);
    const revision = entry.reachable ? entry.status.revision : null;
    const moved = Boolean(known && known.revision !== revision);
    if (revision && seeRevision(revision, moved) && !state.first) {
      addEvent(entry.name, "update", `new template revision ${revision} on ${entry.name}`);
    }
    note(entry.name, known, now, entry);
    const pod = known || { name: entry.name };
    pod.entry = entry;
    pod.state = podState(entry);
    pod.url = entry.url;
    pod.address = hostOf(entry.url);
    pod.ordinal = entry.ordinal;
    pod.seenAt = now;
    if (entry.reachable) {
      pod.role = entry.status.role;
      pod.startedAt = entry.started_at;
      pod.connected = entry.status.manager.connected;
      pod.revision = entry.status.revision || null;
    }
    state.pods.set(entry.name, pod);
  }
  for (const [name, pod] of state.pods) {
    if (seen.has(name)) continue;
    if (pod.state !== "gone") {
      const label = pod.role === "manager" ? `${name} (manager)` : name;
      addEvent(name, "down", `${label} gone: no longer in DNS`);
      pod.state = "gone";
      pod.goneAt = now;
    } else if (now - pod.goneAt > GONE_KEEP_S) {
      state.pods.delete(name);
    }
  }
  if (state.first) {
    addEvent(doc.pod, "info", `watching ${doc.pods.length} pods of ${doc.service}`);
    state.first = false;
  }
  recordTimeline(state.pods.values(), now, WINDOW_S);
  sample(doc, now);
}

function sample(doc, now) {
  const manager = doc.pods.find((p) => p.reachable && p.status.role === "manager");
  let writes = null;
  if (manager) {
    const seq = manager.status.applied_seq;
    const previous = state.previousManager;
    if (previous && doc.time > previous.t && seq >= previous.seq) {
      writes = (seq - previous.seq) / (doc.time - previous.t);
    }
    state.previousManager = { t: doc.time, seq };
  } else {
    state.previousManager = null;
  }
  const lag = {};
  for (const p of doc.pods) {
    if (p.reachable && p.status.role === "follower") lag[p.name] = p.status.lag.entries;
  }
  state.samples.push({ t: now, writes, lag });
  while (state.samples.length && state.samples[0].t < now - WINDOW_S - GAP_S) {
    state.samples.shift();
  }
}

function addEvent(pod, kind, text) {
  const item = document.createElement("li");
  item.dataset.pod = pod;
  item.dataset.kind = kind;
  const time = document.createElement("time");
  time.textContent = clock(new Date());
  item.append(time, " " + text);
  const list = $("events");
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

// --- drawing ---------------------------------------------------------------------------------
function clock(date) {
  return date.toTimeString().slice(0, 8);
}

function age(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d" + Math.floor((s % 86400) / 3600) + "h";
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

// The pod's IP (every pod listens on the same port; the title has both).
function addressCell(row, pod) {
  const td = cell(row, (pod.address || "").replace(/:\d+$/, ""), "address");
  td.title = pod.address || "";
}

function colorOf(pod) {
  const ordinal = pod.ordinal == null ? 0 : pod.ordinal;
  return COLORS[(ordinal + COLORS.length - 1) % COLORS.length];
}

function renderPods() {
  const body = document.querySelector("#pods tbody");
  const rows = [];
  const pods = [...state.pods.values()].sort(
    (a, b) => (a.ordinal ?? 1e9) - (b.ordinal ?? 1e9) || a.name.localeCompare(b.name),
  );
  const now = Date.now() / 1000;
  for (const pod of pods) {
    const row = document.createElement("tr");
    row.dataset.pod = pod.name;
    row.dataset.state = pod.state;
    row.dataset.role = pod.role || "";
    row.dataset.address = pod.address || "";
    const name = cell(row, pod.name, "name");
    if (pod.entry && pod.entry.self) name.title = "the pod this page came from";
    const revision = pod.revision;
    const rolling = isRolling(pod);
    row.dataset.revision = revision || "";
    row.dataset.rolling = String(rolling);
    if (revision) {
      const tag = document.createElement("span");
      tag.className = "revision" + (rolling ? " rolling" : "");
      tag.textContent = revision;
      tag.title = rolling
        ? `to be rolled: the newest revision is ${newestRevision()}`
        : "the pod template's revision";
      name.append(" ", tag);
    }
    cell(row, pod.role || "?", "role " + (pod.role || ""));
    const badge = cell(row, "", "state");
    const pill = document.createElement("span");
    pill.className = "pill " + pod.state;
    pill.textContent = pod.state.replace("-", " ");
    badge.append(pill);
    if (pod.state === "gone" || pod.state === "unreachable") {
      const why = pod.state === "gone"
        ? `no longer in DNS, for ${age(now - pod.goneAt)}`
        : pod.entry.error;
      const td = cell(row, why, "why");
      td.colSpan = 4;
      addressCell(row, pod);
      cell(row, "", "num");
      rows.push(row);
      continue;
    }
    const st = pod.entry.status;
    cell(row, String(st.applied_seq), "num seq");
    if (st.role === "manager") {
      // As the followers report it: each knows best whether its own stream is up.
      cell(row, "", "num");
      const followers = pods.filter((p) => p.role === "follower" && p.state !== "gone");
      const streaming = followers.filter((p) => isUp(p.state) && p.connected).length;
      cell(row, `${streaming} of ${followers.length} streaming`, "stream");
    } else {
      cell(row, `${st.lag.entries} (${st.lag.seconds.toFixed(1)}s)`, "num lag");
      const stream = st.manager.connected ? "connected" : "disconnected";
      const td = cell(row, stream, "stream " + stream);
      if (st.replication && st.replication.last_error) td.title = st.replication.last_error;
      if (st.replication && st.replication.epoch_mismatch) td.textContent = "epoch mismatch";
      if (st.diverged) {
        td.textContent = `diverged at seq ${st.diverged.seq}`;
        td.className = "stream diverged";
        td.title = `${st.diverged.message} (kvstore repair status)`;
      }
    }
    addressCell(row, pod);
    cell(row, age(st.uptime_seconds), "num");
    rows.push(row);
  }
  body.replaceChildren(...rows);
  renderRollout(pods);
}

function renderRollout(pods) {
  const out = $("rollout");
  const rollout = describeRollout(pods);
  out.hidden = rollout === null;
  if (rollout === null) return;
  out.dataset.rolling = String(rollout.rolling);
  out.textContent = rollout.text;
}

function renderCharts() {
  const now = Date.now() / 1000;
  const samples = state.samples;
  const writes = samples.map((s) => [s.t, s.writes]);
  drawChart($("writes-chart"), {
    series: [{ name: "writes/s", color: "#2563eb", points: writes }],
    now, window: WINDOW_S, gap: GAP_S,
    emptyText: "no manager seen yet",
  });
  const last = samples.length ? samples[samples.length - 1] : null;
  $("writes-now").textContent =
    last && last.writes !== null ? Math.round(last.writes).toLocaleString("en-US") : "";
  const followers = [...state.pods.values()]
    .filter((p) => p.role === "follower")
    .sort((a, b) => (a.ordinal ?? 0) - (b.ordinal ?? 0));
  const series = followers.map((p) => ({
    name: p.name,
    color: colorOf(p),
    points: samples.map((s) => [s.t, p.name in s.lag ? s.lag[p.name] : null]),
  }));
  drawChart($("lag-chart"), {
    series, now, window: WINDOW_S, gap: GAP_S, emptyText: "no follower seen yet",
  });
  const legend = followers.map((p) => {
    const item = document.createElement("span");
    item.className = "key";
    const swatch = document.createElement("i");
    swatch.style.background = colorOf(p);
    const lag = last && p.name in last.lag ? last.lag[p.name] : "–";
    item.append(swatch, `${p.name} ${lag}`);
    return item;
  });
  $("legend").replaceChildren(...legend);
}

function renderHeader(doc) {
  if (doc) {
    const listed = doc.pods.filter((p) => p.listed).length;
    $("set").textContent = `${doc.service} · ${listed} pods in DNS`;
    const from = state.selfName ? `page from ${state.selfName}` : "";
    const view = doc.pod !== state.selfName ? ` · view from ${doc.pod}` : "";
    $("source").textContent = from + view;
    if (state.selfName) {
      const self = doc.pods.find((p) => p.name === state.selfName);
      const manager = self && self.reachable && self.status.role === "manager";
      $("kv-where").textContent = manager
        ? `sent to ${state.selfName}, the manager`
        : `sent to ${state.selfName}; writes are forwarded to the manager`;
    }
    $("updated").textContent = "updated " + clock(new Date());
    document.title = `kvstore · ${doc.service.split(".")[0]} (${listed} pods)`;
  }
  const banner = $("banner");
  if (!doc) {
    banner.hidden = false;
    banner.className = "down";
    banner.textContent = "No pod answers: retrying every second.";
  } else if (state.base !== "") {
    banner.hidden = false;
    banner.className = "warn";
    banner.replaceChildren(
      `${state.selfName || "The pod"} at ${location.host}, where this page came from, no ` +
        `longer answers; this is the set as ${doc.pod} at ${hostOf(state.base)} sees it. ` +
        "Put and get go to the page's own pod: ",
    );
    // The page's own pod may be back at another address (a rescheduled pod gets a new IP).
    const self = state.pods.get(state.selfName);
    const target = self && isUp(self.state) ? self : { name: doc.pod, url: state.base };
    const link = document.createElement("a");
    link.href = target.url + "/";
    link.textContent = `open the page on ${target.name} (${hostOf(target.url)})`;
    banner.append(link);
  } else {
    banner.hidden = true;
  }
}

// --- put, get, delete --------------------------------------------------------------------------
function showResult(ok, text, details) {
  const out = $("kv-result");
  out.className = ok ? "ok" : "error";
  out.dataset.ok = String(ok);
  for (const [k, v] of Object.entries(details || {})) out.dataset[k] = v;
  out.textContent = text;
}

async function errorText(resp) {
  try {
    const doc = await resp.json();
    return `${doc.error.message} (${resp.status} ${doc.error.code})`;
  } catch (err) {
    return `HTTP ${resp.status}`;
  }
}

async function kvCall(action) {
  const key = $("kv-key").value;
  if (!key) {
    showResult(false, "a key is needed");
    return;
  }
  const path = "/v1/kv/" + encodeURIComponent(key);
  $("kv-result").removeAttribute("data-served-by");
  try {
    if (action === "put") {
      const resp = await request(path, { method: "PUT", body: $("kv-value").value, timeout: 10000 });
      if (resp.status === 401) askForToken();
      if (!resp.ok) return showResult(false, await errorText(resp));
      const doc = await resp.json();
      state.lastWriteSeq = Math.max(state.lastWriteSeq, doc.seq);
      const by = resp.headers.get("X-KV-Served-By") || "?";
      const how = resp.status === 201 ? "created" : "updated";
      showResult(true, `put ${key}: version ${doc.version}, seq ${doc.seq}, ${how} by ${by}`, {
        servedBy: by, seq: String(doc.seq),
      });
    } else if (action === "get") {
      // Read your own writes: wait until this pod has applied the last write made here.
      const wait = state.lastWriteSeq ? `?min_seq=${state.lastWriteSeq}&timeout=5` : "";
      const resp = await request(path + wait, { timeout: 10000 });
      if (resp.status === 401) askForToken();
      if (!resp.ok) return showResult(false, await errorText(resp));
      const value = await resp.text();
      const by = resp.headers.get("X-KV-Served-By") || "?";
      const version = (resp.headers.get("ETag") || "").replaceAll('"', "");
      const seq = resp.headers.get("X-KV-Seq") || "?";
      showResult(true, `${key} = ${value}  (version ${version}, read on ${by} at seq ${seq})`, {
        servedBy: by, value, seq,
      });
    } else {
      const resp = await request(path, { method: "DELETE", timeout: 10000 });
      if (resp.status === 401) askForToken();
      if (!resp.ok) return showResult(false, await errorText(resp));
      const doc = await resp.json();
      state.lastWriteSeq = Math.max(state.lastWriteSeq, doc.seq);
      const by = resp.headers.get("X-KV-Served-By") || "?";
      showResult(true, `deleted ${key} at seq ${doc.seq} by ${by}`, { servedBy: by });
    }
  } catch (err) {
    showResult(false, `${state.selfName || "this page's pod"} does not answer (${err.name})`);
  }
}

function askForToken() {
  $("token-box").hidden = false;
}

// --- the loop ----------------------------------------------------------------------------------
async function tick() {
  let doc = null;
  try {
    doc = await askCluster();
    if (doc) {
      update(doc);
      renderPods();
    } else {
      // Nobody answers: keep the time axis moving, with a gap in every line.
      state.samples.push({ t: Date.now() / 1000, writes: null, lag: {} });
      state.previousManager = null;
    }
    renderHeader(doc);
    renderCharts();
    renderTimeline($("timeline"), Date.now() / 1000, WINDOW_S);
  } finally {
    setTimeout(tick, POLL_MS);
  }
}

function start() {
  $("kv-form").addEventListener("submit", (event) => {
    event.preventDefault();
    kvCall("put");
  });
  $("kv-get").addEventListener("click", () => kvCall("get"));
  $("kv-delete").addEventListener("click", () => kvCall("delete"));
  $("token-box").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("kvstore-token", state.token);
    $("token-box").hidden = true;
  });
  $("token").value = state.token;
  window.addEventListener("resize", renderCharts);
  tick();
}

start();
