// Runtime Governance Demo: start a scenario, then follow it intent by intent.
import { api, el } from "./console.js";

const $ = (id) => document.getElementById(id);
let polling = null;

function intentRow(i) {
  const link = i.intent_id
    ? el("a", { href: `/lineage/intent/${encodeURIComponent(i.intent_id)}` }, i.intent_id.slice(0, 12))
    : "";
  const proof = i.intent_id ? el("a", { href: `/proof?q=${encodeURIComponent(i.intent_id)}` }, "verify") : "";
  const matched = i.outcome ? (i.as_expected ? "as expected" : `NOT as expected: ${i.expected_text ?? i.expected}`) : "waiting";
  return el(
    "tr",
    { class: `outcome-${i.outcome ?? "waiting"}` },
    el("td", {}, link),
    el("td", {}, i.label ?? ""),
    el("td", {}, i.agent_id ?? ""),
    el("td", {}, i.action ?? ""),
    el("td", {}, i.resource ?? ""),
    el("td", {}, i.expected ?? ""),
    el("td", { class: "status" }, `${i.outcome ?? "…"} (${matched})`),
    el("td", {}, [i.layer, (i.reasons || []).join("; ")].filter(Boolean).join(": ")),
    el("td", {}, proof),
  );
}

function findings(run) {
  return (run.findings || []).map((f) => {
    const value = typeof f.value === "object" && f.value !== null ? JSON.stringify(f.value) : f.value;
    const state = f.ok === true ? "ok" : f.ok === false ? "fail" : "";
    return el("p", { class: `finding ${state}`, "data-finding": f.name }, el("strong", {}, `${f.name}: `), `${value ?? ""}`, f.detail ? ` — ${f.detail}` : "");
  });
}

function render(run) {
  $("run").hidden = false;
  $("run-id").textContent = run.run_id ?? "";
  $("run-scenario").textContent = run.scenario ?? "";
  $("run-status").textContent = `${run.status ?? ""}${run.progress && run.status === "running" ? ` (${run.progress})` : ""}`;
  $("run-status").className = `verdict ${run.status === "passed" ? "pass" : run.status === "failed" || run.status === "error" ? "fail" : ""}`;
  $("run-intents").replaceChildren(...(run.intents || []).map(intentRow));
  $("run-findings").replaceChildren(...findings(run), ...(run.error ? [el("p", { class: "result fail" }, run.error)] : []));
  $("run-artifacts").replaceChildren(
    ...(run.artifacts || []).flatMap((name) => [
      el("a", { href: `/proof?load=${encodeURIComponent(`/api/demo/runs/${run.run_id}/artifacts/${name}`)}` }, `verify ${name} in the Proof Viewer`),
      " · ",
    ]),
  );
}

async function follow(runId) {
  clearInterval(polling);
  const tick = async () => {
    const { ok, data } = await api(`/api/demo/runs/${encodeURIComponent(runId)}`);
    if (!ok) return;
    render(data);
    if (!["running", "starting", "queued"].includes(data.status)) clearInterval(polling);
  };
  polling = setInterval(tick, 700);
  await tick();
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.run");
  if (!button) return;
  button.disabled = true;
  const { ok, data } = await api("/api/demo/runs", { scenario: button.dataset.scenario });
  button.disabled = false;
  if (!ok) {
    render({ status: "error", error: data.error, scenario: button.dataset.scenario });
    return;
  }
  follow(data.run_id);
});
