"""Provable lineage in SQL: a row picked from ClickHouse is proven with the notary's
inclusion proof against a signed checkpoint, on the real broker (gate worker, notary,
sink)."""

from __future__ import annotations

import pytest

from processors.crypto.keys import Keyset
from processors.log.attest import verify_event_signature
from processors.log.chain import ChainError
from processors.log.checkpoint import NoteVerifier
from processors.log.merkle import ProofError
from processors.log.notary import InclusionProof, verify_event_against_checkpoint
from processors.records import LineageEvent
from streams.cli.proof import NotaryClient
from streams.notary import notary_vkey_path
from streams.sdk.client import IntentPublisher
from tests.integration import test_sink
from tests.integration.test_sink import running_notary, wait_for

pytestmark = pytest.mark.broker

sink_factory = test_sink.sink_factory  # the fixture: a real `sink` process


def test_lineage_rows_picked_from_sql_verify_against_a_signed_checkpoint(
    settings_factory, worker_factory, sink_factory
):
    from streams.dev.estate import setup_estate

    settings = settings_factory()
    estate = setup_estate(settings)
    with IntentPublisher(settings) as publisher:
        for n in range(6):
            publisher.publish(estate.intent("billing-agent", "invoices.read", f"invoice:{n}"))
            publisher.publish(estate.intent("support-bot", "payments.transfer", f"acct:{n}"))
    with running_notary(settings) as notary:
        worker_factory(settings).start()
        sink = sink_factory(settings).start("--batch-ms", "200")
        wait_for(
            lambda: sink.query("SELECT count() FROM intent_decisions").rows[0][0] == 12,
            90,
            "12 decisions",
            sink,
        )
        url = notary.url
        assert url is not None
        client = NotaryClient(url)
        verifier = NoteVerifier.from_vkey(notary_vkey_path(settings).read_text().strip())
        gate_keys = Keyset.from_file(settings.resolved_keys_dir / "approvals.jwks.json")

        # the log stops growing once the gate is done: wait until the notary has
        # checkpointed every event and the sink has stored every event and that checkpoint
        def settled() -> bool:
            size = int(client.get_json("/healthz").get("checkpoint_size") or 0)
            stored = sink.query(
                "SELECT (SELECT count() FROM lineage_events), "
                "(SELECT max(tree_size) FROM checkpoints)"
            ).rows[0]
            return size > 0 and stored[0] == size and stored[1] == size

        wait_for(settled, 60, "every event stored and checkpointed", sink)

        # every lineage row is linked: hashes and log index (prev_hash null only at 0)
        unlinked = sink.query(
            "SELECT count() FROM lineage_events WHERE event_hash IS NULL OR log_index IS NULL "
            "OR (prev_hash IS NULL AND log_index != 0)"
        )
        assert unlinked.rows[0][0] == 0

        # rows picked from SQL: the first of the log, the first of each stage, the last
        picked = sink.query(
            "SELECT * FROM lineage_events WHERE log_index IN ("
            " SELECT min(log_index) FROM lineage_events GROUP BY stage"
            " UNION ALL SELECT max(log_index) FROM lineage_events"
            ") OR log_index = 0 ORDER BY log_index"
        ).dicts()
        assert len(picked) >= 3  # control and enforcement stages, and the last event
        assert picked[0]["log_index"] == 0 and picked[0]["prev_hash"] is None
        # the checkpoint, as the sink stored it from the notary's `checkpoints`
        note = sink.query("SELECT note FROM checkpoints ORDER BY tree_size DESC LIMIT 1").rows[0][0]

        for row in picked:
            # 1. the linked event, rebuilt from the SQL row alone ('' ids back to null)
            event = LineageEvent.from_row(row).to_record()
            index = int(row["log_index"])
            # 1b. signed by a key of the gate's published JWKS
            assert verify_event_signature(event, gate_keys) == event["signer"]
            # 2. the notary's inclusion proof for the row's log index
            answer = client.inclusion(index=index)
            proof = InclusionProof.from_json(answer["proof"])
            assert answer["checkpoint"] == note
            # 3. the project's verifier: the checkpoint is signed by the notary's key, the
            #    event is intact (event_hash), and its leaf SHA-256(0x00 || JCS(event)) is
            #    included under the checkpoint's root
            checkpoint = verify_event_against_checkpoint(event, index, proof, note, verifier)
            assert checkpoint.size > index
            assert answer["event"] == event, "the SQL row is the logged event"

        # a row edited in SQL, or claimed at another index, no longer proves
        last = picked[-1]
        index = int(last["log_index"])
        proof = InclusionProof.from_json(client.inclusion(index=index)["proof"])
        edited = {**LineageEvent.from_row(last).to_record(), "status": "approved"}
        with pytest.raises(ChainError, match="altered"):
            verify_event_against_checkpoint(edited, index, proof, note, verifier)
        first_proof = InclusionProof.from_json(client.inclusion(index=0)["proof"])
        with pytest.raises(ProofError):
            verify_event_against_checkpoint(
                LineageEvent.from_row(last).to_record(), 0, first_proof, note, verifier
            )
