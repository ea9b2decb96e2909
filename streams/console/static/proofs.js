// Proof Viewer verifiers: every claim of an approval or an evidence bundle, checked in
// this browser from the bytes, with keys the caller pins. No server is trusted; nothing
// here throws on bad input (a malformed value gives a failing step with its reason).
// Runs in Chromium and in Node 20 (WebCrypto SHA-256 and Ed25519, no dependencies).
//
// The formats and the order of the checks are the README's ("Signed approvals",
// "Provable lineage"); each function names the Python code it mirrors.
//
// A step is {id, title, ok, reason}, plus `skipped: true` when a step it needs failed, or
// `pending: true` when it needs a proof the page must fetch first. `reason` says what was
// checked or, on failure, what was expected and what was found. Sizes and indices accept
// a number, a BigInt or a decimal string; hashes accept bytes or standard base64.
//
//   sha256(bytes) → Promise<Uint8Array>;  b64(bytes), hex(bytes) (from tpsign.js)
//   b64decode(text, {urlSafe, unpadded}) → Uint8Array | null;  fromHex(text) → Uint8Array | null
//   parseJwks(jwks) → Promise<Keyset {keys: Map<kid, {kid, publicKey, nbf, retiredAt}>, problems}>
//   decodeIntent(bytes) → {ok, record, fingerprint, reason}  (Avro single-object Intent)
//   parametersDigest(parameters) → Promise<{ok, digest, reason}>
//   verifyApproval(envelope, jwks, {intentBytes, nowMs, parameters, prefix}) → Promise<step[]>
//       approval.envelope, .payloadType, .payload, .signature, .statement, .expiry,
//       .intent, .parameters  (README "Verifying with your own code", steps 1-6)
//   eventHash(event, prevHash?) → Promise<{ok, hash, reason}>  (processors/log/chain.py)
//   verifyLineageEvent(event, jwks, {previous, atMs, prefix}) → Promise<step[]>
//       event.signature, event.hash, event.link (only when `previous` is given)
//   leafHash(leafBytes), nodeHash(left, right), eventLeafHash(event) → Promise<Uint8Array>
//   verifyInclusion(leafHash, index, treeSize, path, root) → Promise<{ok, reason}>
//   verifyConsistency(size1, size2, proof, root1, root2) → Promise<{ok, reason}>
//   parseVerifierKey(vkey) → Promise<{ok, name, keyId, keyIdHex, publicKey, vkey, reason}>
//   openNote(note, vkey) → Promise<{ok, text, reason}>  (C2SP signed note)
//   parseCheckpoint(text) → {ok, origin, size, rootHash, reason}  (C2SP tlog-checkpoint)
//   verifyNote(note, vkey, {origin}) → Promise<{ok, origin, size, rootHash, text, reason}>
//   verifyEvidence(bundle, {pinnedVkey, jwks, remembered, consistency, nowMs})
//       → Promise<{ok, steps, needs, remember, statements}>
//   allOk(steps) → boolean
//
// verifyEvidence takes a bundle (streams/console/evidence.py) as an object or JSON text and
// the trust anchors as options: `pinnedVkey` (the notary's verifier key text) and `jwks`
// (the gate's JWKS); the keys a bundle carries are only compared with them, never used.
// `remembered` is the last checkpoint this browser verified ({size, rootHash (base64 or
// bytes), origin?}); `consistency` holds the notary's /proof/consistency answers
// ({proof: {old_size, new_size, consistency_path}} or the bare proof).
// Its steps, in order:
//   bundle; keys.gate, keys.notary, keys.notary.changed ("verifier key changed", when the
//   bundle names a notary key); intent.bytes, intent.fields (when the bundle has an intent);
//   per approval k: approval.k.<as verifyApproval>, approval.k.listed; events.unproven;
//   per event i: event.i.signature, .hash, .link (when the event before it in the log is in
//   the bundle too), .leaf, .inclusion, .checkpoint (signed by the pinned notary key), or
//   event.i.answer when the answer holds no event; approval.k.lineage (the decision event
//   the approval names is among those verified); checkpoints.fork; consistency.<old>-<new>
//   (each smaller checkpoint of the bundle is a prefix of its largest); consistency.remembered.
// A consistency step without its proof is `pending`, and `needs` lists {old, new, path}:
// fetch each (the notary's GET /proof/consistency?old=&new=) and call again with the answers
// in `consistency`. `remember` is the checkpoint to keep as `remembered` ({origin, size,
// rootHash (base64), note}), or null while a consistency step is not ok, or when the one
// remembered is the larger. `statements` holds each approval's Statement once it passed
// steps 1-4 (signed, and an approval), else null: show that, not the bundle's own fields.
//
// Approvals live minutes: an evidence bundle is usually read after its approval expired,
// so pass as `nowMs` the time to judge the approval at (e.g. when it was executed).

import { b64, b64url, canonicalizeDoubles as canonicalize, hex, pae } from "./tpsign.js";

export { b64, hex };

export const APPROVAL_PAYLOAD_TYPE = "application/vnd.in-toto+json";
export const LINEAGE_PAYLOAD_TYPE = "application/vnd.trustplane.lineage+json";
export const STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
export const PREDICATE_TYPES = ["https://trustplane.dev/approval/v2", "https://trustplane.dev/approval/v1"];
export const EVIDENCE_FORMAT = "https://trustplane.dev/evidence/v1";
const MAX_ENVELOPE_BYTES = 256 * 1024;
const MAX_SIGNATURES = 8;
const MAX_SKEW_MS = 30_000;
const MAX_NOTE_SIGNATURES = 100;
const UINT64_LIMIT = 1n << 64n;
const HASH_TEXT = /^sha256:[0-9a-f]{64}$/;
const HEX64 = /^[0-9a-f]{64}$/;

const enc = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

// -- bytes -------------------------------------------------------------------------------

export const utf8 = (text) => enc.encode(text);

function bytesOf(value) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return null;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function equalBytes(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytesOf(bytes) ?? utf8(String(bytes))));
}

const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

// Standard base64 with padding (RFC 4648 §4), as Python's b64decode(validate=True);
// `urlSafe` also takes the URL alphabet, `unpadded` lets the padding be left out (DSSE).
export function b64decode(text, { urlSafe = false, unpadded = false } = {}) {
  if (typeof text !== "string") return null;
  let t = text;
  if (urlSafe && /[-_]/.test(t)) {
    if (/[+/]/.test(t)) return null;
    t = t.replace(/-/g, "+").replace(/_/g, "/");
  }
  if (unpadded) {
    t = t.replace(/=+$/, "");
    if (t.length % 4 === 1) return null;
    t += "=".repeat((4 - (t.length % 4)) % 4);
  }
  if (!B64.test(t)) return null;
  const binary = atob(t);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

export function fromHex(text) {
  if (typeof text !== "string" || !/^(?:[0-9a-fA-F]{2})*$/.test(text)) return null;
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// -- small helpers -----------------------------------------------------------------------

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !bytesOf(v);
const isInt = (v) => Number.isSafeInteger(v);

function kind(value) {
  if (value === undefined) return "missing";
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

function show(value, limit = 100) {
  let text;
  try {
    text = typeof value === "bigint" ? String(value) : JSON.stringify(value);
  } catch {
    text = String(value);
  }
  text = text === undefined ? "undefined" : text;
  return text.length > limit ? text.slice(0, limit) + "…" : text;
}

function iso(ms) {
  try {
    return new Date(ms).toISOString();
  } catch {
    return String(ms);
  }
}

// A copy of `object` without `names`; a null prototype keeps a "__proto__" member a member.
function without(object, names) {
  const copy = Object.create(null);
  for (const key of Object.keys(object)) if (!names.includes(key)) copy[key] = object[key];
  return copy;
}

// An unsigned 64-bit integer as a BigInt, or null.
function uint64(value) {
  let n = null;
  if (typeof value === "bigint") n = value;
  else if (typeof value === "number" && Number.isSafeInteger(value)) n = BigInt(value);
  else if (typeof value === "string" && /^(?:0|[1-9][0-9]{0,19})$/.test(value)) n = BigInt(value);
  return n !== null && n >= 0n && n < UINT64_LIMIT ? n : null;
}

const plainInt = (n) => (n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n);

// The first member name that occurs twice in one object of (valid) JSON text, or null:
// Python's verifier refuses such payloads, JSON.parse would keep the last silently.
function duplicateMember(text) {
  const stack = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top && top.expectKey) {
        const name = JSON.parse(text.slice(i, j + 1));
        if (top.names.has(name)) return name;
        top.names.add(name);
        top.expectKey = false;
      }
      i = j;
    } else if (c === "{") stack.push({ names: new Set(), expectKey: true });
    else if (c === "[") stack.push(null);
    else if (c === "}" || c === "]") stack.pop();
    else if (c === ",") {
      const top = stack[stack.length - 1];
      if (top) top.expectKey = true;
    }
  }
  return null;
}

function canonicalBytes(value) {
  try {
    return { bytes: utf8(canonicalize(value)) };
  } catch (error) {
    return { reason: `it has no RFC 8785 (JCS) form: ${error.message}` };
  }
}

