// Playground page: one WebSocket to /v1/ws carries every request as an envelope
// {id, method, path, body}; replies carry the same id. No build step, no dependencies.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const PARAMS = ["temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty"];

// ---------- connection ----------

const conn = {
  ws: null,
  nextId: 1,
  handlers: new Map(),      // envelope id -> function(message)
  backoffMs: 500,
  queue: [],                // messages waiting for the socket to open
};

function setConnState(kind, text) {
  const el = $("#conn");
  el.className = "conn conn-" + kind;
  el.textContent = text;
}

function connect() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws";
  setConnState("connecting", "connecting…");
  const ws = new WebSocket(url);
  conn.ws = ws;
  ws.onopen = () => {
    conn.backoffMs = 500;
    setConnState("open", "connected");
    for (const m of conn.queue.splice(0)) ws.send(m);
  };
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    const h = conn.handlers.get(msg.id);
    if (h) h(msg);
  };
  ws.onclose = () => {
    if (conn.ws !== ws) return;
    conn.ws = null;
    if (!signedIn) return;
    // Every request in flight on this socket is lost: tell its owner.
    const lost = [...conn.handlers.values()];
    conn.handlers.clear();
    for (const h of lost) h({ type: "disconnected" });
    const wait = Math.min(conn.backoffMs, 10000) * (0.75 + Math.random() * 0.5);
    conn.backoffMs = Math.min(conn.backoffMs * 2, 10000);
    setConnState("closed", `disconnected — retrying in ${(wait / 1000).toFixed(1)} s`);
    // A refused upgrade looks like a drop: check the session before trying again.
    setTimeout(() => checkSession().then((ok) => { if (ok) connect(); }), wait);
  };
}

/** Sends an envelope; `onMessage` gets every reply carrying its id until it returns true (done). */
/** One request/response over the socket, as a promise of {status, body} (or {error}). */
function call(method, path, body) {
  return new Promise((resolve) => {
    send(method, path, body, (msg) => {
      if (msg.type === "response") resolve({ status: msg.status, body: msg.body });
      else if (msg.type === "error") resolve({ status: msg.status, error: msg.error || {} });
      else if (msg.type === "disconnected") resolve({ status: 0, error: { message: "disconnected" } });
      else return false;
      return true;
    });
  });
}

function send(method, path, body, onMessage) {
  const id = "m" + conn.nextId++;
  conn.handlers.set(id, (msg) => { if (onMessage(msg)) conn.handlers.delete(id); });
  const text = JSON.stringify({ id, method, path, body });
  if (conn.ws && conn.ws.readyState === WebSocket.OPEN) conn.ws.send(text); else conn.queue.push(text);
  return id;
}

function randomId() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return "pg-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// ---------- panels ----------

const panels = [];

function makePanel(title) {
  const node = $("#panel-template").content.firstElementChild.cloneNode(true);
  $(".panel-title", node).textContent = title;
  const form = $(".params", node);
  const panel = {
    node, form, title,
    output: $(".output", node),
    error: $(".error", node),
    stats: { ttft: $(".ttft", node), tps: $(".tps", node), tokens: $(".tokens", node), finish: $(".finish", node) },
    stops: [],
    run: null,   // {requestId, envId, start, firstAt, tokens}
  };
  // Slider and number stay in step; the number box is sent as typed (the server validates).
  for (const p of PARAMS) {
    const range = form.elements[p + "-range"], num = form.elements[p];
    range.addEventListener("input", () => { num.value = range.value; clearInvalid(panel, p); });
    num.addEventListener("input", () => { if (num.value !== "" && +num.value >= +range.min && +num.value <= +range.max) range.value = num.value; clearInvalid(panel, p); });
  }
  const stopInput = form.elements["stop-input"];
  stopInput.addEventListener("keydown", (e) => {
    if (e.key !== "Enter") return;
    e.preventDefault();
    const v = stopInput.value;
    if (v && panel.stops.length < 4 && !panel.stops.includes(v)) { panel.stops.push(v); renderStops(panel); }
    stopInput.value = "";
  });
  form.addEventListener("submit", (e) => e.preventDefault());
  fillModels(panel);
  return panel;
}

