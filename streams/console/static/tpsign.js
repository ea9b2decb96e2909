// Operator keys held by this browser, and the signing of control commands.
//
// The private key is a non-extractable WebCrypto Ed25519 key kept in IndexedDB: no
// script, not even this one, can read it out; it can only ask the browser to sign.
// A command is signed exactly as the CLI signs it (processors/control/commands.py):
// Ed25519 over DSSE PAE(type, RFC 8785 JSON of the command body).

export const CONTROL_PAYLOAD_TYPE = "application/vnd.trustplane.control+json";
const DB = "trustplane-console";
const STORE = "operator-keys";
const SLOT = "current";
const enc = new TextEncoder();

// RFC 8785 (JCS). ECMAScript's JSON.stringify of strings and numbers is the RFC's
// serialization; keys sort by UTF-16 code units, which is Array.prototype.sort's order.
export function canonicalize(value) {
  return jcs(value, false);
}

// RFC 8785 of values read back (JSON, Avro doubles), as a verifier recomputes signed bytes:
// an integral number beyond 2^53-1 is a double there and is written as one ("1e+21"), as
// Python's rfc8785 writes a float. canonicalize refuses it (it may be a rounded integer).
export function canonicalizeDoubles(value) {
  return jcs(value, true);
}

function jcs(value, doubles) {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "string":
      if (!value.isWellFormed()) throw new TypeError("a string holds a lone surrogate");
      return JSON.stringify(value);
    case "number":
      if (!Number.isFinite(value)) throw new TypeError("NaN and Infinity have no JSON form");
      if (!doubles && Number.isInteger(value) && !Number.isSafeInteger(value)) {
        throw new TypeError("an integer beyond 2^53-1: send it as a string");
      }
      return JSON.stringify(value);
    case "object": {
      if (Array.isArray(value)) return "[" + Array.from(value, (item) => jcs(item, doubles)).join(",") + "]";
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) throw new TypeError("only plain objects");
      return (
        "{" +
        Object.keys(value)
          .sort()
          .map((k) => jcs(k, doubles) + ":" + jcs(value[k], doubles))
          .join(",") +
        "}"
      );
    }
  }
  throw new TypeError(`no JSON form for a ${typeof value}`);
}

// DSSE v1 pre-authentication encoding; lengths are byte counts.
export function pae(type, body) {
  const t = enc.encode(type);
  const parts = [enc.encode(`DSSEv1 ${t.length} `), t, enc.encode(` ${body.length} `), body];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function binary(bytes) {
  let text = "";
  for (const b of new Uint8Array(bytes)) text += String.fromCharCode(b);
  return text;
}
export const b64 = (bytes) => btoa(binary(bytes));
export const b64url = (bytes) => b64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
export const hex = (bytes) =>
  Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");

// The public key's JWK "x" and its RFC 7638 thumbprint (the key id workers know it by).
export async function publicIdentity(publicKey) {
  const x = b64url(await crypto.subtle.exportKey("raw", publicKey));
  const kid = b64url(
    await crypto.subtle.digest("SHA-256", enc.encode(`{"crv":"Ed25519","kty":"OKP","x":"${x}"}`)),
  );
  return { x, kid };
}

function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function withStore(mode, action) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = action(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

// This browser's operator key: {privateKey, publicKey, kid, x, label, createdAt}, or null.
export async function loadKey() {
  return (await withStore("readonly", (store) => store.get(SLOT))) ?? null;
}

export async function createKey(label) {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const { x, kid } = await publicIdentity(pair.publicKey);
  const record = { privateKey: pair.privateKey, publicKey: pair.publicKey, kid, x, label, createdAt: Date.now() };
  await withStore("readwrite", (store) => store.put(record, SLOT));
  if (navigator.storage && navigator.storage.persist) navigator.storage.persist().catch(() => {});
  return record;
}

export async function forgetKey() {
  await withStore("readwrite", (store) => store.delete(SLOT));
}

// A ControlCommand record signed by `key` at the place `prepared` gives (subject,
// sequence, previous, now_ms, issued_by: from POST /api/commands/prepare).
export async function signCommand(key, kind, payload, prepared) {
  const body = {
    command_id: crypto.randomUUID(),
    kind,
    subject: prepared.subject,
    payload,
    issued_by: prepared.issued_by,
    issued_at_ms: prepared.now_ms,
    key_id: key.kid,
    sequence: prepared.sequence,
    previous: prepared.previous,
  };
  const message = pae(CONTROL_PAYLOAD_TYPE, enc.encode(canonicalize(body)));
  const signature = await crypto.subtle.sign({ name: "Ed25519" }, key.privateKey, message);
  const digest = "sha256:" + hex(await crypto.subtle.digest("SHA-256", message));
  const record = { ...body, payload: canonicalize(payload), signature: b64(signature) };
  return { record, digest };
}