// Steps of one verification: `plan` gives ids and titles in order; after a failure that
// stops the rest, `rest()` records every unrecorded planned step as skipped.
class Steps {
  constructor(prefix, plan, list = []) {
    this.prefix = prefix;
    this.plan = plan;
    this.list = list;
    this.done = new Set();
  }
  add(id, ok, reason, extra = {}) {
    this.done.add(id);
    const title = this.plan[id] ?? "The verifier finished";
    const step = { id: `${this.prefix}.${id}`, title, ok, reason, ...extra };
    this.list.push(step);
    return step;
  }
  pass(id, reason) {
    return this.add(id, true, reason);
  }
  fail(id, reason) {
    return this.add(id, false, reason);
  }
  skip(id, reason) {
    return this.add(id, false, reason, { skipped: true });
  }
  rest(failedId) {
    for (const id of Object.keys(this.plan)) {
      if (!this.done.has(id)) this.skip(id, `not checked: "${this.plan[failedId]}" failed`);
    }
    return this.list;
  }
}

export const allOk = (steps) => Array.isArray(steps) && steps.length > 0 && steps.every((s) => s.ok);

// -- Ed25519 and keys ------------------------------------------------------------------------

const importedKeys = new Map();

async function ed25519Verify(publicKey, signature, message) {
  const id = b64(publicKey);
  if (!importedKeys.has(id)) {
    importedKeys.set(id, crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]));
  }
  try {
    return await crypto.subtle.verify({ name: "Ed25519" }, await importedKeys.get(id), signature, message);
  } catch {
    return false;
  }
}

class Keyset {
  constructor(keys, problems) {
    this.keys = keys;
    this.problems = problems;
  }
}

function optionalMs(value, where, problems) {
  if (value === undefined || value === null) return null;
  if (!isInt(value)) problems.push(`${where} must be an integer (milliseconds since the epoch)`);
  return isInt(value) ? value : null;
}

// The gate's JWKS (processors/crypto/keys.py Keyset.from_jwks): OKP/Ed25519 keys, kid =
// the JWK's or its RFC 7638 thumbprint, windows `nbf` and `retired_at` in ms. Any problem
// makes the whole set unusable, as in Python.
export async function parseJwks(jwks) {
  if (jwks instanceof Keyset) return jwks;
  const keys = new Map();
  const problems = [];
  let data = jwks;
  if (data === undefined || data === null) return new Keyset(keys, ["no gate JWKS was given"]);
  if (typeof data === "string") {
    try {
      data = JSON.parse(data);
    } catch (error) {
      return new Keyset(keys, [`the JWKS is not JSON: ${error.message}`]);
    }
  }
  if (!isObject(data) || !Array.isArray(data.keys)) {
    return new Keyset(keys, ['the keyset is not a JWKS: expected {"keys": [...]}']);
  }
  for (const [n, jwk] of data.keys.entries()) {
    if (!isObject(jwk)) {
      problems.push(`keys[${n}] is not an object`);
      continue;
    }
    if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519") {
      problems.push(`keys[${n}] is kty=${show(jwk.kty)} crv=${show(jwk.crv)}; only OKP/Ed25519 keys are accepted`);
      continue;
    }
    const raw = b64decode(jwk.x, { urlSafe: true, unpadded: true });
    if (!raw || raw.length !== 32) {
      problems.push(`keys[${n}] has no valid 32-byte 'x'`);
      continue;
    }
    const thumbprint = b64url(await sha256(utf8(`{"crv":"Ed25519","kty":"OKP","x":"${b64url(raw)}"}`)));
    const kid = jwk.kid ? String(jwk.kid) : thumbprint;
    const nbf = optionalMs(jwk.nbf, `keys[${n}].nbf`, problems);
    const retiredAt = optionalMs(jwk.retired_at, `keys[${n}].retired_at`, problems);
    if (keys.has(kid)) problems.push(`two keys have the id ${show(kid)}`);
    keys.set(kid, { kid, publicKey: raw, nbf, retiredAt });
  }
  return new Keyset(keys, problems);
}

// -- Avro: the exact intent bytes --------------------------------------------------------

// Every Intent schema a writer may use (schemas/intent.avsc and schemas/history/intent.*),
// by the hex of its wire fingerprint, in Avro Parsing Canonical Form (tests hold these
// against the schema files).
export const INTENT_SCHEMAS = Object.freeze({
  eb97c0a59a2da4ab:
    '{"name":"dev.trustplane.Intent","type":"record","fields":[{"name":"intent_id","type":"string"},{"name":"agent_id","type":"string"},{"name":"runtime","type":{"name":"dev.trustplane.RuntimeAttestation","type":"record","fields":[{"name":"runtime_id","type":"string"},{"name":"code_digest","type":"string"},{"name":"config_digest","type":"string"},{"name":"environment","type":"string"},{"name":"host","type":"string"}]}},{"name":"action","type":"string"},{"name":"resource","type":"string"},{"name":"parameters","type":{"type":"map","values":["null","boolean","long","double","string"]}},{"name":"context","type":{"type":"map","values":["null","boolean","long","double","string"]}},{"name":"sequence","type":"long"},{"name":"issued_at_ms","type":"long"},{"name":"expires_at_ms","type":"long"},{"name":"nonce","type":"string"},{"name":"key_id","type":"string"},{"name":"signature","type":["null","bytes"]}]}',
  e3d16ae8be51df58:
    '{"name":"dev.trustplane.Intent","type":"record","fields":[{"name":"intent_id","type":"string"},{"name":"agent_id","type":"string"},{"name":"runtime","type":{"name":"dev.trustplane.RuntimeAttestation","type":"record","fields":[{"name":"runtime_id","type":"string"},{"name":"code_digest","type":"string"},{"name":"config_digest","type":"string"},{"name":"environment","type":"string"},{"name":"host","type":"string"}]}},{"name":"action","type":"string"},{"name":"resource","type":"string"},{"name":"parameters","type":{"type":"map","values":["null","boolean","long","double","string"]}},{"name":"sequence","type":"long"},{"name":"issued_at_ms","type":"long"},{"name":"expires_at_ms","type":"long"},{"name":"nonce","type":"string"},{"name":"key_id","type":"string"}]}',
});
const intentTypes = new Map(Object.entries(INTENT_SCHEMAS).map(([fp, text]) => [fp, JSON.parse(text)]));

class AvroReader {
  constructor(bytes, offset) {
    this.bytes = bytes;
    this.pos = offset;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  need(n) {
    if (n > this.bytes.length - this.pos) throw new RangeError(`the record ends early (at byte ${this.pos})`);
  }
  long() {
    let value = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      this.need(1);
      const byte = this.bytes[this.pos++];
      value |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) {
        value = BigInt.asUintN(64, value);
        return (value >> 1n) ^ -(value & 1n);
      }
    }
    throw new RangeError(`a varint at byte ${this.pos} is longer than 10 bytes`);
  }
  length() {
    const n = this.long();
    if (n < 0n) throw new RangeError(`a negative length at byte ${this.pos}`);
    this.need(Number(n > 1n << 40n ? 1n << 40n : n));
    return Number(n);
  }
  read(type) {
    if (Array.isArray(type)) {
      const branch = this.long();
      if (branch < 0n || branch >= BigInt(type.length)) throw new RangeError(`union branch ${branch} is out of range`);
      return this.read(type[Number(branch)]);
    }
    if (typeof type === "object") {
      if (type.type === "record") {
        const record = {};
        for (const field of type.fields) record[field.name] = this.read(field.type);
        return record;
      }
      if (type.type === "map") {
        const map = Object.create(null);
        for (;;) {
          let count = this.long();
          if (count === 0n) return map;
          if (count < 0n) {
            count = -count;
            this.long(); // the block's size in bytes
          }
          if (count > BigInt(this.bytes.length - this.pos)) throw new RangeError("a map block is longer than the record");
          for (let i = 0n; i < count; i++) {
            const key = this.read("string");
            map[key] = this.read(type.values);
          }
        }
      }
      throw new RangeError(`unsupported Avro type ${show(type.type)}`);
    }
    switch (type) {
      case "null":
        return null;
      case "boolean": {
        this.need(1);
        const byte = this.bytes[this.pos++];
        if (byte > 1) throw new RangeError(`a boolean byte is ${byte}`);
        return byte === 1;
      }
      case "long": {
        const n = this.long();
        return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
      }
      case "double": {
        this.need(8);
        const value = this.view.getFloat64(this.pos, true);
        this.pos += 8;
        return value;
      }
      case "string":
      case "bytes": {
        const n = this.length();
        const slice = this.bytes.subarray(this.pos, this.pos + n);
        this.pos += n;
        if (type === "bytes") return slice.slice();
        try {
          return strictUtf8.decode(slice);
        } catch {
          throw new RangeError(`a string at byte ${this.pos - n} is not UTF-8`);
        }
      }
    }
    throw new RangeError(`unsupported Avro type ${show(type)}`);
  }
}

// The Intent in Avro single-object encoding (streams/codec.py): C3 01, the 8-byte schema
// fingerprint, the body; nothing after it. Longs beyond 2^53 are BigInts.
export function decodeIntent(bytes) {
  const data = bytesOf(bytes);
  if (!data) return { ok: false, reason: `the intent is ${kind(bytes)}, not bytes` };
  if (data.length < 10 || data[0] !== 0xc3 || data[1] !== 0x01) {
    return { ok: false, reason: "the intent bytes are not Avro single-object encoding (no C3 01 marker and fingerprint)" };
  }
  const fingerprint = hex(data.subarray(2, 10));
  const type = intentTypes.get(fingerprint);
  if (!type) {
    return { ok: false, reason: `the intent bytes are written with schema ${fingerprint}, which is not an Intent schema this page knows` };
  }
  const reader = new AvroReader(data, 10);
  try {
    const record = reader.read(type);
    if (reader.pos !== data.length) {
      return { ok: false, reason: `${data.length - reader.pos} bytes follow the Intent record` };
    }
    return { ok: true, record, fingerprint };
  } catch (error) {
    return { ok: false, reason: `the intent bytes are not an Intent record: ${error.message}` };
  }
}

