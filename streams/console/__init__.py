"""The operators' console: a web server on 127.0.0.1:6060 (``trustplane console``).

Three surfaces read the trust plane's own records and act on it only through signed
operator commands:

- Governance Console (:mod:`.views.governance`): agents, runtimes, the policy bundle and
  its history, kill switches, the review queue, a live decision feed, and the what-if
  replay of a draft bundle against recorded intents;
- Execution Lineage Explorer (:mod:`.views.lineage`): search, per-intent timelines, the
  gap views and evidence bundles;
- Infrastructure Health Dashboard (:mod:`.views.health`): the health of the guarantees,
  from Prometheus, the notary and the workers.

The server holds no operator key. Each operator's browser holds a non-extractable
Ed25519 key (WebCrypto), enrolled by a root operator (``trustplane operators``), and
signs every command itself (``static/tpsign.js``: DSSE PAE over RFC 8785 JSON, the
format the CLI signs); the server checks its shape and its place in the key's history
and relays it to ``control`` (:mod:`.relay`), where every worker verifies it.
"""
