// The health dashboard refreshes its figures every few seconds.
import { api, el } from "./console.js";

const number = (v) => (v === null ? "—" : Number.isInteger(v) ? String(v) : v.toFixed(2));

function valueNodes(panel) {
  if (panel.error) return ["unknown"];
  if (!panel.rows.length) return ["no data"];
  if (panel.rows.length === 1 && !panel.rows[0].label) return [`${number(panel.rows[0].value)} ${panel.unit}`];
  const list = el("ul", { class: "rows" });
  for (const r of panel.rows) {
    list.append(el("li", {}, el("span", { class: "label" }, r.label), " ", el("span", { class: "num" }, `${number(r.value)} ${panel.unit}`)));
  }
  return [list];
}

async function refresh() {
  const { ok, data } = await api("/api/health");
  if (!ok) return;
  for (const panel of data.panels) {
    const card = document.querySelector(`[data-panel="${panel.key}"]`);
    if (!card) continue;
    card.className = `panel ${panel.status}`;
    card.querySelector(".value").replaceChildren(...valueNodes(panel));
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