// "sha256:" + hex(SHA-256(JCS(parameters))) (processors/approval/statement.py).
export async function parametersDigest(parameters) {
  if (!isObject(parameters)) return { ok: false, reason: `the parameters are ${kind(parameters)}, not an object` };
  const big = Object.keys(parameters).find((k) => typeof parameters[k] === "bigint");
  if (big !== undefined) {
    return { ok: false, reason: `parameter ${show(big)} is an integer beyond 2^53-1, which has no exact JSON form` };
  }
  const canonical = canonicalBytes(parameters);
  if (!canonical.bytes) return { ok: false, reason: `the parameters cannot be digested: ${canonical.reason}` };
  return { ok: true, digest: "sha256:" + hex(await sha256(canonical.bytes)) };
}

// -- approvals ---------------------------------------------------------------------------

const APPROVAL_STEPS = {
  envelope: "1. The envelope is a DSSE envelope",
  payloadType: "1. Its payloadType is application/vnd.in-toto+json",
  payload: "2. Its payload is base64",
  signature: "3. A gate key of the JWKS, valid at the time, signed it (Ed25519 over DSSE PAE)",
  statement: "4. It is an approval: in-toto Statement v1, approval predicate, one subject, every layer ALLOW",
  expiry: "5. It is fresh: not expired, not issued in the future, issued while its key was valid",
  intent: "6. It approves exactly this intent (SHA-256 of the intent bytes)",
  parameters: "6. The intent's parameters are the approved ones (parametersDigest)",
};

// README "Verifying with your own code" steps 1-6, as processors/approval/verify.py.
export async function verifyApproval(envelope, jwks, options = {}) {
  return (await checkApproval(envelope, jwks, options)).steps;
}

async function checkApproval(envelope, jwks, options = {}) {
  const s = new Steps(options.prefix ?? "approval", APPROVAL_STEPS);
  const result = { steps: s.list, statement: null, keyid: null };
  try {
    await approvalSteps(s, result, envelope, jwks, options);
  } catch (error) {
    s.add("error", false, `the verifier stopped on unexpected input: ${error?.message ?? error}`);
    s.rest("error");
  }
  return result;
}

async function approvalSteps(s, result, envelope, jwks, { intentBytes, nowMs = Date.now(), parameters, maxSkewMs = MAX_SKEW_MS }) {
  // (1) Parse the envelope: a JSON object with payload, payloadType and signatures.
  let env = envelope;
  const raw = bytesOf(env);
  if (typeof env === "string" || raw) {
    const size = raw ? raw.length : utf8(env).length;
    if (size > MAX_ENVELOPE_BYTES) {
      s.fail("envelope", `the envelope is ${size} bytes; approvals are at most ${MAX_ENVELOPE_BYTES}`);
      return s.rest("envelope");
    }
    try {
      env = JSON.parse(raw ? strictUtf8.decode(raw) : env);
    } catch (error) {
      s.fail("envelope", `the envelope is not JSON: ${error.message}`);
      return s.rest("envelope");
    }
  }
  if (!isObject(env)) {
    s.fail("envelope", `the envelope is ${kind(env)}, not a JSON object`);
    return s.rest("envelope");
  }
  const { payload: payloadB64, payloadType, signatures } = env;
  if (typeof payloadB64 !== "string" || typeof payloadType !== "string") {
    s.fail("envelope", "the envelope's payload or payloadType is missing or not text");
    return s.rest("envelope");
  }
  if (!Array.isArray(signatures)) {
    s.fail("envelope", "the envelope's signatures is missing or not a list");
    return s.rest("envelope");
  }
  if (signatures.length > MAX_SIGNATURES) {
    s.fail("envelope", `the envelope has ${signatures.length} signatures; at most ${MAX_SIGNATURES} are read`);
    return s.rest("envelope");
  }
  s.pass("envelope", `a DSSE envelope with ${signatures.length} signature(s)`);

  // (1) The payload type is the in-toto one (it is signed too, via PAE).
  if (payloadType !== APPROVAL_PAYLOAD_TYPE) {
    s.fail("payloadType", `payloadType is ${show(payloadType)}, expected "${APPROVAL_PAYLOAD_TYPE}": this is not a trustplane approval`);
    return s.rest("payloadType");
  }
  s.pass("payloadType", `"${APPROVAL_PAYLOAD_TYPE}"`);

  // (2) Base64-decode the payload (standard or URL-safe, padding optional, as DSSE allows).
  const payload = b64decode(payloadB64, { urlSafe: true, unpadded: true });
  if (!payload) {
    s.fail("payload", "the envelope's payload is not valid base64");
    return s.rest("payload");
  }
  s.pass("payload", `${payload.length} bytes`);

  // (3) A signature by a known key that is not retired verifies over PAE(type, payload).
  const keyset = await parseJwks(jwks);
  if (keyset.problems.length) {
    s.fail("signature", `the gate's JWKS is not usable: ${keyset.problems.join("; ")}`);
    return s.rest("signature");
  }
  const signed = await approvalSignature(signatures, keyset, pae(payloadType, payload), nowMs, maxSkewMs);
  if (!signed.ok) {
    s.fail("signature", signed.reason);
    return s.rest("signature");
  }
  const entry = signed.entry;
  result.keyid = entry.kid;
  s.pass("signature", `signed by gate key ${entry.kid}`);

  // (4) The payload is an in-toto Statement v1 with the trustplane approval predicate.
  const parsed = approvalStatement(payload);
  if (!parsed.ok) {
    s.fail("statement", parsed.reason);
    return s.rest("statement");
  }
  const { statement, predicate, approvalId, intentId, subjectHex } = parsed;
  result.statement = statement;
  const what = `${predicate.action} on ${predicate.resource} by ${predicate.agentId}`;
  const layers = `${predicate.verdicts.length} layer(s) ALLOW`;
  s.pass("statement", `${statement.predicateType}: approval ${approvalId} of intent ${intentId} (${what}), ${layers}`);

  // (5) Fresh at nowMs, not issued in the future, signed while its key was valid.
  const issued = predicate.issuedAtMs;
  const expires = predicate.expiresAtMs;
  if (!Number.isFinite(nowMs)) s.fail("expiry", `the time to check at is ${show(nowMs)}, not milliseconds`);
  else if (nowMs >= expires) {
    s.fail("expiry", `approval ${approvalId} expired at ${iso(expires)}, ${nowMs - expires} ms before the time checked (${iso(nowMs)})`);
  } else if (issued > nowMs + maxSkewMs) {
    const ahead = `${issued - nowMs} ms after the time checked (allowed skew ${maxSkewMs} ms)`;
    s.fail("expiry", `approval ${approvalId} claims to be issued at ${iso(issued)}, ${ahead}`);
  } else if (entry.nbf !== null && issued + maxSkewMs < entry.nbf) {
    s.fail("expiry", `approval ${approvalId} was issued at ${iso(issued)}, before key ${entry.kid} became valid (${iso(entry.nbf)})`);
  } else if (entry.retiredAt !== null && issued >= entry.retiredAt) {
    s.fail("expiry", `approval ${approvalId} was issued at ${iso(issued)}, after key ${entry.kid} was retired (${iso(entry.retiredAt)})`);
  } else {
    s.pass("expiry", `valid from ${iso(issued)} until ${iso(expires)}; checked at ${iso(nowMs)}, ${expires - nowMs} ms before it expires`);
  }

  // (6) It approves exactly the intent at hand.
  const intent = intentBytes === undefined || intentBytes === null ? null : bytesOf(intentBytes);
  if (intentBytes === undefined || intentBytes === null) {
    s.skip("intent", "no intent bytes were given: which intent this approves is not checked");
  } else if (!intent) {
    s.fail("intent", `the intent is ${kind(intentBytes)}, not bytes`);
  } else {
    const actual = hex(await sha256(intent));
    if (actual === subjectHex) s.pass("intent", `the intent bytes hash to ${actual}, the approved subject`);
    else s.fail("intent", `the intent bytes hash to ${actual}, the approval is for ${subjectHex}: they are not the approved intent`);
  }

  // (6) And, as the executor would use them, its parameters.
  const approved = predicate.parametersDigest;
  let params = null;
  let source = null;
  if (intent) {
    const decoded = decodeIntent(intent);
    if (decoded.ok) {
      params = decoded.record.parameters;
      source = `the parameters decoded from the intent bytes (Avro, schema ${decoded.fingerprint})`;
    } else if (isObject(parameters)) {
      params = parameters;
      source = `the parameters given with the intent, NOT decoded from its bytes (${decoded.reason})`;
    } else {
      s.fail("parameters", decoded.reason);
      return s.list;
    }
  } else if (isObject(parameters)) {
    params = parameters;
    source = "the parameters given, NOT decoded from the intent bytes (none were given)";
  }
  if (typeof approved !== "string" || !HASH_TEXT.test(approved)) {
    s.fail("parameters", `the statement's parametersDigest is ${show(approved)}, not sha256:<64 hex>`);
  } else if (params === null) {
    s.skip("parameters", "neither the intent bytes nor its parameters were given");
  } else {
    const digest = await parametersDigest(params);
    if (!digest.ok) s.fail("parameters", `${source}: ${digest.reason}`);
    else if (digest.digest !== approved) {
      s.fail("parameters", `${source} digest to ${digest.digest}, the approval is for ${approved}: they are not the approved parameters`);
    } else s.pass("parameters", `${source} digest to ${approved}, the approved parametersDigest`);
  }
  return s.list;
}