function renderStops(panel) {
  const box = $(".chips", panel.node);
  box.textContent = "";
  panel.stops.forEach((s, i) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = JSON.stringify(s).slice(1, -1);
    const x = document.createElement("button");
    x.type = "button"; x.textContent = "×"; x.title = "remove";
    x.addEventListener("click", () => { panel.stops.splice(i, 1); renderStops(panel); });
    chip.append(x);
    box.append(chip);
  });
}

let models = null;
let modelsRequested = false;
/** Fills the model picker from /v1/models (asked once per page). */
function fillModels(panel) {
  if (models) { fillModelsNow(panel); return; }
  if (modelsRequested) return;
  modelsRequested = true;
  send("GET", "/v1/models", null, (msg) => {
    if (msg.type === "response" && msg.body && Array.isArray(msg.body.data)) {
      models = msg.body.data.map((m) => m.id);
      for (const p of panels) fillModelsNow(p);
    } else {
      modelsRequested = false;   // e.g. disconnected: ask again with the next panel
    }
    return true;
  });
}

function fillModelsNow(panel) {
  const sel = panel.form.elements.model;
  if (sel.options.length) return;
  for (const m of models) { const o = document.createElement("option"); o.value = o.textContent = m; sel.append(o); }
}

function readParams(panel) {
  const f = panel.form.elements;
  const body = {};
  if (f.model.value) body.model = f.model.value;
  for (const p of PARAMS) {
    const raw = f[p].value.trim();
    if (raw === "") continue;
    body[p] = Number(raw);
    if (Number.isNaN(body[p])) body[p] = raw;   // sent as typed: the server names the bad field
  }
  if (panel.stops.length) body.stop = panel.stops.slice();
  const seed = f.seed.value.trim();
  if (seed !== "") body.seed = Number.isInteger(Number(seed)) ? Number(seed) : seed;
  return body;
}

function clearInvalid(panel, field) {
  const input = panel.form.elements[field];
  if (input) input.closest(".field").classList.remove("invalid");
}

function showError(panel, err, retry) {
  panel.error.hidden = false;
  panel.error.textContent = "";
  const text = document.createElement("span");
  let msg = err.message || "request failed";
  if (err.field) msg = `${err.field}: ${msg.startsWith(err.field) ? msg.slice(err.field.length).replace(/^\s+/, "") : msg}`;
  text.textContent = msg;
  panel.error.append(text);
  if (err.retry_after_ms != null || err.code === "server_busy" || err.code === "generation_interrupted") {
    const hint = document.createElement("span");
    hint.className = "hint";
    hint.textContent = err.retry_after_ms != null ? `— retry in ${Math.max(1, Math.ceil(err.retry_after_ms / 1000))} s` : "— you can retry";
    panel.error.append(hint);
  }
  if (retry) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = "Retry";
    b.addEventListener("click", () => submit());
    panel.error.append(b);
  }
  const field = err.field && panel.form.elements[err.field === "max_completion_tokens" ? "max_tokens" : err.field];
  if (field) { field.closest(".field").classList.add("invalid"); }
}

function clearPanel(panel) {
  panel.output.textContent = "";
  panel.error.hidden = true;
  panel.error.textContent = "";
  panel.stats.ttft.textContent = "TTFT —";
  panel.stats.tps.textContent = "— tok/s";
  panel.stats.tokens.textContent = "— tokens";
  panel.stats.tokens.title = "";
  panel.stats.finish.textContent = "—";
  for (const el of panel.form.querySelectorAll(".field.invalid")) el.classList.remove("invalid");
}

// ---------- running ----------

// ---------- sign-in ----------

let signedIn = false;

async function checkSession() {
  try {
    const r = await fetch("/v1/session", { credentials: "same-origin" });
    if (r.ok) { showApp(await r.json()); return true; }
  } catch { /* offline: treat as not signed in for now */ }
  showSignIn("");
  return false;
}

async function signIn(key) {
  const r = await fetch("/v1/session", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ api_key: key }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) { showSignIn((body.error && body.error.message) || "sign-in failed"); return false; }
  showApp(body);
  return true;
}

async function signOut() {
  await fetch("/v1/session", { method: "DELETE", credentials: "same-origin" }).catch(() => {});
  signedIn = false;
  if (conn.ws) { const ws = conn.ws; conn.ws = null; ws.close(); }
  showSignIn("");
}

