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
successor aborts (``init_transactions``), so the successor restores the committed log
(below) and resumes ``lineage`` where the last committed batch ended: no gap, no
duplicate, and every checkpoint it signs extends the ones before it. The restored log
is checked against the last checkpoints on ``checkpoints`` (their roots must be the
roots of the log at their sizes); a mismatch stops the notary. An aborted transaction
is handled the same way, in-process: abort, rewind, restore.

One event per id
================
The log holds exactly one event per ``event_id``, over its whole life and any number
of restarts. An event whose id the log already holds (committed, or earlier in the same
transaction) is not logged again: with the same content (the event without
``prev_hash``/``event_hash``/``log_index`` and without ``signer``/``signature``, since
two gate workers may sign the same event with different gate keys) it is a redelivery,
dropped and counted (``duplicates``); with other content it is refused to ``rejected``
(code ``conflicting_event_id``, the reason names the id and the log index of the first
version), counted (``reused_ids``) and logged with ``ALERT``. The check uses the
``event_id`` -> index map and a 16-byte content digest of every logged event, not a
window. A log written before this rule may hold an id twice: it is restored as it is
(``repeated_ids``), and lookups by id give the first.

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

Restart
=======
The notary keeps a snapshot of its committed state in
``<state_dir>/notary/<lineage-log topic>/`` (format: ``snapshot``): the Merkle tree's
stored subtrees, the chain head, each event's id, content digest and ``lineage-log``
offset, the checkpoints kept, and how far into both topics it reaches, under a manifest
signed by the notary's key (a C2SP signed note) that holds the SHA-256 of every file.
After a commit, every ``snapshot_every_events`` (5,000) events or ``snapshot_every_ms``
(1 s), the writer thread copies what committed since the last save (a few ms) and a
thread of its own appends it to the files (fsync, then the manifest replaced
atomically); a clean stop saves everything. Nothing of an open transaction is ever in
it. On start the notary trusts the snapshot only once the topics confirm it
(``restore``): both topics reach as far as the snapshot; the ``lineage-log`` record of
its last index has its head ``event_hash``; its latest checkpoint is the note at its
offset on ``checkpoints``, signed by this notary's key, and its root is the snapshot's
root at that size. It then replays only the ``lineage-log`` records after the snapshot
and restores the later checkpoints as a full replay would (each checked against the
root). A snapshot that is missing, damaged, of another origin, key or topics, or that
the topics contradict (e.g. recreated topics: the snapshot is ahead of them) is set
aside with a warning: the notary replays all of ``lineage-log``, at roughly 10,000
events/s on an idle core (the RFC 8785 canonicalization of each event dominates), and
writes a new snapshot. Reading a snapshot takes well under a second per 100,000 events
(``bench/bench_notary_restore.py``); a restart also connects to Kafka (about 0.5 s).

Memory
======
In memory: the Merkle tree (64 bytes per event), the ``lineage-log`` offset of each
event (8 bytes), its content digest (16 bytes), an ``event_id`` -> log index dict and
the ids in log order (about 170 bytes per event: some 180 MB per million events;
beyond a few million, look events up in the lineage store instead), and the last
``max_checkpoints`` checkpoints. Events themselves are read back from ``lineage-log``
when a proof asks for one.

Modules
=======
``keys`` (origin and signing key), ``topics`` (the log topics), ``log`` (NotaryLog: the
log without Kafka), ``snapshot`` (its state on disk), ``restore`` (rebuilding it at
start), ``http`` (the proof endpoint), ``fetcher`` (reading an event back), ``service``
(NotaryService: the transactional loop), ``exceptions``.
"""

from streams.notary.exceptions import (
    LogIntegrityError,
    NotaryServiceError,
    ProofRequestError,
    SnapshotError,
)
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
from streams.notary.snapshot import SnapshotStore, snapshot_dir
from streams.notary.topics import CHECKPOINT_TOPIC, LOG_TOPIC, ensure_notary_topics

__all__ = [
    "DEFAULT_ORIGIN",
    "DEFAULT_PORT",
    "LOG_TOPIC",
    "CHECKPOINT_TOPIC",
    "NotaryServiceError",
    "LogIntegrityError",
    "ProofRequestError",
    "SnapshotError",
    "SnapshotStore",
    "snapshot_dir",
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