async function approvalSignature(signatures, keyset, message, nowMs, maxSkewMs) {
  if (signatures.length === 0) return { ok: false, reason: "the envelope has no signatures: an unsigned approval must not be acted on" };
  const keyProblems = [];
  const sigProblems = [];
  for (const [n, item] of signatures.entries()) {
    if (!isObject(item) || typeof item.sig !== "string") {
      sigProblems.push(`signatures[${n}] has no 'sig' text`);
      continue;
    }
    const kid = item.keyid;
    if (typeof kid !== "string" || !kid) {
      keyProblems.push(`signatures[${n}] names no keyid`);
      continue;
    }
    const entry = keyset.keys.get(kid);
    if (!entry) {
      keyProblems.push(`signatures[${n}]: key ${show(kid)} is not in the JWKS (known: ${[...keyset.keys.keys()].join(", ") || "none"})`);
      continue;
    }
    if (entry.retiredAt !== null && nowMs >= entry.retiredAt) {
      keyProblems.push(`signatures[${n}]: key ${show(kid)} was retired at ${iso(entry.retiredAt)}`);
      continue;
    }
    if (entry.nbf !== null && nowMs + maxSkewMs < entry.nbf) {
      keyProblems.push(`signatures[${n}]: key ${show(kid)} is not valid before ${iso(entry.nbf)}`);
      continue;
    }
    const signature = b64decode(item.sig, { urlSafe: true, unpadded: true });
    if (!signature) {
      sigProblems.push(`signatures[${n}].sig is not valid base64`);
      continue;
    }
    if (signature.length !== 64) {
      sigProblems.push(`signatures[${n}] is ${signature.length} bytes; an Ed25519 signature is 64`);
      continue;
    }
    if (!(await ed25519Verify(entry.publicKey, signature, message))) {
      sigProblems.push(
        `signatures[${n}] by key ${show(kid)} does not verify: the payload or its type was changed after signing, or the signature is corrupt`,
      );
      continue;
    }
    return { ok: true, entry };
  }
  return { ok: false, reason: [...sigProblems, ...keyProblems].join("; ") };
}

function approvalStatement(payload) {
  const no = (reason) => ({ ok: false, reason });
  let text;
  let statement;
  try {
    text = strictUtf8.decode(payload);
    statement = JSON.parse(text);
  } catch (error) {
    return no(`the signed payload is not a JSON document: ${error.message}`);
  }
  const duplicate = duplicateMember(text);
  if (duplicate !== null) return no(`the signed payload has the member ${show(duplicate)} twice`);
  if (!isObject(statement) || statement._type !== STATEMENT_TYPE) {
    return no(`the signed payload is not an in-toto Statement (${STATEMENT_TYPE})`);
  }
  if (!PREDICATE_TYPES.includes(statement.predicateType)) {
    return no(`predicateType is ${show(statement.predicateType)}, expected "${PREDICATE_TYPES[0]}"`);
  }
  const subjects = statement.subject;
  if (!Array.isArray(subjects) || subjects.length !== 1 || !isObject(subjects[0])) {
    return no(`an approval has exactly one subject, the intent; this one has ${Array.isArray(subjects) ? subjects.length : "none"}`);
  }
  const { name, digest } = subjects[0];
  if (typeof name !== "string" || !name.startsWith("intent:") || name.length === 7) {
    return no(`the subject's name is ${show(name)}, not intent:<intent_id>`);
  }
  const subjectHex = isObject(digest) ? digest.sha256 : undefined;
  if (typeof subjectHex !== "string" || !HEX64.test(subjectHex)) {
    return no("the subject has no sha256 digest of 64 lowercase hex digits");
  }
  const intentId = name.slice(7);
  const predicate = statement.predicate;
  if (!isObject(predicate)) return no("the Statement has no predicate object");
  for (const field of ["approvalId", "agentId", "action", "resource"]) {
    if (typeof predicate[field] !== "string" || !predicate[field]) {
      return no(`predicate.${field} is missing or not a non-empty string`);
    }
  }
  if ("intentId" in predicate && predicate.intentId !== intentId) {
    return no(`predicate.intentId is ${show(predicate.intentId)}, not the intent named by the subject (${show(intentId)})`);
  }
  if (!isInt(predicate.issuedAtMs) || !isInt(predicate.expiresAtMs)) {
    return no("predicate.issuedAtMs / expiresAtMs must be integers (ms)");
  }
  if (predicate.expiresAtMs <= predicate.issuedAtMs) return no("the approval expires before it is issued");
  const verdicts = predicate.verdicts;
  if (!Array.isArray(verdicts) || verdicts.length === 0) {
    return no("predicate.verdicts must list every layer, each with status ALLOW; it lists none");
  }
  const notAllowed = verdicts.filter((v) => !isObject(v) || v.status !== "ALLOW");
  if (notAllowed.length) {
    const which = notAllowed.map((v) => (isObject(v) ? `${v.layer}: ${v.status}` : show(v))).join(", ");
    return no(`predicate.verdicts must all be ALLOW; found ${which}: anything else is not an approval`);
  }
  return { ok: true, statement, predicate, approvalId: predicate.approvalId, intentId, subjectHex };
}

// -- lineage events ------------------------------------------------------------------------

const SIGNED_OUT = ["prev_hash", "event_hash", "log_index", "signature"];

// The gate's signature on a lineage event (processors/log/attest.py): Ed25519 over
// PAE(LINEAGE_PAYLOAD_TYPE, JCS(event without prev_hash, event_hash, log_index, signature)).
async function eventSignature(event, keyset, atMs) {
  const id = show(event.event_id);
  const kid = event.signer;
  const text = event.signature;
  if (typeof kid !== "string" || typeof text !== "string" || !kid || !text) {
    return { ok: false, reason: `lineage event ${id} is not signed (no signer or signature)` };
  }
  if (keyset.problems.length) return { ok: false, reason: `the gate's JWKS is not usable: ${keyset.problems.join("; ")}` };
  const signature = b64decode(text);
  if (!signature) return { ok: false, reason: `lineage event ${id}: the signature is not base64` };
  const entry = keyset.keys.get(kid);
  if (!entry) {
    const known = [...keyset.keys.keys()].join(", ") || "none";
    return { ok: false, reason: `lineage event ${id} is signed by ${show(kid)}, which is not in the JWKS (known: ${known})` };
  }
  if (atMs !== undefined && atMs !== null) {
    if ((entry.nbf !== null && atMs < entry.nbf) || (entry.retiredAt !== null && atMs >= entry.retiredAt)) {
      return { ok: false, reason: `lineage event ${id}: key ${show(kid)} is not valid at ${iso(atMs)} (retired or not yet valid)` };
    }
  }
  if (signature.length !== 64) {
    return { ok: false, reason: `lineage event ${id}: the signature is ${signature.length} bytes; an Ed25519 signature is 64` };
  }
  const body = canonicalBytes(without(event, SIGNED_OUT));
  if (!body.bytes) return { ok: false, reason: `lineage event ${id}: ${body.reason}` };
  if (!(await ed25519Verify(entry.publicKey, signature, pae(LINEAGE_PAYLOAD_TYPE, body.bytes)))) {
    const reason = `lineage event ${id} signed by ${show(kid)}: the Ed25519 signature does not verify`;
    return { ok: false, reason: `${reason}: the event was changed after the gate signed it` };
  }
  return { ok: true, reason: `signed by gate key ${kid}`, kid };
}

// event_hash = "sha256:" + hex(SHA-256(prev_hash ‖ 0x00 ‖ JCS(event without event_hash,
// with prev_hash))) (processors/log/chain.py); prevHash defaults to the event's own.
export async function eventHash(event, prevHash) {
  if (!isObject(event)) return { ok: false, reason: `the event is ${kind(event)}, not an object` };
  const prev = prevHash === undefined ? (event.prev_hash ?? null) : prevHash;
  if (prev !== null && (typeof prev !== "string" || !HASH_TEXT.test(prev))) {
    return { ok: false, reason: `prev_hash is ${show(prev)}, not 'sha256:' followed by 64 lowercase hex digits` };
  }
  const body = without(event, ["event_hash"]);
  body.prev_hash = prev;
  const canonical = canonicalBytes(body);
  if (!canonical.bytes) return { ok: false, reason: `the event ${canonical.reason}` };
  const digest = await sha256(concat(utf8(prev ?? ""), new Uint8Array([0]), canonical.bytes));
  return { ok: true, hash: "sha256:" + hex(digest) };
}

async function eventHashCheck(event) {
  const stated = event.event_hash;
  if (typeof stated !== "string" || !HASH_TEXT.test(stated)) {
    return { ok: false, reason: `event_hash is ${show(stated)}, not 'sha256:' followed by 64 lowercase hex digits` };
  }
  const expected = await eventHash(event);
  if (!expected.ok) return expected;
  if (expected.hash !== stated) {
    return {
      ok: false,
      reason:
        `the event (event_id ${show(event.event_id)}) has been altered: ` +
        `its content hashes to ${expected.hash}, not to its event_hash ${stated}`,
    };
  }
  return { ok: true, reason: `its content hashes to its event_hash ${stated}` };
}

function linkCheck(event, previous) {
  const expected = typeof previous === "string" ? previous : isObject(previous) ? previous.event_hash : undefined;
  if (typeof expected !== "string") return { ok: false, reason: `the event before it has no event_hash (${show(expected)})` };
  if (event.prev_hash === expected) return { ok: true, reason: `prev_hash is ${expected}, the event_hash of the event before it` };
  return {
    ok: false,
    reason:
      `prev_hash is ${show(event.prev_hash)}, but the event before it has event_hash ${expected}: ` +
      "events were dropped, inserted or reordered between them",
  };
}