function showSignIn(message) {
  signedIn = false;
  $("#app").hidden = true;
  $("#signin").hidden = false;
  $("#signout").hidden = true;
  $("#user").textContent = "";
  $("#signin-error").textContent = message;
  setConnState("closed", "signed out");
  $("#signin-key").focus();
}

function showApp(identity) {
  const first = !signedIn;
  signedIn = true;
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#signout").hidden = false;
  $("#user").textContent = identity.user_id ? `signed in as ${identity.user_id}` : "";
  if (first && !conn.ws) { connect(); refreshPresets(); }
}

// ---------- presets ----------

const presets = { items: [], selected: -1, loaded: null, timer: null, seq: 0 };

function refreshPresets() {
  clearTimeout(presets.timer);
  presets.timer = setTimeout(searchPresets, 150);   // debounced: one request per pause in typing
}

async function searchPresets() {
  const q = $("#preset-search").value;
  const seq = ++presets.seq;
  const r = await call("GET", "/v1/presets?limit=50&query=" + encodeURIComponent(q), null);
  if (seq !== presets.seq) return;   // a newer search is on its way
  if (r.error) { $("#preset-status").textContent = r.error.message; return; }
  presets.items = r.body.data;
  presets.selected = presets.items.length ? 0 : -1;
  const empty = q ? "No preset matches." : "No presets yet: Save… stores the prompt and parameters.";
  // While the preset store is down the list comes from the cache: say it may be incomplete.
  const degraded = r.body.degraded ? "The preset store is unavailable: showing recently used presets; results may be incomplete." : "";
  $("#preset-status").textContent = degraded || (presets.items.length ? "" : empty);
  $("#preset-status").classList.toggle("degraded", !!r.body.degraded);
  renderPresets();
  // Changes saved during an outage that could not be applied later are shown until dismissed.
  if (!r.body.degraded && !q) showFailedWrites();
}

// Export and import go over REST (large bodies; the session cookie authenticates them).
async function exportPresets() {
  const all = [];
  let cursor = "";
  for (;;) {
    const r = await fetch("/v1/presets/export?limit=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""), { credentials: "same-origin" });
    const body = await r.json().catch(() => ({ error: { message: `HTTP ${r.status}` } }));
    if (!r.ok) { $("#notice").textContent = `Export failed: ${body.error.message}`; return; }
    all.push(...body.data);
    if (!body.next_cursor) break;
    cursor = body.next_cursor;
  }
  const blob = new Blob([JSON.stringify({ object: "list", data: all }, null, 1)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "presets.json";
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 60000);
  $("#notice").textContent = `Exported ${all.length} preset${all.length === 1 ? "" : "s"}.`;
}

async function importPresets(file) {
  let parsed;
  try { parsed = JSON.parse(await file.text()); } catch { $("#notice").textContent = "That file is not JSON."; return; }
  // An export ({"data": [...]}), an import body ({"presets": [...]}) or a bare list.
  const items = Array.isArray(parsed) ? parsed : parsed && (parsed.data || parsed.presets);
  if (!Array.isArray(items)) { $("#notice").textContent = "That file holds no list of presets."; return; }
  const r = await fetch("/v1/presets/import", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ presets: items }),
  });
  const body = await r.json().catch(() => ({ error: { message: `HTTP ${r.status}` } }));
  if (!r.ok) { $("#notice").textContent = `Import failed: ${body.error.message}`; return; }
  const first = body.data.find((x) => x.status === "failed");
  $("#notice").textContent = `Imported ${body.created} preset${body.created === 1 ? "" : "s"}` +
    (first ? `; ${body.failed} not imported (item ${first.index + 1}: ${first.error.message}).` : ".");
  refreshPresets();
}

async function showFailedWrites() {
  const r = await call("GET", "/v1/presets/pending", null);
  const list = $("#preset-failed");
  list.textContent = "";
  const failed = r.error ? [] : r.body.data.filter((w) => w.status === "failed");
  list.hidden = failed.length === 0;
  for (const w of failed) {
    const li = document.createElement("li");
    const what = w.op === "create" ? `Saving “${w.fields.name}”` : w.op === "update" ? "A change to a preset" : "A deletion";
    li.textContent = `${what} (made while the preset store was down) could not be applied: ${w.error.message}. `;
    const b = document.createElement("button");
    b.type = "button"; b.className = "dismiss"; b.textContent = "Dismiss";
    b.addEventListener("click", async () => {
      await call("DELETE", "/v1/presets/pending/" + encodeURIComponent(w.key), null);
      showFailedWrites();
    });
    li.append(b);
    list.append(li);
  }
}

