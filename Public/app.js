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
    // Every request in flight on this socket is lost: tell its owner.
    const lost = [...conn.handlers.values()];
    conn.handlers.clear();
    for (const h of lost) h({ type: "disconnected" });
    const wait = Math.min(conn.backoffMs, 10000) * (0.75 + Math.random() * 0.5);
    conn.backoffMs = Math.min(conn.backoffMs * 2, 10000);
    setConnState("closed", `disconnected — retrying in ${(wait / 1000).toFixed(1)} s`);
    setTimeout(connect, wait);
  };
}

/** Sends an envelope; `onMessage` gets every reply carrying its id until it returns true (done). */
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
    stats: { ttft: $(".ttft", node), tps: $(".tps", node), finish: $(".finish", node) },
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
  panel.stats.finish.textContent = "—";
  for (const el of panel.form.querySelectorAll(".field.invalid")) el.classList.remove("invalid");
}

// ---------- running ----------

function activePanels() { return $("#compare-toggle").checked ? panels : panels.slice(0, 1); }

function submit() {
  const prompt = $("#prompt").value;
  for (const panel of activePanels()) {
    if (panel.run) cancel(panel);
    clearPanel(panel);
    const requestId = randomId();
    const body = Object.assign({ prompt, request_id: requestId }, readParams(panel));
    const run = { requestId, start: performance.now(), firstAt: 0, tokens: 0, envId: null };
    panel.run = run;
    panel.output.classList.add("streaming");
    run.envId = send("POST", "/v1/completions", body, (msg) => onEvent(panel, run, msg));
  }
  updateButtons();
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

function setCompare(on) {
  $("#panels").classList.toggle("compare", on);
  if (on && panels.length < 2) {
    const b = makePanel("B");
    // B starts as a copy of A with a higher temperature, so the difference shows at once.
    const fa = panels[0].form.elements, fb = b.form.elements;
    for (const p of PARAMS) { fb[p].value = fa[p].value; fb[p + "-range"].value = fa[p + "-range"].value; }
    fb.temperature.value = fb["temperature-range"].value = "0.2";
    fa.temperature.value = fa["temperature-range"].value = fa.temperature.value === "0.2" ? "0.9" : fa.temperature.value;
    fb.seed.value = fa.seed.value;
    panels.push(b);
    $("#panels").append(b.node);
    if (models) fillModelsNow(b);
  }
  panels.forEach((p, i) => { p.node.hidden = i > 0 && !on; });
}

document.addEventListener("DOMContentLoaded", () => {
  panels.push(makePanel("A"));
  $("#panels").append(panels[0].node);
  $("#submit").addEventListener("click", submit);
  $("#stop").addEventListener("click", stopAll);
  $("#compare-toggle").addEventListener("change", (e) => setCompare(e.target.checked));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); }
    else if (e.key === "Escape") { stopAll(); }
  });
  connect();
});