function eventPlan(label) {
  return {
    answer: `${label}: the notary's answer holds an event`,
    signature: `${label}: signed by a gate key`,
    hash: `${label}: its event_hash matches its content`,
    link: `${label}: it follows the event before it in the log (prev_hash)`,
    leaf: `${label}: it is the leaf the proof is about (log_index)`,
    inclusion: `${label}: included under the checkpoint's root (RFC 9162 §2.1.3.2)`,
    checkpoint: `${label}: the checkpoint is signed by the pinned notary key (C2SP)`,
  };
}

const eventLabel = (event, fallback) => (isObject(event) && typeof event.event_id === "string" ? `Event ${event.event_id}` : fallback);

// A lineage event's gate signature, its event_hash and (given `previous`, the event before
// it or its event_hash) its link.
export async function verifyLineageEvent(event, jwks, { previous, atMs, prefix = "event" } = {}) {
  const s = new Steps(prefix, eventPlan(eventLabel(event, "The event")));
  try {
    if (!isObject(event)) {
      s.fail("signature", `the event is ${kind(event)}, not an object`);
      s.skip("hash", `not checked: "${s.plan.signature}" failed`);
      if (previous !== undefined) s.skip("link", `not checked: "${s.plan.signature}" failed`);
      return s.list;
    }
    const signature = await eventSignature(event, await parseJwks(jwks), atMs);
    s.add("signature", signature.ok, signature.reason);
    const hashed = await eventHashCheck(event);
    s.add("hash", hashed.ok, hashed.reason);
    if (previous !== undefined && previous !== null) {
      const linked = linkCheck(event, previous);
      s.add("link", linked.ok, linked.reason);
    }
  } catch (error) {
    s.add("error", false, `the verifier stopped on unexpected input: ${error?.message ?? error}`);
  }
  return s.list;
}

// -- RFC 9162 Merkle tree -------------------------------------------------------------------

export const leafHash = async (leaf) => sha256(concat(new Uint8Array([0]), bytesOf(leaf)));
export const nodeHash = async (left, right) => sha256(concat(new Uint8Array([1]), left, right));

// The Merkle leaf of a linked event: SHA-256(0x00 ‖ JCS(event)); null if it has no JCS form.
export async function eventLeafHash(event) {
  const canonical = isObject(event) ? canonicalBytes(event) : {};
  return canonical.bytes ? leafHash(canonical.bytes) : null;
}

function hashArg(value, what, { anyLength = false } = {}) {
  const bytes = typeof value === "string" ? b64decode(value) : bytesOf(value);
  if (!bytes) return { reason: `${what} must be bytes or standard base64, not ${typeof value === "string" ? "this text" : kind(value)}` };
  if (!anyLength && bytes.length !== 32) return { reason: `${what} is ${bytes.length} bytes; a SHA-256 hash is 32` };
  return { bytes };
}

function hashList(path, what) {
  if (!Array.isArray(path)) return { reason: `the ${what} path is ${kind(path)}, not a list` };
  const out = [];
  for (const [n, p] of path.entries()) {
    const h = hashArg(p, `${what} path entry ${n}`);
    if (!h.bytes) return h;
    out.push(h.bytes);
  }
  return { hashes: out };
}

const sizeReason = (value, what) => `${what} ${show(value)} is not an unsigned 64-bit integer`;

// RFC 9162 §2.1.3.2, as processors/log/merkle.py verify_inclusion.
export async function verifyInclusion(leaf, index, treeSize, path, root) {
  const no = (reason) => ({ ok: false, reason });
  try {
    const fnStart = uint64(index);
    const size = uint64(treeSize);
    if (fnStart === null) return no(sizeReason(index, "leaf index"));
    if (size === null) return no(sizeReason(treeSize, "tree size"));
    const leafH = hashArg(leaf, "the leaf hash");
    if (!leafH.bytes) return no(leafH.reason);
    const rootH = hashArg(root, "the root hash");
    if (!rootH.bytes) return no(rootH.reason);
    const list = hashList(path, "inclusion");
    if (!list.hashes) return no(list.reason);
    const proof = list.hashes;
    // (1) If leaf_index >= tree_size, fail.
    if (fnStart >= size) return no(`leaf index ${fnStart} is not below tree size ${size}`);
    // (2) fn = leaf_index, sn = tree_size - 1; (3) r = hash.
    let fn = fnStart;
    let sn = size - 1n;
    let r = leafH.bytes;
    // (4) For each p in the inclusion path:
    for (const p of proof) {
      // (4a) If sn is 0, fail.
      if (sn === 0n) return no(`the inclusion path has ${proof.length} entries, more than a leaf of a tree of size ${size} needs`);
      // (4b) If LSB(fn) is set or fn == sn: r = HASH(0x01 || p || r), then shift until
      // LSB(fn) is set or fn is 0; otherwise r = HASH(0x01 || r || p).
      if (fn & 1n || fn === sn) {
        r = await nodeHash(p, r);
        if (!(fn & 1n)) {
          while (!(fn & 1n || fn === 0n)) {
            fn >>= 1n;
            sn >>= 1n;
          }
        }
      } else {
        r = await nodeHash(r, p);
      }
      // (4c) Right-shift fn and sn once.
      fn >>= 1n;
      sn >>= 1n;
    }
    // (5) sn must be 0 and r the root.
    if (sn !== 0n) return no(`the inclusion path has ${proof.length} entries, too few for leaf ${fnStart} of a tree of size ${size}`);
    if (!equalBytes(r, rootH.bytes)) {
      return no(
        `the inclusion proof for leaf ${fnStart} does not lead to the root of the tree of size ${size}: ` +
          "the leaf, the path or the root has been altered",
      );
    }
    return { ok: true, reason: `leaf ${fnStart} of the tree of size ${size} leads to its root ${b64(rootH.bytes)}` };
  } catch (error) {
    return no(`the inclusion proof cannot be checked: ${error?.message ?? error}`);
  }
}

// RFC 9162 §2.1.4.2, as processors/log/merkle.py verify_consistency (with Go's policies:
// no proof from the empty tree; equal sizes need equal roots and an empty proof).
export async function verifyConsistency(size1, size2, proof, root1, root2) {
  const no = (reason) => ({ ok: false, reason });
  try {
    const first = uint64(size1);
    const second = uint64(size2);
    if (first === null) return no(sizeReason(size1, "old size"));
    if (second === null) return no(sizeReason(size2, "new size"));
    const list = hashList(proof, "consistency");
    if (!list.hashes) return no(list.reason);
    // (0a) The log only grows; (0b) nothing is proven from the empty tree.
    if (second < first) return no(`new size ${second} is smaller than old size ${first}`);
    if (first === 0n) return no("old size is 0: a consistency proof from the empty tree proves nothing");
    // (0c) Same size: an empty proof and the very same root.
    if (first === second) {
      if (list.hashes.length) return no(`sizes are equal (${first}) but the proof is not empty`);
      const a = hashArg(root1, "the old root hash", { anyLength: true });
      const b = hashArg(root2, "the new root hash", { anyLength: true });
      if (!a.bytes) return no(a.reason);
      if (!b.bytes) return no(b.reason);
      if (!equalBytes(a.bytes, b.bytes)) {
        return no(`two different roots for the same tree size ${first}: the log has forked or a root has been altered`);
      }
      return { ok: true, reason: `the same tree (size ${first}, root ${b64(a.bytes)})` };
    }
    const oldRoot = hashArg(root1, "the old root hash");
    if (!oldRoot.bytes) return no(oldRoot.reason);
    const newRoot = hashArg(root2, "the new root hash");
    if (!newRoot.bytes) return no(newRoot.reason);
    // (1) An empty consistency path fails.
    if (list.hashes.length === 0) return no(`the consistency proof from ${first} to ${second} is empty`);
    // (2) If first is an exact power of 2, prepend first_hash.
    const path = first & (first - 1n) ? [...list.hashes] : [oldRoot.bytes, ...list.hashes];
    // (3) fn = first - 1, sn = second - 1; (4) shift both while LSB(fn) is set.
    let fn = first - 1n;
    let sn = second - 1n;
    while (fn & 1n) {
      fn >>= 1n;
      sn >>= 1n;
    }
    // (5) fr = sr = the first path entry.
    let fr = path[0];
    let sr = path[0];
    // (6) For each later entry c:
    for (const c of path.slice(1)) {
      // (6a) If sn is 0, fail.
      if (sn === 0n) return no(`the consistency proof from ${first} to ${second} has more entries than those trees need`);
      // (6b) If LSB(fn) is set or fn == sn: fr = HASH(0x01 || c || fr), sr = HASH(0x01 ||
      // c || sr), then shift until LSB(fn) is set or fn is 0; otherwise sr = HASH(0x01 || sr || c).
      if (fn & 1n || fn === sn) {
        fr = await nodeHash(c, fr);
        sr = await nodeHash(c, sr);
        if (!(fn & 1n)) {
          while (!(fn & 1n || fn === 0n)) {
            fn >>= 1n;
            sn >>= 1n;
          }
        }
      } else {
        sr = await nodeHash(sr, c);
      }
      // (6c) Right-shift fn and sn once.
      fn >>= 1n;
      sn >>= 1n;
    }
    // (7) sn must be 0, fr the old root and sr the new root.
    if (sn !== 0n) return no(`the consistency proof from ${first} to ${second} has too few entries`);
    if (!equalBytes(fr, oldRoot.bytes)) {
      return no(`the consistency proof does not lead to the old root of size ${first}: the proof or the old root has been altered`);
    }
    if (!equalBytes(sr, newRoot.bytes)) {
      return no(
        `the tree of size ${second} does not extend the tree of size ${first}: ` +
          "the log has been rewritten, or the proof or the new root has been altered",
      );
    }
    const [from, to] = [b64(oldRoot.bytes), b64(newRoot.bytes)];
    return { ok: true, reason: `the tree of size ${second} (root ${to}) extends the tree of size ${first} (root ${from})` };
  } catch (error) {
    return no(`the consistency proof cannot be checked: ${error?.message ?? error}`);
  }
}