function renderPresets() {
  const list = $("#preset-list");
  list.textContent = "";
  presets.items.forEach((p, i) => {
    const li = document.createElement("li");
    li.className = "preset-item";
    li.setAttribute("role", "option");
    li.setAttribute("aria-selected", String(i === presets.selected));
    li.dataset.id = p.id;
    const name = document.createElement("span");
    name.className = "preset-name";
    name.textContent = p.name;
    const tags = document.createElement("span");
    tags.className = "preset-tags";
    tags.textContent = p.tags.join(" · ");
    const del = document.createElement("button");
    del.className = "delete"; del.type = "button"; del.textContent = "Delete"; del.title = "Delete this preset";
    del.addEventListener("click", (e) => { e.stopPropagation(); deletePreset(p); });
    li.append(name, del, tags);
    if (p.pending) {
      const badge = document.createElement("span");
      badge.className = "preset-pending";
      badge.textContent = "will sync";
      badge.title = "Saved; the preset store is unavailable, so this change is stored and will be applied when it is back.";
      name.append(" ", badge);
    }
    li.addEventListener("click", () => { presets.selected = i; loadPreset(p); renderPresets(); });
    list.append(li);
  });
}

function loadPreset(p) {
  if (p.mode === "chat") { setMode("chat"); setChat(p.messages || []); } else { setMode("completion"); $("#prompt").value = p.prompt; }
  const panel = panels[0], f = panel.form.elements, params = p.parameters || {};
  for (const k of PARAMS) {
    const v = k === "max_tokens" ? (params.max_tokens ?? params.max_completion_tokens) : params[k];
    const d = { temperature: 1, top_p: 1, max_tokens: 256, presence_penalty: 0, frequency_penalty: 0 }[k];
    f[k].value = v ?? d;
    f[k + "-range"].value = v ?? d;
  }
  if (params.model) f.model.value = params.model;
  f.seed.value = params.seed ?? "";
  panel.stops = Array.isArray(params.stop) ? params.stop.slice() : (params.stop ? [params.stop] : []);
  renderStops(panel);
  presets.loaded = p;
  renderVariables(p);
  $("#preset-name").textContent = p.name;
  $("#preset-run").hidden = false;
  $("#notice").textContent = `Loaded “${p.name}”.`;
}

// A field per named variable of the loaded preset ({{input}} has its own box).
function renderVariables(p) {
  const box = $("#preset-variables");
  box.textContent = "";
  for (const name of (p.variables || []).filter((v) => v !== "input")) {
    const label = document.createElement("label");
    label.className = "label";
    label.textContent = name;
    const input = document.createElement("input");
    input.type = "text";
    input.name = name;
    input.dataset.variable = name;
    input.setAttribute("aria-label", `Value of {{${name}}}`);
    label.append(input);
    box.append(label);
  }
}

function variableValues() {
  const values = {};
  for (const el of document.querySelectorAll("#preset-variables input[data-variable]")) values[el.dataset.variable] = el.value;
  return values;
}

async function deletePreset(p) {
  if (!confirm(`Delete the preset “${p.name}”? This cannot be undone.`)) return;
  const r = await call("DELETE", "/v1/presets/" + encodeURIComponent(p.id), null);
  if (r.error) { $("#preset-status").textContent = r.error.message; return; }
  if (presets.loaded && presets.loaded.id === p.id) unloadPreset();
  $("#notice").textContent = r.body.pending ? `Deleted “${p.name}” — will sync when the preset store is back.` : `Deleted “${p.name}”.`;
  searchPresets();
}

function unloadPreset() {
  presets.loaded = null;
  $("#preset-run").hidden = true;
}

function openSaveDialog() {
  const d = $("#save-dialog");
  $("#save-name").value = presets.loaded ? presets.loaded.name : "";
  $("#save-description").value = presets.loaded ? presets.loaded.description : "";
  $("#save-tags").value = presets.loaded ? presets.loaded.tags.join(", ") : "";
  $("#save-error").textContent = "";
  d.showModal();
  $("#save-name").focus();
}

