"""The notary service: the one writer of the provable lineage log.

Log order
=========
There is one notary per log *origin* (default ``trustplane.local/lineage``, setting
``notary_origin``). It consumes every partition of ``lineage`` (consumer group
``<group_id>-notary``, one static member, ``read_committed``) and is the only writer of
``lineage-log``: **the order in which it appends events is the log**. Event ``i`` of
``lineage-log`` (key ``i`` as decimal text, ``log_index == i``) is leaf ``i`` of the RFC
9162 Merkle tree and link ``i`` of the hash chain (``processors/log/chain.py``); Kafka
partitions, offsets and event times play no part in it. A second notary with the same
origin would fork the log, so both ids it uses (``transactional.id`` and
``group.instance.id``, ``<group_id>-notary``) fence any predecessor: the newest
notary wins and the older one stops with a fatal error.

Records it writes
=================
``lineage-log`` (1 partition, unlimited retention)
    key: the log index (decimal text); value: the LineageEvent as received, with
    ``log_index``, ``prev_hash`` and ``event_hash`` set. ``log_index`` is set *before*
    linking, so ``event_hash`` and the Merkle leaf (RFC 8785 JSON of the whole record)
    cover it: a record read back verifies as it is.
``checkpoints`` (1 partition, unlimited retention)
    key: the origin; value: a C2SP checkpoint as a signed note (UTF-8 text), signed
    by ``<keys_dir>/notary.pem``; the verifier key is written to
    ``<keys_dir>/notary.vkey``. A checkpoint is signed when the log grew and either
    ``checkpoint_every_events`` events (default 1000, setting
    ``notary_checkpoint_events``) or ``checkpoint_every_ms`` ms (default 500, setting
    ``notary_checkpoint_ms``) have passed (``Notary.maybe_checkpoint``), including while
    no event arrives. An event is covered by a checkpoint about that interval plus one
    transaction after it was produced: p99 ~0.6 s at 2,000 events/s on a loaded
    2-core machine (``bench/bench_checkpoint_lag.py``).

Exactly once
============
Each batch is one Kafka transaction of the shared loop (``streams/kafka.py``): the linked events,
the checkpoint (if one is due) and the consumed ``lineage`` offsets commit together
or not at all. A notary killed mid-batch leaves an open transaction that its
successor aborts (``init_transactions``), so the successor rebuilds the log from
``lineage-log`` and resumes ``lineage`` where the last committed batch ended: no gap,
no duplicate, and every checkpoint it signs extends the ones before it. On start the
rebuilt log is checked against the last checkpoints on ``checkpoints`` (their roots
must be the roots of the rebuilt log at their sizes); a mismatch stops the notary.
An aborted transaction is handled the same way, in-process: abort, rewind, rebuild.

Duplicates
==========
Gate workers produce lineage only in committed transactions and the notary reads
``read_committed``, so a redelivered event is not expected. Should one arrive anyway
(a retry by a non-transactional writer), an event whose ``event_id`` *and* content
equal one of the last ``dedupe_window`` events is dropped. An event that reuses an
``event_id`` with other content is logged (and counted in ``reused_ids``): it is a
different event, and dropping it would hide it from the audit trail. The gate derives
event ids from the position the intent was read at, so a replayed intent gets ids of
its own and a reused id is an alert (logged with ``ALERT``).

Only gates write the log
========================
Every event must carry a valid signature by a key of the gate's published JWKS
(``processors/log/attest.py``; ``streams/gatekeys.py`` re-reads the file after a
rotation). A record on ``lineage`` that is not a LineageEvent, or is unsigned, or whose
signature does not verify, is not logged: it goes to ``rejected`` with the reason
(``unsigned_lineage`` or the decoder's code), is counted (``unsigned``/``undecodable``
in ``/healthz``) and logged as a warning. So an inclusion proof shows that a gate key
vouched for the event: the Merkle leaf covers ``signer`` and ``signature``.

Serving proofs
==============
A read-only HTTP endpoint on 127.0.0.1 (port ``notary_port``, default 6067) answers
from committed state only: ``GET /checkpoint`` (latest signed note), ``GET /vkey``,
``GET /proof/inclusion?event_id=…`` or ``?index=…``, ``GET /proof/consistency?old=N&new=M``
and ``GET /healthz``. Clients must verify what it returns (``streams/cli/proof.py``).

Memory and restart time
=======================
In memory: the Merkle tree (64 bytes per event), the ``lineage-log`` offset of each
event (8 bytes), an ``event_id`` -> log index dict (about 160 bytes per event: some
170 MB per million events; beyond a few million, look events up in the lineage store
instead), the last ``dedupe_window`` event ids and the last ``max_checkpoints``
checkpoints. Events themselves are read back from ``lineage-log`` when a proof asks
for one. A restart replays ``lineage-log`` from its first record, at roughly 10,000
events/s (the RFC 8785 canonicalization of each event dominates).

Modules
=======
``keys`` (origin and signing key), ``topics`` (the log topics), ``log`` (NotaryLog: the
log without Kafka), ``http`` (the proof endpoint), ``fetcher`` (reading an event back),
``service`` (NotaryService: the transactional loop), ``exceptions``.
"""

from streams.notary.exceptions import LogIntegrityError, NotaryServiceError, ProofRequestError
from streams.notary.http import DEFAULT_PORT, NotaryHTTPServer, handle_request, notary_port
from streams.notary.keys import (
    DEFAULT_ORIGIN,
    load_notary_signer,
    notary_key_path,
    notary_origin,
    notary_vkey_path,
)
from streams.notary.log import LogRecord, NotaryLog, event_json, require_log_index
from streams.notary.service import NotaryService
from streams.notary.topics import CHECKPOINT_TOPIC, LOG_TOPIC, ensure_notary_topics

__all__ = [
    "DEFAULT_ORIGIN",
    "DEFAULT_PORT",
    "LOG_TOPIC",
    "CHECKPOINT_TOPIC",
    "NotaryServiceError",
    "LogIntegrityError",
    "ProofRequestError",
    "LogRecord",
    "NotaryLog",
    "NotaryHTTPServer",
    "handle_request",
    "NotaryService",
    "notary_origin",
    "notary_port",
    "notary_key_path",
    "notary_vkey_path",
    "load_notary_signer",
    "ensure_notary_topics",
    "require_log_index",
    "event_json",
]
