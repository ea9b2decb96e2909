// What-if: replay recorded intents against a draft bundle, then (optionally) publish it.
import { api, el, sendCommand } from "./console.js";

const $ = (id) => document.getElementById(id);

function draftDocument() {
  try {
    return JSON.parse($("draft").value);
  } catch (error) {
    throw new Error(`the draft is not JSON: ${error.message}`);
  }
}

function summary(report) {
  const counts = Object.entries(report.counts || {}).map(([k, v]) => `${k.replace("_", " ")}: ${v}`).join(" · ");
  const more = report.truncated ? " (more were recorded: raise the number to replay them)" : "";
  return `draft ${report.draft.version} against ${report.total} recorded intents in ${report.elapsed_ms} ms — ${counts}${more}`;
}

function why(judgement, row) {
  if (!judgement) return row.stopped_by ? `denied by ${row.stopped_by} before policy runs` : "";
  const policies = judgement.policies.map((p) => `${p.id}${p.reason ? ": " + p.reason : ""}`);
  return [...policies, ...judgement.why, ...judgement.errors].filter(Boolean).join("; ");
}

function rowOf(r) {
  const i = r.intent;
  return el(
    "tr",
    { class: `effect-${r.effect}` },
    el("td", {}, el("a", { href: `/lineage/intent/${encodeURIComponent(i.intent_id)}` }, i.intent_id.slice(0, 12))),
    el("td", {}, i.agent_id),
    el("td", {}, i.action),
    el("td", {}, i.resource),
    el("td", {}, JSON.stringify(i.parameters)),
    el("td", {}, i.recorded_outcome),
    el("td", {}, r.now_class ?? "—"),
    el("td", {}, r.draft_class ?? "—"),
    el("td", { class: "effect" }, r.effect.replace("_", " ")),
    el("td", {}, [why(r.draft, r), r.note].filter(Boolean).join(" — ")),
  );
}

async function run(event) {
  event.preventDefault();
  const out = $("whatif-result");
  out.textContent = "replaying…";
  let document_;
  try {
    document_ = draftDocument();
  } catch (error) {
    out.textContent = error.message;
    return;
  }
  const limit = Number.parseInt($("whatif-limit").value, 10);
  const { ok, data } = await api("/api/whatif", { document: document_, limit });
  if (!ok) {
    out.textContent = data.error;
    out.className = "result fail";
    return;
  }
  out.className = "result ok";
  out.textContent = summary(data);
  const onlyChanges = $("whatif-changes").checked;
  const rows = (data.rows || []).filter((r) => !onlyChanges || !["unchanged", "unaffected"].includes(r.effect));
  $("whatif-rows").replaceChildren(...rows.map(rowOf));
  $("whatif-table").hidden = false;
}

async function publish() {
  const out = $("publish-result");
  try {
    const verdict = await sendCommand("policy.publish", draftDocument());
    out.textContent = verdict.applied ? `published: ${verdict.reason}` : `refused: ${verdict.reason}`;
    out.className = verdict.applied ? "result ok" : "result fail";
  } catch (error) {
    out.textContent = error.message;
    out.className = "result fail";
  }
}

$("whatif-form")?.addEventListener("submit", run);
$("publish")?.addEventListener("click", publish);