async function savePreset(e) {
  e.preventDefault();
  const params = readParams(panels[0]);
  const body = {
    name: $("#save-name").value,
    description: $("#save-description").value,
    tags: $("#save-tags").value.split(",").map((t) => t.trim()).filter(Boolean),
    parameters: params,
  };
  if (mode() === "chat") { body.mode = "chat"; body.messages = chatMessages(); } else { body.prompt = $("#prompt").value; }
  const r = await call("POST", "/v1/presets", body);
  if (r.error) {
    $("#save-error").textContent = r.error.code === "conflict" ? `${r.error.message} — choose another name.` : r.error.message;
    return;
  }
  $("#save-dialog").close();
  loadPreset(r.body);
  $("#notice").textContent = r.body.pending ? `Saved “${r.body.name}” — will sync when the preset store is back.` : `Saved “${r.body.name}”.`;
  searchPresets();
}

function onSearchKey(e) {
  const n = presets.items.length;
  if (e.key === "ArrowDown" && n) { e.preventDefault(); presets.selected = (presets.selected + 1) % n; renderPresets(); }
  else if (e.key === "ArrowUp" && n) { e.preventDefault(); presets.selected = (presets.selected - 1 + n) % n; renderPresets(); }
  else if (e.key === "Enter" && presets.selected >= 0) { e.preventDefault(); loadPreset(presets.items[presets.selected]); }
}

function runPreset() {
  if (!presets.loaded) return;
  const panel = panels[0];
  if (panel.run) cancel(panel);
  clearPanel(panel);
  const requestId = randomId();
  const body = Object.assign(readParams(panel), {
    preset_id: presets.loaded.id, input_context: $("#input-context").value, request_id: requestId,
  });
  if ((presets.loaded.variables || []).some((v) => v !== "input")) body.variables = variableValues();
  const run = { requestId, start: performance.now(), firstAt: 0, tokens: 0, envId: null };
  panel.run = run;
  panel.output.classList.add("streaming");
  const path = presets.loaded.mode === "chat" ? "/v1/chat/completions" : "/v1/completions";
  run.envId = send("POST", path, body, (msg) => onEvent(panel, run, msg));
  updateButtons();
}

function compareCount() { return $("#compare-toggle").checked ? Number($("#compare-count").value) : 1; }
function activePanels() { return panels.slice(0, compareCount()); }

function submit() {
  const chat = mode() === "chat";
  const prompt = $("#prompt").value;
  const messages = chat ? chatMessages() : null;
  if (chat ? messages.length === 0 : !prompt.trim()) {
    // Nothing to complete: say so where the user looks, instead of generating from nothing.
    for (const panel of activePanels()) { clearPanel(panel); showError(panel, { message: chat ? "write a system prompt or a turn first" : "write a prompt first" }); }
    (chat ? $("#system-prompt") : $("#prompt")).focus();
    return;
  }
  for (const panel of activePanels()) {
    if (panel.run) cancel(panel);
    clearPanel(panel);
    const requestId = randomId();
    const body = Object.assign(chat ? { messages } : { prompt }, { request_id: requestId }, readParams(panel));
    const run = { requestId, start: performance.now(), firstAt: 0, tokens: 0, envId: null };
    panel.run = run;
    panel.output.classList.add("streaming");
    run.envId = send("POST", chat ? "/v1/chat/completions" : "/v1/completions", body, (msg) => onEvent(panel, run, msg));
  }
  updateButtons();
}

// ---------- chat mode ----------

function mode() { return document.querySelector("input[name=mode]:checked").value; }

function setMode(m) {
  for (const r of document.querySelectorAll("input[name=mode]")) r.checked = r.value === m;
  $("#completion-editor").hidden = m !== "completion";
  $("#chat-editor").hidden = m !== "chat";
}

