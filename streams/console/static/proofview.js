// The Proof Viewer page: fetch material (or read a dropped file), verify it here with
// proofs.js against the keys this browser pinned, and show every step.
import { allOk, b64decode, verifyApproval, verifyEvidence } from "./proofs.js";
import { api, el } from "./console.js";

const $ = (id) => document.getElementById(id);
const PIN_VKEY = "trustplane.proof.notary-vkey";
const PIN_JWKS = "trustplane.proof.gate-jwks";
const REMEMBERED = "trustplane.proof.checkpoint";

const load = (name) => {
  try {
    return JSON.parse(localStorage.getItem(name) ?? "null");
  } catch {
    return null;
  }
};
const save = (name, value) => localStorage.setItem(name, JSON.stringify(value));

async function fetchText(path) {
  try {
    const response = await fetch(path, { credentials: "same-origin" });
    return response.ok ? (await response.text()).trim() : null;
  } catch {
    return null; // offline: only what this browser pinned counts
  }
}

// The notary's verifier key: pinned the first time (from the console's notary); after
// that, the pinned one is used and a bundle naming another is an alarm (proofs.js).
async function notaryKey(notes) {
  let pinned = load(PIN_VKEY);
  if (!pinned) {
    const fetched = await fetchText("/api/proof/vkey");
    if (fetched) {
      pinned = { vkey: fetched, pinnedAt: new Date().toISOString(), from: "the console's notary" };
      save(PIN_VKEY, pinned);
      notes.push(`pinned the notary's verifier key ${fetched} (first use)`);
    }
  }
  return pinned?.vkey ?? null;
}

// The gate's keys: pinned on first use; a key id the pinned set does not know is looked
// up again (keys rotate), but a pinned key id never changes its key.
async function gateKeys(bundle, notes) {
  let pinned = load(PIN_JWKS);
  const wanted = new Set();
  for (const a of bundle?.approvals ?? []) for (const s of a?.envelope?.signatures ?? []) wanted.add(s.keyid);
  for (const e of bundle?.events ?? []) if (e?.event?.signer) wanted.add(e.event.signer);
  const known = new Set((pinned?.keys ?? []).map((k) => k.kid));
  if (!pinned || [...wanted].some((kid) => !known.has(kid))) {
    const text = await fetchText("/api/proof/jwks");
    if (text) {
      const served = JSON.parse(text);
      const merged = new Map((pinned?.keys ?? []).map((k) => [k.kid, k]));
      for (const key of served.keys ?? []) {
        const old = merged.get(key.kid);
        if (old && old.x !== key.x) {
          notes.push(`ALARM: the console now serves another key under the pinned key id ${key.kid}; kept the pinned one`);
          continue;
        }
        if (!old) notes.push(`pinned gate key ${key.kid}`);
        merged.set(key.kid, { ...old, ...key, x: old?.x ?? key.x });
      }
      pinned = { keys: [...merged.values()] };
      save(PIN_JWKS, pinned);
    }
  }
  return pinned;
}

function judgeTime(bundle) {
  const reported = (bundle?.outcomes ?? []).map((o) => Number(o.reported_at_ms)).filter(Number.isFinite);
  return reported.length ? { nowMs: Math.min(...reported), why: "when the executor reported it" } : { nowMs: Date.now(), why: "now" };
}

function show(steps, notes, source) {
  const ok = allOk(steps);
  $("verdict").textContent = ok ? "PASS" : "FAIL";
  $("verdict").className = `verdict ${ok ? "pass" : "fail"}`;
  $("source").replaceChildren(source, ...notes.map((n) => el("div", { class: n.startsWith("ALARM") ? "fail" : "" }, n)));
  $("steps").replaceChildren(
    ...steps.map((s) => {
      const state = s.ok ? "pass" : s.skipped ? "skip" : s.pending ? "skip" : "fail";
      const tag = s.ok ? "PASS" : s.skipped ? "SKIPPED" : s.pending ? "PENDING" : "FAIL";
      return el("li", { class: state, "data-step": s.id }, el("span", { class: "tag" }, tag), el("strong", {}, s.title), " — ", s.reason ?? "");
    }),
  );
  showAnchors();
}

function showAnchors() {
  $("pinned-vkey").textContent = load(PIN_VKEY)?.vkey ?? "none pinned yet";
  $("pinned-jwks").textContent = (load(PIN_JWKS)?.keys ?? []).map((k) => k.kid).join(", ") || "none pinned yet";
  const r = load(REMEMBERED);
  $("remembered").textContent = r ? `${r.origin ?? ""} size ${r.size} root ${r.rootHash}` : "none yet";
}

export async function verifyBundle(bundle, source) {
  const notes = [];
  const vkey = await notaryKey(notes);
  const jwks = await gateKeys(bundle, notes);
  const remembered = load(REMEMBERED);
  const { nowMs, why } = judgeTime(bundle);
  const options = { pinnedVkey: vkey, jwks, remembered, nowMs };
  let result = await verifyEvidence(bundle, options);
  if (result.needs?.length) {
    const answers = [];
    for (const need of result.needs) {
      const text = await fetchText(`/api/proof/consistency?old=${need.old}&new=${need.new}`);
      if (text) answers.push(JSON.parse(text));
    }
    if (answers.length) result = await verifyEvidence(bundle, { ...options, consistency: answers });
  }
  if (result.ok && result.remember) save(REMEMBERED, result.remember);
  notes.push(`approvals judged at ${new Date(nowMs).toISOString()} (${why})`);
  show(result.steps, notes, source);
  return result;
}

async function lookup(q) {
  const { ok, data } = await api(`/api/proof/lookup?q=${encodeURIComponent(q)}`);
  if (!ok) {
    show([{ id: "lookup", title: "The material was found", ok: false, reason: data.error }], [], `lookup ${q}`);
    return;
  }
  await verifyBundle(data, `evidence for ${q}, from the console (verified here)`);
}

async function loadPath(path) {
  if (!path.startsWith("/api/")) {
    show([{ id: "load", title: "The material was loaded", ok: false, reason: "only this console's /api/ paths load" }], [], path);
    return;
  }
  const text = await fetchText(path);
  let bundle = text;
  try {
    bundle = JSON.parse(text ?? "");
  } catch {
    // proofs.js reports the parse failure as a step
  }
  await verifyBundle(bundle, `material from ${path}`);
}

$("lookup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  lookup($("lookup").value.trim());
});

$("bundle-file").addEventListener("change", async () => {
  const file = $("bundle-file").files[0];
  if (!file) return;
  await verifyBundle(await file.text(), `the file ${file.name} (offline: nothing fetched but pinned keys and consistency)`);
});

$("verify-envelope").addEventListener("click", async () => {
  const notes = [];
  let envelope = $("envelope").value;
  try {
    envelope = JSON.parse(envelope);
  } catch {
    // verifyApproval reports it
  }
  const jwks = await gateKeys({ approvals: [{ envelope }] }, notes);
  const b64 = $("intent-b64").value.trim();
  const intentBytes = b64 ? b64decode(b64) : undefined;
  const steps = await verifyApproval(envelope, jwks, { intentBytes, nowMs: Date.now() });
  show(steps, notes, "a pasted approval envelope, judged now");
});

$("forget").addEventListener("click", () => {
  for (const name of [PIN_VKEY, PIN_JWKS, REMEMBERED]) localStorage.removeItem(name);
  showAnchors();
});

showAnchors();
const params = new URLSearchParams(location.search);
if (params.get("q")) {
  $("lookup").value = params.get("q");
  lookup(params.get("q"));
} else if (params.get("load")) {
  loadPath(params.get("load"));
}
