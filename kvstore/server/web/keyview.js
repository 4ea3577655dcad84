// One key on every pod, side by side: click a key (in the list of keys, or the key of a put or
// get) and the page asks `/v1/cluster/kv/{key}` every second: each pod's value, version, the
// pod's applied seq and its lag. A pod whose version is behind the manager's is marked, so a
// write can be watched as it reaches each follower. Uses `request`, `state` and `$` of app.js.
"use strict";

const KEYS_EVERY_MS = 5000;
const KEY_LIST_LIMIT = 30;

const keyView = {
  key: null, // the key shown, or null
  busy: false, // a request for it is in flight
  keysAt: 0, // when the list of keys was last asked
  last: null, // the last answer, for the table
};

function selectKey(key) {
  keyView.key = key;
  keyView.last = null;
  $("key-view").hidden = false;
  $("key-name").textContent = key;
  $("key-pods").querySelector("tbody").replaceChildren();
  $("key-note").textContent = "asking every pod…";
  for (const item of $("keys").querySelectorAll("button")) {
    item.classList.toggle("selected", item.dataset.key === key);
  }
  refreshKeyView();
}

function closeKeyView() {
  keyView.key = null;
  keyView.last = null;
  $("key-view").hidden = true;
  for (const item of $("keys").querySelectorAll("button")) item.classList.remove("selected");
}

// A value as a person reads it: its text when it is UTF-8 without control characters, else
// its size; the pod sends only the first bytes, and the size and digest of the whole.
function valueText(pod) {
  const raw = atob(pod.preview);
  const bytes = Uint8Array.from(raw, (c) => c.charCodeAt(0));
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (err) {
    return `<${pod.size} B binary>`;
  }
  if (/[\u0000-\u0008\u000e-\u001f\u007f]/.test(text)) return `<${pod.size} B binary>`;
  return bytes.length < pod.size ? `${text}… (${pod.size} B)` : text;
}

// The lag a pod reports: with its answer when it sends one, else from the cluster view.
function lagOf(pod) {
  if (pod.lag_seconds !== undefined && pod.lag_seconds !== null) return pod.lag_seconds;
  const known = state.pods.get(pod.name);
  const status = known && known.entry && known.entry.reachable ? known.entry.status : null;
  if (!status || status.role !== "follower") return null;
  return status.lag.seconds;
}

async function refreshKeyView() {
  const key = keyView.key;
  if (key === null || keyView.busy) return;
  keyView.busy = true;
  try {
    const resp = await request(state.base + "/v1/cluster/kv/" + encodeURIComponent(key));
    if (key !== keyView.key) return;
    if (resp.status === 401) askForToken();
    if (!resp.ok) {
      $("key-note").textContent = await errorText(resp);
      return;
    }
    keyView.last = await resp.json();
    renderKeyView();
  } catch (err) {
    if (key === keyView.key) $("key-note").textContent = "no pod answers for this key";
  } finally {
    keyView.busy = false;
  }
}

function renderKeyView() {
  const doc = keyView.last;
  if (!doc) return;
  // The manager's copy is the reference: a follower that differs from it is behind.
  const manager = doc.pods.find(
    (p) => p.reachable && !p.error && state.pods.get(p.name)?.role === "manager",
  );
  const newest = manager
    ? (manager.found ? manager.version : 0)
    : Math.max(0, ...doc.pods.filter((p) => p.found).map((p) => p.version));
  const rows = doc.pods.map((pod) => {
    const row = document.createElement("tr");
    row.dataset.pod = pod.name;
    row.dataset.found = String(Boolean(pod.found));
    const role = state.pods.get(pod.name)?.role;
    cell(row, pod.name + (role === "manager" ? " (manager)" : ""), "name");
    if (!pod.reachable) {
      row.dataset.state = "unreachable";
      const td = cell(row, pod.error || "unreachable", "why");
      td.colSpan = 4;
      return row;
    }
    if (pod.found) {
      const text = valueText(pod);
      row.dataset.value = text;
      row.dataset.version = String(pod.version);
      row.dataset.digest = pod.digest;
      const value = cell(row, text, "value");
      value.title = `${pod.size} B, digest ${pod.digest}`;
      cell(row, String(pod.version), "num version");
    } else {
      cell(row, pod.error || "absent", "value absent");
      cell(row, "–", "num version");
    }
    const behind = (pod.found ? pod.version : 0) !== newest;
    row.dataset.behind = String(Boolean(behind));
    row.dataset.seq = pod.seq === null || pod.seq === undefined ? "" : String(pod.seq);
    cell(row, row.dataset.seq, "num seq");
    const lag = lagOf(pod);
    row.dataset.lag = lag === null ? "" : String(lag);
    cell(row, lag === null ? "–" : `${Number(lag).toFixed(1)}s`, "num lag");
    return row;
  });
  $("key-pods").querySelector("tbody").replaceChildren(...rows);
  const holding = doc.pods.filter((p) => p.found && p.version === newest).length;
  $("key-note").textContent = newest
    ? `version ${newest} on ${holding} of ${doc.pods.length} pods · asked ${clock(new Date())}`
    : `on no pod · asked ${clock(new Date())}`;
}

async function refreshKeyList() {
  if (Date.now() - keyView.keysAt < KEYS_EVERY_MS) return;
  keyView.keysAt = Date.now();
  try {
    const resp = await request(`/v1/kv?limit=${KEY_LIST_LIMIT}`);
    if (!resp.ok) return;
    const doc = await resp.json();
    const items = doc.items.map((item) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.key = item.key;
      button.textContent = item.key;
      button.title = `version ${item.version}, ${item.size} B: show it on every pod`;
      if (item.key === keyView.key) button.classList.add("selected");
      li.append(button);
      return li;
    });
    $("keys").replaceChildren(...items);
    $("keys-more").hidden = doc.next === null;
  } catch (err) {
    // the page's pod does not answer: keep the list it gave last
  }
}

function startKeyView() {
  $("keys").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-key]");
    if (button) selectKey(button.dataset.key);
  });
  $("key-close").addEventListener("click", closeKeyView);
  $("kv-show").addEventListener("click", () => {
    const key = $("kv-key").value;
    if (key) selectKey(key);
  });
}