function addTurn(role, content, focus) {
  const li = $("#turn-template").content.firstElementChild.cloneNode(true);
  const last = $("#turns").lastElementChild;
  // A new turn answers the last one: after a user turn comes the assistant's, and back.
  $(".turn-role", li).value = role || (last && $(".turn-role", last).value === "user" ? "assistant" : "user");
  $(".turn-content", li).value = content || "";
  $(".turn-up", li).addEventListener("click", () => { if (li.previousElementSibling) li.parentNode.insertBefore(li, li.previousElementSibling); });
  $(".turn-down", li).addEventListener("click", () => { if (li.nextElementSibling) li.parentNode.insertBefore(li.nextElementSibling, li); });
  $(".turn-delete", li).addEventListener("click", () => li.remove());
  $("#turns").append(li);
  if (focus) $(".turn-content", li).focus();
  return li;
}

/** The system prompt (if any) and the turns with text, in order, as chat messages. */
function chatMessages() {
  const out = [];
  const system = $("#system-prompt").value;
  if (system.trim()) out.push({ role: "system", content: system });
  for (const li of document.querySelectorAll("#turns .turn")) {
    const content = $(".turn-content", li).value;
    if (content.trim()) out.push({ role: $(".turn-role", li).value, content });
  }
  return out;
}

/** A leading system message goes to the system prompt box; every other message stays a turn, in its place. */
function setChat(messages) {
  $("#turns").textContent = "";
  const lead = messages.length && messages[0].role === "system";
  $("#system-prompt").value = lead ? messages[0].content : "";
  for (const m of messages.slice(lead ? 1 : 0)) addTurn(m.role, m.content, false);
}

// ---------- versions ----------

const versionsView = { versions: [] };

async function openHistory() {
  if (!presets.loaded) return;
  const r = await call("GET", `/v1/presets/${encodeURIComponent(presets.loaded.id)}/versions?limit=100`, null);
  $("#history-error").textContent = r.error ? r.error.message : "";
  versionsView.versions = r.error ? [] : r.body.data;
  for (const sel of [$("#diff-from"), $("#diff-to")]) {
    sel.textContent = "";
    for (const v of versionsView.versions) {
      const o = document.createElement("option");
      o.value = String(v.version);
      o.textContent = `v${v.version} · ${v.created_at.slice(0, 19).replace("T", " ")} · ${v.name}`;
      sel.append(o);
    }
  }
  // Newest first: compare the one before the current with the current.
  if (versionsView.versions.length) {
    $("#diff-to").value = String(versionsView.versions[0].version);
    $("#diff-from").value = String(versionsView.versions[Math.min(1, versionsView.versions.length - 1)].version);
  }
  renderDiff();
  if (!$("#history-dialog").open) $("#history-dialog").showModal();
}

/** A version as lines of text, the way the diff compares them. */
function versionText(v) {
  const lines = [`name: ${v.name}`, `description: ${v.description}`, `tags: ${v.tags.join(", ")}`, `mode: ${v.mode || "completion"}`,
    `parameters: ${JSON.stringify(v.parameters)}`];
  if (v.mode === "chat") {
    for (const m of v.messages) lines.push(...`[${m.role}] ${m.content}`.split("\n"));
  } else {
    lines.push("prompt:", ...v.prompt.split("\n"));
  }
  return lines;
}

/** Line diff: the common head and tail, then the longest common subsequence of what is left
 *  (a table of at most 4 M cells; past that the middle is shown as removed, then added).
 *  [kind, line] with kind " ", "-" or "+". */
