// The health dashboard refreshes its figures every few seconds.
import { api, el } from "./console.js";

function valueText(panel) {
  if (panel.error) return "unknown";
  if (!panel.rows.length) return "no data";
  return panel.rows
    .map((r) => `${r.label ? r.label + ": " : ""}${r.value === null ? "—" : Number(r.value).toFixed(r.value % 1 ? 2 : 0)}${panel.unit ? " " + panel.unit : ""}`)
    .join(" · ");
}

async function refresh() {
  const { ok, data } = await api("/api/health");
  if (!ok) return;
  for (const panel of data.panels) {
    const card = document.querySelector(`[data-panel="${panel.key}"]`);
    if (!card) continue;
    card.className = `panel ${panel.status}`;
    card.querySelector(".value").textContent = valueText(panel);
    card.querySelector(".error").textContent = panel.error;
  }
  const alerts = document.getElementById("alerts-body");
  if (alerts) {
    alerts.replaceChildren(
      ...data.alerts.map((a) => el("tr", { class: `alert-${a.state}` }, el("td", {}, a.name), el("td", {}, a.state), el("td", {}, a.severity), el("td", {}, a.summary), el("td", {}, a.since))),
    );
  }
  document.getElementById("health-at").textContent = new Date(data.at_ms).toISOString();
}

setInterval(refresh, 5000);