// -- C2SP signed notes and checkpoints --------------------------------------------------------

const NAME_FORBIDDEN = /[\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000+]/u;
const SIG_PREFIX = "\u2014 ";

function nameProblem(name, what = "key name") {
  if (typeof name !== "string" || !name) return `a ${what} must be a non-empty string`;
  if (NAME_FORBIDDEN.test(name)) return `${what} ${show(name)} contains a space or a '+'`;
  if (!name.isWellFormed()) return `${what} ${show(name)} is not valid UTF-8`;
  return null;
}

const noteKeyId = async (name, publicKey) =>
  (await sha256(concat(utf8(name), new Uint8Array([0x0a, 0x01]), publicKey))).slice(0, 4);

// A verifier key in Go's note format: <name>+<8 hex digits of key ID>+<base64(0x01 ‖ key)>.
export async function parseVerifierKey(vkey) {
  if (isObject(vkey) && vkey.ok === true && vkey.publicKey) return vkey;
  const no = (reason) => ({ ok: false, reason });
  if (typeof vkey !== "string") return no(`a verifier key is text, not ${kind(vkey)}`);
  const text = vkey.trim();
  const first = text.indexOf("+");
  const second = first < 0 ? -1 : text.indexOf("+", first + 1);
  if (second < 0) return no("a verifier key has the form <name>+<8 hex digits>+<base64 key>");
  const name = text.slice(0, first);
  const hexId = text.slice(first + 1, second);
  const problem = nameProblem(name);
  if (problem) return no(problem);
  if (!/^[0-9a-fA-F]{8}$/.test(hexId)) return no(`verifier key id ${show(hexId)} is not 8 hex digits`);
  const data = b64decode(text.slice(second + 1));
  if (!data) return no("the verifier key data is not valid standard base64");
  if (data.length === 0 || data[0] !== 0x01) return no(`verifier key algorithm ${data.length ? data[0] : "none"} is not Ed25519 (1)`);
  if (data.length !== 33) return no(`an Ed25519 verifier key is 32 bytes, this one is ${data.length - 1}`);
  const publicKey = data.slice(1);
  const keyId = await noteKeyId(name, publicKey);
  if (hex(keyId) !== hexId.toLowerCase()) {
    return no(`verifier key id ${hexId} does not match the name and key (expected ${hex(keyId)}): the key text is corrupt`);
  }
  return { ok: true, name, keyId, keyIdHex: hex(keyId), publicKey, vkey: `${name}+${hex(keyId)}+${b64(data)}` };
}

function noteText(note) {
  const raw = bytesOf(note);
  if (raw) {
    try {
      return { text: strictUtf8.decode(raw) };
    } catch {
      return { reason: "the note is not valid UTF-8" };
    }
  }
  if (typeof note !== "string") return { reason: `a note is text, not ${kind(note)}` };
  if (!note.isWellFormed()) return { reason: "the note is not valid UTF-8 (it holds a lone surrogate)" };
  return { text: note };
}

// Open a C2SP signed note with one verifier key (processors/log/checkpoint.py open_note).
export async function openNote(note, vkey) {
  const no = (reason) => ({ ok: false, reason });
  try {
    const verifier = await parseVerifierKey(vkey);
    if (!verifier.ok) return no(`the verifier key is not usable: ${verifier.reason}`);
    // (1) UTF-8, no control characters but newline.
    const decoded = noteText(note);
    if (decoded.text === undefined) return no(decoded.reason);
    const all = decoded.text;
    for (let n = 0; n < all.length; n++) {
      const code = all.charCodeAt(n);
      if (code < 0x20 && code !== 0x0a) return no(`the note has control character U+${code.toString(16).padStart(4, "0")} at offset ${n}`);
    }
    // (2) Split at the last blank line.
    const split = all.lastIndexOf("\n\n");
    if (split < 0) return no("the note has no blank line before its signatures");
    const text = all.slice(0, split + 1);
    const block = all.slice(split + 2);
    if (!block || !block.endsWith("\n")) return no("the note's signature block is empty or does not end in a newline");
    const lines = block.slice(0, -1).split("\n");
    if (lines.length > MAX_NOTE_SIGNATURES) return no(`the note has ${lines.length} signatures, more than ${MAX_NOTE_SIGNATURES}`);
    const unknown = [];
    let verified = false;
    for (const [i, line] of lines.entries()) {
      const n = i + 1;
      // (3) Signature line syntax.
      if (!line.startsWith(SIG_PREFIX)) {
        return no(`signature line ${n} does not start with an em dash (U+2014) and a space: ${show(line.slice(0, 40))}`);
      }
      const rest = line.slice(SIG_PREFIX.length);
      const space = rest.indexOf(" ");
      if (space < 0 || space === rest.length - 1) return no(`signature line ${n} has no base64 signature after the key name`);
      const name = rest.slice(0, space);
      const problem = nameProblem(name);
      if (problem) return no(problem);
      const blob = b64decode(rest.slice(space + 1));
      if (!blob) return no(`the signature on line ${n} is not valid standard base64`);
      if (blob.length < 5) return no(`the signature on line ${n} is shorter than a key ID and 1 byte`);
      const kid = blob.subarray(0, 4);
      const signature = blob.subarray(4);
      // (4) Other keys' signatures are ignored, a repeated one is counted once.
      if (name !== verifier.name || !equalBytes(kid, verifier.keyId)) {
        unknown.push(`${name}+${hex(kid)}`);
        continue;
      }
      if (verified) continue;
      // (5) The pinned key's signature must verify.
      const who = `${verifier.name}+${verifier.keyIdHex}`;
      if (signature.length !== 64) return no(`signature by ${who} is ${signature.length} bytes, an Ed25519 signature is 64`);
      if (!(await ed25519Verify(verifier.publicKey, signature, utf8(text)))) {
        return no(`the signature by ${who} does not verify: the note text has been altered or was signed by another key`);
      }
      verified = true;
    }
    // (6) At least one signature by the pinned key.
    if (!verified) {
      return no(
        `the note has no signature by the pinned key (signed by: ${unknown.join(", ") || "nobody"}; pinned: ${verifier.name}+${verifier.keyIdHex})`,
      );
    }
    return { ok: true, text, reason: `signed by ${verifier.name}+${verifier.keyIdHex}` };
  } catch (error) {
    return no(`the note cannot be checked: ${error?.message ?? error}`);
  }
}

// A C2SP tlog-checkpoint body (Checkpoint.parse): origin, size, base64 root, extensions.
export function parseCheckpoint(text) {
  const no = (reason) => ({ ok: false, reason });
  if (typeof text !== "string" || !text.endsWith("\n")) return no("a checkpoint body must end in a newline");
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3) return no(`a checkpoint has at least 3 lines (origin, size, root hash), this has ${lines.length}`);
  const [origin, sizeText, rootText, ...extensions] = lines;
  if (!origin) return no("the checkpoint origin line is empty");
  const size = /^(?:0|[1-9][0-9]*)$/.test(sizeText) ? uint64(sizeText) : null;
  if (size === null) return no(`tree size ${show(sizeText.slice(0, 30))} is not a decimal number without leading zeros below 2^64`);
  const root = b64decode(rootText);
  if (!root) return no(`root hash ${show(rootText.slice(0, 60))} is not base64`);
  if (root.length !== 32) return no(`the root hash is ${root.length} bytes, not 32`);
  if (b64(root) !== rootText) return no("the root hash is not in canonical base64");
  const empty = extensions.findIndex((line) => !line);
  if (empty >= 0) return no(`checkpoint line ${empty + 4} (an extension line) is empty`);
  return { ok: true, origin, size: plainInt(size), rootHash: root, extensions };
}

// The note's text without its signatures (unverified): for showing and for inclusion math.
function unverifiedBody(note) {
  if (typeof note !== "string") return null;
  const split = note.lastIndexOf("\n\n");
  return split < 0 ? null : note.slice(0, split + 1);
}

// A checkpoint note signed by `vkey`, of log `origin` (default: the key's name, as the CLI).
export async function verifyNote(note, vkey, { origin } = {}) {
  const opened = await openNote(note, vkey);
  if (!opened.ok) return opened;
  const checkpoint = parseCheckpoint(opened.text);
  if (!checkpoint.ok) return checkpoint;
  const verifier = await parseVerifierKey(vkey);
  const want = origin === undefined ? verifier.name : origin;
  if (want !== null && checkpoint.origin !== want) {
    return { ok: false, reason: `the checkpoint is for log ${show(checkpoint.origin)}, expected ${show(want)}` };
  }
  return {
    ...checkpoint,
    text: opened.text,
    reason: `${checkpoint.origin}, size ${checkpoint.size}, root ${b64(checkpoint.rootHash)}, ${opened.reason}`,
  };
}

// -- evidence bundles ----------------------------------------------------------------------