function diffLines(a, b) {
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head++;
  let tail = 0;
  while (tail < a.length - head && tail < b.length - head && a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail++;
  const x = a.slice(head, a.length - tail), y = b.slice(head, b.length - tail);
  const out = a.slice(0, head).map((l) => [" ", l]);
  const n = x.length, m = y.length;
  if ((n + 1) * (m + 1) > 4e6) {
    for (const l of x) out.push(["-", l]);
    for (const l of y) out.push(["+", l]);
  } else {
    const lcs = Array.from({ length: n + 1 }, () => new Int32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    let i = 0, j = 0;
    while (i < n && j < m) {
      if (x[i] === y[j]) { out.push([" ", x[i]]); i++; j++; }
      else if (lcs[i + 1][j] >= lcs[i][j + 1]) out.push(["-", x[i++]]);
      else out.push(["+", y[j++]]);
    }
    while (i < n) out.push(["-", x[i++]]);
    while (j < m) out.push(["+", y[j++]]);
  }
  for (const l of a.slice(a.length - tail)) out.push([" ", l]);
  return out;
}

function renderDiff() {
  const pre = $("#history-diff");
  pre.textContent = "";
  const find = (n) => versionsView.versions.find((v) => String(v.version) === n);
  const from = find($("#diff-from").value), to = find($("#diff-to").value);
  $("#restore-version").disabled = !from;
  $("#restore-version").textContent = from ? `Restore v${from.version}` : "Restore";
  if (!from || !to) return;
  for (const [kind, line] of diffLines(versionText(from), versionText(to))) {
    const span = document.createElement("span");
    span.className = kind === "+" ? "ins" : kind === "-" ? "del" : "same";
    span.textContent = `${kind} ${line}`;
    pre.append(span);
  }
}

async function restoreVersion() {
  const n = $("#diff-from").value;
  if (!presets.loaded || !n) return;
  const r = await call("POST", `/v1/presets/${encodeURIComponent(presets.loaded.id)}/versions/${n}/restore`, null);
  if (r.error) { $("#history-error").textContent = r.error.message; return; }
  loadPreset(r.body);
  $("#notice").textContent = `Restored version ${n} of “${r.body.name}” as version ${r.body.version}.`;
  searchPresets();
  openHistory();
}

function onEvent(panel, run, msg) {
  if (panel.run !== run) return true;   // an older run: ignore its tail
  switch (msg.type) {
    case "accepted":
      return false;
    case "delta": {
      if (!run.firstAt) {
        run.firstAt = performance.now();
        panel.stats.ttft.textContent = `TTFT ${Math.round(run.firstAt - run.start)} ms`;
      }
      run.tokens++;
      panel.stats.tokens.textContent = `${run.tokens} tokens`;
      panel.output.append(document.createTextNode(msg.text));
      panel.output.scrollTop = panel.output.scrollHeight;
      const secs = (performance.now() - run.firstAt) / 1000;
      if (secs > 0.05) panel.stats.tps.textContent = `${(run.tokens / secs).toFixed(1)} tok/s`;
      return false;
    }
    case "done": {
      const secs = run.firstAt ? (performance.now() - run.firstAt) / 1000 : 0;
      if (run.tokens > 1 && secs > 0) panel.stats.tps.textContent = `${(run.tokens / secs).toFixed(1)} tok/s`;
      panel.stats.finish.textContent = `finish: ${msg.finish_reason}`;
      // The model's own count when it gives one (a token is not always one delta).
      const u = msg.usage || {};
      const n = u.completion_tokens ?? run.tokens;
      panel.stats.tokens.textContent = `${n} token${n === 1 ? "" : "s"}`;
      if (u.prompt_tokens != null) panel.stats.tokens.title = `prompt ${u.prompt_tokens} + answer ${n} = ${u.total_tokens ?? u.prompt_tokens + n} tokens`;
      finishRun(panel);
      return true;
    }
    case "error":
      showError(panel, msg.error || {}, msg.error && msg.error.code !== "invalid_request");
      panel.stats.finish.textContent = "finish: error";
      finishRun(panel);
      return true;
    case "disconnected":
      showError(panel, { code: "generation_interrupted", message: "The connection dropped and this generation was interrupted." }, true);
      panel.stats.finish.textContent = "finish: interrupted";
      finishRun(panel);
      return true;
    default:
      return false;
  }
}

function finishRun(panel) {
  panel.run = null;
  panel.output.classList.remove("streaming");
  updateButtons();
}

function cancel(panel) {
  const run = panel.run;
  if (!run) return;
  send("POST", `/v1/completions/${encodeURIComponent(run.requestId)}/cancel`, null, () => true);
}

function stopAll() { for (const p of panels) cancel(p); }

function updateButtons() {
  $("#stop").disabled = !panels.some((p) => p.run);
}

// ---------- wiring ----------

function setCompare() {
  const on = $("#compare-toggle").checked, count = compareCount();
  const box = $("#panels");
  box.classList.toggle("compare", on);
  box.classList.toggle("cols-3", count === 3);
  box.classList.toggle("cols-4", count === 4);
  $("#compare-count").hidden = !on;
  while (panels.length < count) {
    const next = makePanel("ABCD"[panels.length]);
    // A new column starts as a copy of A at another temperature, so the difference shows at once.
    const fa = panels[0].form.elements, fn = next.form.elements;
    for (const p of PARAMS) { fn[p].value = fa[p].value; fn[p + "-range"].value = fa[p + "-range"].value; }
    const t = ["0.2", "1.3", "0.6"][panels.length - 1];
    fn.temperature.value = fn["temperature-range"].value = t;
    if (panels.length === 1) fa.temperature.value = fa["temperature-range"].value = fa.temperature.value === "0.2" ? "0.9" : fa.temperature.value;
    fn.seed.value = fa.seed.value;
    fn.model.value = fa.model.value;
    panels.push(next);
    box.append(next.node);
    if (models) fillModelsNow(next);
  }
  panels.forEach((p, i) => { p.node.hidden = i >= count; });
}

function openShortcuts() { if (!$("#shortcuts-dialog").open) $("#shortcuts-dialog").showModal(); }

/** Typing in a field: single-key shortcuts stay out of the way. */
function typing(e) {
  const t = e.target;
  if (!t) return false;
  if (t.tagName === "INPUT") return !["checkbox", "radio", "button", "submit", "range", "file"].includes(t.type);
  return t.isContentEditable || t.tagName === "TEXTAREA" || t.tagName === "SELECT";
}

document.addEventListener("DOMContentLoaded", () => {
  panels.push(makePanel("A"));
  $("#panels").append(panels[0].node);
  addTurn("user", "", false);
  $("#submit").addEventListener("click", submit);
  $("#stop").addEventListener("click", stopAll);
  $("#compare-toggle").addEventListener("change", setCompare);
  $("#compare-count").addEventListener("change", setCompare);
  for (const r of document.querySelectorAll("input[name=mode]")) r.addEventListener("change", () => setMode(mode()));
  $("#add-turn").addEventListener("click", () => addTurn(null, "", true));
  $("#preset-history").addEventListener("click", openHistory);
  $("#diff-from").addEventListener("change", renderDiff);
  $("#diff-to").addEventListener("change", renderDiff);
  $("#restore-version").addEventListener("click", restoreVersion);
  $("#history-close").addEventListener("click", () => $("#history-dialog").close());
  $("#shortcuts-open").addEventListener("click", openShortcuts);
  $("#shortcuts-close").addEventListener("click", () => $("#shortcuts-dialog").close());
  document.addEventListener("keydown", (e) => {
    if (!signedIn) return;
    const dialogOpen = document.querySelector("dialog[open]");
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { if (!dialogOpen) { e.preventDefault(); submit(); } }
    else if (e.key === "Escape" && !dialogOpen) { stopAll(); }
    else if (e.key === "?" && !typing(e) && !dialogOpen) { e.preventDefault(); openShortcuts(); }
    else if (e.key === "/" && !typing(e) && !dialogOpen) { e.preventDefault(); $("#preset-search").focus(); }
  });
  $("#signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("#signin-key").value.trim()).then(() => { $("#signin-key").value = ""; });
  });
  $("#signout").addEventListener("click", signOut);
  $("#preset-search").addEventListener("input", refreshPresets);
  $("#preset-export").addEventListener("click", exportPresets);
  $("#preset-import").addEventListener("click", () => $("#preset-import-file").click());
  $("#preset-import-file").addEventListener("change", (e) => {
    const f = e.target.files[0];
    e.target.value = "";   // the same file may be chosen again
    if (f) importPresets(f);
  });
  $("#preset-search").addEventListener("keydown", onSearchKey);
  $("#save").addEventListener("click", openSaveDialog);
  $("#save-form").addEventListener("submit", savePreset);
  $("#save-cancel").addEventListener("click", () => $("#save-dialog").close());
  $("#run-preset").addEventListener("click", runPreset);
  $("#preset-unload").addEventListener("click", unloadPreset);
  if (!signInFromLink()) checkSession();
  window.addEventListener("hashchange", signInFromLink);
});

/** A sign-in link carries the key in the fragment (never sent to the server): trade it, then forget it. */
function signInFromLink() {
  const m = location.hash.match(/^#key=([A-Za-z0-9_\-]+)$/);
  if (!m) return false;
  history.replaceState(null, "", location.pathname + location.search);
  signIn(m[1]);
  return true;
}
