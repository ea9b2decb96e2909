// Behaviour shared by every console page: signed commands, live updates, key status.
// Text from agents is only ever placed with textContent, never parsed as HTML.
import { loadKey, signCommand } from "./tpsign.js";

const csrf = document.querySelector('meta[name="csrf"]')?.content ?? "";

export async function api(path, body) {
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: body === undefined ? {} : { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = { error: `HTTP ${response.status}` };
  }
  return { ok: response.ok, status: response.status, data };
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  return node;
}

// Sign `kind` with this browser's key and relay it; resolves to the workers' verdict.
export async function sendCommand(kind, payload) {
  const key = await loadKey();
  if (!key) throw new Error("this browser holds no operator key: enrol it first (/enroll)");
  for (let attempt = 0; attempt < 3; attempt++) {
    const prepared = await api("/api/commands/prepare", { kind, payload, key_id: key.kid, label: key.label });
    if (!prepared.ok) throw new Error(prepared.data.error);
    const { record } = await signCommand(key, kind, payload, prepared.data);
    const sent = await api("/api/commands", { record });
    if (sent.status === 409) continue; // another tab signed first: sign at the next place
    if (!sent.ok) throw new Error(sent.data.error);
    return sent.data;
  }
  throw new Error("another tab keeps signing at the same place in this key's history; retry");
}

function payloadOf(form) {
  const payload = {};
  for (const input of form.querySelectorAll("[data-field]")) {
    const name = input.dataset.field;
    let value = input.value.trim();
    if (value === "" && input.dataset.optional !== undefined) continue;
    payload[name] = input.dataset.type === "int" ? Number.parseInt(value, 10) : value;
  }
  return payload;
}

function showResult(target, ok, text) {
  if (!target) return;
  target.textContent = text;
  target.className = ok ? "result ok" : "result fail";
}

async function onCommandSubmit(event) {
  const form = event.target.closest("form[data-command]");
  if (!form) return;
  event.preventDefault();
  const result = form.querySelector("[data-result]");
  const button = form.querySelector("button");
  if (button) button.disabled = true;
  showResult(result, true, "signing…");
  try {
    const verdict = await sendCommand(form.dataset.command, payloadOf(form));
    showResult(result, verdict.applied, verdict.applied ? `applied: ${verdict.reason}` : `refused: ${verdict.reason}`);
  } catch (error) {
    showResult(result, false, error.message);
  } finally {
    if (button) button.disabled = false;
  }
}

async function showKeyStatus() {
  const badge = document.getElementById("key-status");
  if (!badge) return;
  const key = await loadKey().catch(() => null);
  if (!key) {
    badge.replaceChildren("no operator key in this browser · ", el("a", { href: "/enroll" }, "enrol"));
    return;
  }
  const { ok, data } = await api(`/api/operator?kid=${encodeURIComponent(key.kid)}`);
  const name = `${key.label} (${key.kid.slice(0, 10)}…)`;
  badge.dataset.kid = key.kid;
  badge.dataset.trusted = ok && data.trusted ? "yes" : "no";
  badge.textContent = ok && data.trusted ? `operator key ${name}: trusted` : `operator key ${name}: not trusted yet`;
}

const FEED_ROWS = 100;

function feedRow(d) {
  const link = el("a", { href: `/lineage/intent/${encodeURIComponent(d.intent_id)}` }, d.intent_id.slice(0, 12));
  return el(
    "tr",
    { class: `outcome-${d.status}` },
    el("td", {}, d.log_index),
    el("td", {}, new Date(d.occurred_at_ms).toISOString().replace("T", " ").slice(0, 23)),
    el("td", {}, d.agent_id),
    el("td", {}, d.action),
    el("td", {}, d.resource),
    el("td", { class: "status" }, d.status),
    el("td", {}, (d.reasons || []).join("; ")),
    el("td", {}, link),
  );
}

function feedMatches(d) {
  const filter = document.getElementById("feed-filter");
  if (!filter) return true;
  const agent = filter.querySelector('[name="feed_agent"]').value.trim();
  const outcome = filter.querySelector('[name="feed_outcome"]').value;
  return (!agent || d.agent_id === agent) && (!outcome || d.status === outcome);
}

async function refreshState() {
  const panels = document.getElementById("state");
  if (!panels) return;
  const response = await fetch("/governance/state", { credentials: "same-origin" });
  if (!response.ok) return;
  const parsed = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = parsed.getElementById("state");
  if (fresh) panels.replaceChildren(...fresh.childNodes);
}

function onDecision(message) {
  const d = JSON.parse(message.data);
  const body = document.getElementById("feed-body");
  if (body && feedMatches(d)) {
    body.prepend(feedRow(d));
    while (body.rows.length > FEED_ROWS) body.deleteRow(-1);
  }
}

function onControl(message) {
  const c = JSON.parse(message.data);
  const note = document.getElementById("last-command");
  if (note) note.textContent = `${c.kind} ${c.subject}: ${c.applied ? "applied" : "refused: " + c.reason}`;
  refreshState();
}

// One event stream per visible page: a browser allows six connections to the console,
// so a hidden tab gives its stream back and reopens it when shown again.
let source = null;
function connect() {
  if (source || document.hidden) return;
  source = new EventSource("/events");
  source.addEventListener("decision", onDecision);
  source.addEventListener("control", onControl);
}
function disconnect() {
  if (source) source.close();
  source = null;
}
function live() {
  if (!document.body.dataset.live) return;
  document.addEventListener("visibilitychange", () => (document.hidden ? disconnect() : (connect(), refreshState())));
  window.addEventListener("pagehide", disconnect);
  connect();
}

document.addEventListener("submit", onCommandSubmit);
showKeyStatus();
live();