export async function verifyEvidence(bundle, options = {}) {
  const result = { ok: false, steps: [], needs: [], remember: null, statements: [] };
  try {
    await evidenceSteps(bundle, options, result);
  } catch (error) {
    result.steps.push({
      id: "error",
      title: "The verifier finished",
      ok: false,
      reason: `the verifier stopped on unexpected input: ${error?.message ?? error}`,
    });
  }
  result.ok = allOk(result.steps);
  return result;
}

async function evidenceSteps(bundle, options, result) {
  const steps = result.steps;
  const add = (id, title, ok, reason, extra = {}) => steps.push({ id, title, ok, reason, ...extra });
  const nowMs = options.nowMs ?? Date.now();

  let data = bundle;
  if (typeof data === "string") {
    try {
      data = JSON.parse(data);
    } catch (error) {
      add("bundle", "The bundle is a trustplane evidence bundle", false, `the bundle is not JSON: ${error.message}`);
      return;
    }
  }
  if (!isObject(data)) {
    add("bundle", "The bundle is a trustplane evidence bundle", false, `the bundle is ${kind(data)}, not a JSON object`);
    return;
  }
  const formatOk = data.format === EVIDENCE_FORMAT;
  const formatReason = formatOk ? EVIDENCE_FORMAT : `format is ${show(data.format)}, expected "${EVIDENCE_FORMAT}"`;
  add("bundle", "The bundle is a trustplane evidence bundle", formatOk, formatReason);
  const carried = isObject(data.keys) ? data.keys : {};

  // Trust anchors: the caller's pinned keys, never the bundle's.
  const keyset = await parseJwks(options.jwks);
  if (options.jwks === undefined || options.jwks === null) {
    const reason = "no gate JWKS is pinned: pin the gate's published approvals.jwks.json";
    add("keys.gate", "The gate's keys (JWKS) are pinned", false, `${reason}; the keys a bundle carries prove nothing about who signed it`);
  } else if (keyset.problems.length || keyset.keys.size === 0) {
    add("keys.gate", "The gate's keys (JWKS) are pinned", false, `the pinned JWKS is not usable: ${keyset.problems.join("; ") || "it holds no key"}`);
  } else {
    const bundleKids = isObject(carried.gate_jwks) && Array.isArray(carried.gate_jwks.keys) ? carried.gate_jwks.keys.map((k) => k?.kid) : [];
    const unknown = bundleKids.filter((kid) => typeof kid === "string" && !keyset.keys.has(kid));
    const note = unknown.length ? `; the bundle also names key(s) not pinned, not trusted: ${unknown.join(", ")}` : "";
    add("keys.gate", "The gate's keys (JWKS) are pinned", true, `pinned: ${[...keyset.keys.keys()].join(", ")}${note}`);
  }
  const verifier = options.pinnedVkey === undefined || options.pinnedVkey === null ? null : await parseVerifierKey(options.pinnedVkey);
  if (!verifier) {
    const reason = "no notary verifier key is pinned: pin notary.vkey from the notary's operator";
    add("keys.notary", "The notary's verifier key is pinned", false, `${reason}; a bundle's own key proves nothing`);
  } else if (!verifier.ok) {
    add("keys.notary", "The notary's verifier key is pinned", false, `the pinned verifier key is not usable: ${verifier.reason}`);
  } else {
    add("keys.notary", "The notary's verifier key is pinned", true, `pinned: ${verifier.vkey}`);
    if (carried.notary_vkey !== undefined && carried.notary_vkey !== null) {
      const theirs = await parseVerifierKey(carried.notary_vkey);
      const same = theirs.ok && theirs.name === verifier.name && equalBytes(theirs.publicKey, verifier.publicKey);
      add(
        "keys.notary.changed",
        "The notary's verifier key has not changed",
        same,
        same
          ? "the bundle names the pinned key"
          : `verifier key changed: the bundle names ${show(String(carried.notary_vkey).trim(), 200)}, ` +
              `the pinned key is ${verifier.vkey}: the notary's key was replaced, or this bundle is not ` +
              "from the pinned notary; checkpoints are checked with the pinned key only",
      );
    }
  }
  const notaryKey = verifier && verifier.ok ? verifier : null;

  // The intent: the exact bytes, and the fields shown are the ones in them.
  const approvals = Array.isArray(data.approvals) ? data.approvals : [];
  const intent = isObject(data.intent) ? data.intent : null;
  let intentBytes = null;
  if (!intent && (approvals.length || (data.intent !== null && data.intent !== undefined))) {
    const reason = `the bundle's intent is ${kind(data.intent)}: there are no intent bytes to check the approval against`;
    add("intent.bytes", "The intent bytes are the ones the bundle names", false, reason);
  } else if (intent) {
    intentBytes = b64decode(intent.record_b64);
    if (!intentBytes || intentBytes.length === 0) {
      add("intent.bytes", "The intent bytes are the ones the bundle names", false, "intent.record_b64 is missing or not standard base64");
      intentBytes = null;
    } else {
      const digest = "sha256:" + hex(await sha256(intentBytes));
      const ok = intent.intent_digest === digest;
      add(
        "intent.bytes",
        "The intent bytes are the ones the bundle names",
        ok,
        ok ? `${intentBytes.length} bytes, ${digest}` : `the intent bytes hash to ${digest}, the bundle names ${show(intent.intent_digest)}`,
      );
      const decoded = decodeIntent(intentBytes);
      add("intent.fields", "The intent shown is the one in the bytes (Avro)", ...intentFields(decoded, intent, data.intent_id));
    }
  }

  // The approvals: each one verified, and the one the bundle lists for this intent.
  if (data.approvals !== undefined && data.approvals !== null && !Array.isArray(data.approvals)) {
    add("approvals", "The approvals are a list", false, `approvals is ${kind(data.approvals)}, not a list`);
  }
  for (const [k, item] of approvals.entries()) {
    const checked = await checkApproval(isObject(item) && "envelope" in item ? item.envelope : item, keyset, {
      intentBytes,
      nowMs,
      parameters: intent?.parameters,
      prefix: `approval.${k}`,
    });
    steps.push(...checked.steps);
    result.statements.push(checked.statement);
    const title = `Approval ${k} is the one the bundle lists, for this intent`;
    if (!checked.statement) {
      add(`approval.${k}.listed`, title, false, "not checked: the approval did not verify", { skipped: true });
    } else {
      const predicate = checked.statement.predicate;
      const subject = checked.statement.subject[0].name.slice(7);
      const problems = [];
      if (isObject(item) && item.approval_id !== undefined && item.approval_id !== predicate.approvalId) {
        problems.push(`the bundle lists it as ${show(item.approval_id)} but it is ${show(predicate.approvalId)}`);
      }
      if (data.intent_id !== undefined && data.intent_id !== null && subject !== data.intent_id) {
        problems.push(`it approves intent ${show(subject)}, the bundle is about ${show(data.intent_id)}`);
      }
      add(`approval.${k}.listed`, title, problems.length === 0, problems.join("; ") || `approval ${predicate.approvalId} of intent ${subject}`);
    }
  }

  // The lineage events: each signed, intact, the proven leaf, under a signed root.
  const answers = Array.isArray(data.events) ? data.events : [];
  if (Array.isArray(data.unproven_events)) {
    const missing = data.unproven_events;
    add(
      "events.unproven",
      "Every lineage event of the intent has an inclusion proof",
      missing.length === 0,
      missing.length === 0
        ? `${answers.length} event(s), each with a proof`
        : `the notary gave no proof for ${missing.length} event(s): ${missing.map((m) => show(m, 200)).join("; ")}`,
    );
  }
  if (answers.length === 0) {
    const reason = Array.isArray(data.events) ? "the bundle holds no proven lineage event" : `events is ${kind(data.events)}, not a list`;
    add("events", "The bundle proves lineage events", false, reason);
  }
  const byIndex = new Map();
  for (const answer of answers) {
    if (isObject(answer) && isObject(answer.event) && isInt(answer.index) && !byIndex.has(answer.index)) byIndex.set(answer.index, answer.event);
  }
  const proven = [];
  const checkpoints = new Map();
  for (const [i, answer] of answers.entries()) {
    const outcome = await evidenceEvent(answer, i, { keyset, notaryKey, byIndex }, steps);
    proven.push(outcome);
    if (outcome.checkpoint) checkpoints.set(`${outcome.checkpoint.size}/${b64(outcome.checkpoint.rootHash)}`, outcome.checkpoint);
  }

  // Each approval's decision event is among those proven.
  for (const [k, statement] of result.statements.entries()) {
    const lineage = statement?.predicate?.lineage;
    if (!isObject(lineage) || typeof lineage.eventId !== "string") continue;
    const title = `Approval ${k}: its decision event is in the log`;
    const named = proven.filter((p) => p.eventId === lineage.eventId);
    const match = named.find((p) => p.ok) ?? named[0];
    const id = `approval.${k}.lineage`;
    const event = `lineage event ${lineage.eventId}`;
    if (!match) add(id, title, false, `the approval names ${event}, which the bundle does not prove`);
    else if (!match.ok) add(id, title, false, `${event} is in the bundle but did not verify (steps event.${match.position}.*)`);
    else if (lineage.logIndex !== null && lineage.logIndex !== undefined && lineage.logIndex !== match.index) {
      add(id, title, false, `the approval places ${event} at log index ${show(lineage.logIndex)}, the log has it at ${match.index}`);
    } else add(id, title, true, `${event}, log index ${match.index}, verified above`);
  }

  await consistencySteps([...checkpoints.values()], data, options, result, add);
}

