// Enrolment: make this browser's operator key and have it trusted.
// With an invitation link (#<id>.<secret>, a fragment never sent to any server), the
// key is enrolled by the operator who invited you; without one, the page shows the
// command an existing operator runs after comparing the key id with you.
import { createKey, loadKey } from "./tpsign.js";
import { api } from "./console.js";

const $ = (id) => document.getElementById(id);

function say(text, ok = true) {
  $("enroll-status").textContent = text;
  $("enroll-status").className = ok ? "result ok" : "result fail";
}

async function waitTrusted(kid) {
  for (let i = 0; i < 120; i++) {
    const { ok, data } = await api(`/api/operator?kid=${encodeURIComponent(kid)}`);
    if (ok && data.trusted) return true;
    await new Promise((r) => setTimeout(r, 1000));
  }
  return false;
}

async function enroll(event) {
  event.preventDefault();
  const label = $("label").value.trim();
  if (!label) return say("give a name the other operators will know you by", false);
  const invite = sessionStorage.getItem("tp-invite");
  let key = await loadKey();
  if (!key) key = await createKey(label);
  $("kid").textContent = key.kid;
  if (!invite) {
    $("manual").hidden = false;
    $("manual-command").textContent = `trustplane operators add --x ${key.x} --kid ${key.kid} --label '${label.replace(/'/g, "")}'`;
    return say("no invitation: ask an operator to run the command below after comparing the key id with you");
  }
  const [inviteId, secret] = invite.split(".");
  say("sending your public key…");
  const { ok, data } = await api("/api/enroll", { invite_id: inviteId, secret, x: key.x, kid: key.kid, label });
  if (!ok) return say(`refused: ${data.error}`, false);
  sessionStorage.removeItem("tp-invite");
  say("waiting for the inviting operator to enrol your key…");
  if (await waitTrusted(key.kid)) {
    say("your key is trusted: commands you sign in this browser now reach the workers");
    $("next").hidden = false;
  } else {
    say("not enrolled yet: is `trustplane operators invite` still running?", false);
  }
}

async function start() {
  if (location.hash.length > 1) {
    sessionStorage.setItem("tp-invite", location.hash.slice(1));
    history.replaceState(null, "", location.pathname); // the secret leaves the address bar
  }
  const key = await loadKey();
  if (key) {
    $("kid").textContent = key.kid;
    $("label").value = key.label;
  }
  $("has-invite").textContent = sessionStorage.getItem("tp-invite") ? "yes" : "no";
  $("enroll-form").addEventListener("submit", enroll);
}

start();