function intentFields(decoded, intent, intentId) {
  if (!decoded.ok) return [false, decoded.reason];
  const record = decoded.record;
  const problems = [];
  const compare = (label, shown, actual) => {
    if (shown === undefined) return;
    let same;
    try {
      same = canonicalize(shown) === canonicalize(actual);
    } catch {
      same = false;
    }
    if (!same) problems.push(`${label} is shown as ${show(shown)} but the intent bytes hold ${show(actual)}`);
  };
  compare("intent_id", intentId ?? undefined, record.intent_id);
  for (const field of ["agent_id", "action", "resource"]) compare(field, intent[field], record[field]);
  // A long beyond 2^53 has no exact JSON form: it never compares equal (fail safe).
  compare("parameters", intent.parameters, record.parameters);
  compare("context", intent.context, record.context ?? {});
  if (problems.length) return [false, problems.join("; ")];
  return [true, `intent ${record.intent_id}: ${record.action} on ${record.resource} by ${record.agent_id} (Avro schema ${decoded.fingerprint})`];
}

async function evidenceEvent(answer, i, { keyset, notaryKey, byIndex }, steps) {
  const event = isObject(answer) ? answer.event : undefined;
  const s = new Steps(`event.${i}`, eventPlan(eventLabel(event, `Event ${i}`)), steps);
  const outcome = { position: i, eventId: isObject(event) ? event.event_id : undefined, index: null, ok: false, checkpoint: null };
  if (!isObject(answer) || !isObject(event)) {
    s.fail("answer", isObject(answer) ? `the answer's event is ${kind(event)}, not an object` : `the answer is ${kind(answer)}, not an object`);
    for (const id of ["signature", "hash", "leaf", "inclusion", "checkpoint"]) s.skip(id, `not checked: "${s.plan.answer}" failed`);
    return outcome;
  }
  const first = steps.length;
  // The gate's signature and the event hash.
  const signature = await eventSignature(event, keyset, undefined);
  s.add("signature", signature.ok, signature.reason);
  const hashed = await eventHashCheck(event);
  s.add("hash", hashed.ok, hashed.reason);
  const index = answer.index;
  if (isInt(index) && byIndex.has(index - 1)) {
    const linked = linkCheck(event, byIndex.get(index - 1));
    s.add("link", linked.ok, linked.reason);
  }
  // It is the proven leaf.
  const proof = isObject(answer.proof) ? answer.proof : null;
  if (!isInt(index) || index < 0) s.fail("leaf", `the answer's index is ${show(index)}, not a log index`);
  else if (event.log_index !== index) s.fail("leaf", `the event's log_index is ${show(event.log_index)} but the proof is for index ${index}`);
  else if (!proof) s.fail("leaf", `the answer's proof is ${kind(answer.proof)}, not an object`);
  else if (proof.leaf_index !== index) s.fail("leaf", `the proof is for leaf ${show(proof.leaf_index)}, not for index ${index}`);
  else s.pass("leaf", `log index ${index}`);
  outcome.index = isInt(index) ? index : null;
  // Inclusion under the checkpoint's root (the signature on it is the next step).
  const note = answer.checkpoint;
  const body = unverifiedBody(note);
  const parsed =
    body === null
      ? { ok: false, reason: `the answer's checkpoint is ${typeof note === "string" ? "not a signed note" : kind(note)}` }
      : parseCheckpoint(body);
  if (!parsed.ok) s.fail("inclusion", `no root to check against: ${parsed.reason}`);
  else if (!proof) s.fail("inclusion", `the answer's proof is ${kind(answer.proof)}, not an object`);
  else if (!isInt(index) || index < 0) s.fail("inclusion", `the answer's index is ${show(index)}, not a log index`);
  else if (uint64(proof.tree_size) === null || BigInt(proof.tree_size) !== BigInt(parsed.size)) {
    s.fail("inclusion", `the proof is for tree size ${show(proof.tree_size)} but the checkpoint is of size ${parsed.size}`);
  } else if (typeof event.event_hash !== "string" || !HASH_TEXT.test(event.event_hash)) {
    s.fail("inclusion", `the event has no valid event_hash (${show(event.event_hash)}), so it is not a linked leaf`);
  } else {
    const leaf = await eventLeafHash(event);
    const included = leaf
      ? await verifyInclusion(leaf, index, parsed.size, proof.inclusion_path, parsed.rootHash)
      : { ok: false, reason: "the event has no RFC 8785 (JCS) form" };
    s.add("inclusion", included.ok, included.reason);
  }
  // The checkpoint is signed by the pinned notary key.
  if (!notaryKey) s.fail("checkpoint", "no usable notary verifier key is pinned");
  else {
    const checked = await verifyNote(note, notaryKey);
    s.add("checkpoint", checked.ok, checked.reason);
    if (checked.ok) outcome.checkpoint = { ...checked, note };
  }
  outcome.ok = steps.slice(first).every((step) => step.ok);
  return outcome;
}

function consistencyProofs(data, options) {
  const answers = [...(Array.isArray(options.consistency) ? options.consistency : []), ...(Array.isArray(data.consistency) ? data.consistency : [])];
  return answers
    .map((answer) => (isObject(answer) && isObject(answer.proof) ? answer.proof : answer))
    .filter((proof) => isObject(proof) && uint64(proof.old_size) !== null && uint64(proof.new_size) !== null);
}

async function consistencySteps(verified, data, options, result, add) {
  if (verified.length === 0) return;
  const proofs = consistencyProofs(data, options);
  let allGood = true;
  const prove = async (id, title, oldSize, oldRoot, newSize, newRoot) => {
    const proof = proofs.find((p) => uint64(p.old_size) === oldSize && uint64(p.new_size) === newSize);
    if (!proof) {
      allGood = false;
      const [old, neu] = [plainInt(oldSize), plainInt(newSize)];
      const path = `/proof/consistency?old=${old}&new=${neu}`;
      result.needs.push({ old, new: neu, path });
      const reason = `needs the notary's consistency proof from size ${old} to ${neu} (GET ${path})`;
      add(id, title, false, reason, { pending: true });
      return;
    }
    const checked = await verifyConsistency(oldSize, newSize, proof.consistency_path, oldRoot, newRoot);
    allGood &&= checked.ok;
    add(id, title, checked.ok, checked.reason);
  };
  // Sizes as BigInts from here on.
  const bySize = new Map();
  for (const c of verified) {
    const size = BigInt(c.size);
    if (!bySize.has(size)) bySize.set(size, []);
    if (!bySize.get(size).some((d) => equalBytes(d.rootHash, c.rootHash))) bySize.get(size).push(c);
  }
  const sizes = [...bySize.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const top = sizes[sizes.length - 1];
  const newest = bySize.get(top)[0];

  // Two signed checkpoints of one size have one root; the smaller ones are prefixes.
  const forks = sizes.filter((size) => bySize.get(size).length > 1);
  if (forks.length) {
    allGood = false;
    const roots = forks.map((size) => `size ${size}: ${bySize.get(size).map((c) => b64(c.rootHash)).join(" and ")}`);
    const reason = `two signed checkpoints of one size with different roots (${roots.join("; ")}): the log was forked or rewritten`;
    add("checkpoints.fork", "The bundle's checkpoints are of one log", false, reason);
  }
  for (const size of sizes.slice(0, -1)) {
    const title = `The checkpoint of size ${size} is a prefix of the one of size ${top}`;
    await prove(`consistency.${size}-${top}`, title, size, bySize.get(size)[0].rootHash, top, newest.rootHash);
  }

  // The newest extends (or is a prefix of) the checkpoint this browser verified before.
  const id = "consistency.remembered";
  const title = "The log extends the checkpoint this browser verified before";
  const remembered = options.remembered;
  let keepNewest = true;
  const fail = (reason) => {
    allGood = false;
    add(id, title, false, reason);
  };
  if (remembered === undefined || remembered === null) {
    add(id, title, true, `no checkpoint remembered yet: the one of size ${top} is the first seen from this log; remember it`);
  } else {
    const size = isObject(remembered) ? uint64(remembered.size) : null;
    const root = isObject(remembered)
      ? hashArg(remembered.rootHash ?? remembered.root, "the remembered root")
      : { reason: `the remembered checkpoint is ${kind(remembered)}` };
    if (size === null) fail(`the remembered checkpoint is not usable: size ${show(remembered?.size)} is not a tree size`);
    else if (!root.bytes) fail(`the remembered checkpoint is not usable: ${root.reason}`);
    else if (remembered.origin !== undefined && remembered.origin !== newest.origin) {
      fail(`the remembered checkpoint is of log ${show(remembered.origin)}, the bundle's of ${show(newest.origin)}`);
    } else if (size === 0n) add(id, title, true, "the remembered checkpoint is the empty tree: every log extends it");
    else if (size === top && equalBytes(root.bytes, newest.rootHash)) {
      add(id, title, true, `the same checkpoint as the one remembered (size ${top})`);
    } else if (size === top) {
      fail(
        `two signed checkpoints of size ${top} with different roots (remembered ${b64(root.bytes)}, ` +
          `now ${b64(newest.rootHash)}): the log was forked or rewritten`,
      );
    } else if (size < top) await prove(id, title, size, root.bytes, top, newest.rootHash);
    else {
      keepNewest = false;
      await prove(id, title, top, newest.rootHash, size, root.bytes);
    }
  }
  if (allGood && keepNewest) {
    result.remember = { origin: newest.origin, size: newest.size, rootHash: b64(newest.rootHash), note: newest.note };
  }
}
