"""List arguments reach the gate one element per parameter, and the digest still covers
the whole call."""

from __future__ import annotations

from streams.eval.flatten import SLOTS, FlatMapping, flatten_list
from streams.sdk.guard.mapping import arguments_digest, mapping_from_document

MAPPING = FlatMapping.of(
    mapping_from_document(
        {
            "toolset": {"name": "mail"},
            "tools": {
                "send_email": {
                    "action": "email.send",
                    "resource": "mailbox:own",
                    "parameters": ["subject", "recipients", "attachments"],
                }
            },
        }
    )
)


def test_a_list_becomes_a_count_and_padded_slots() -> None:
    assert flatten_list("to", ["a@x.org", "b@y.org"]) == {
        "to_count": 2,
        "to_0": "a@x.org",
        "to_1": "b@y.org",
        "to_2": "",
        "to_3": "",
    }


def test_elements_past_the_slots_are_counted_not_sent() -> None:
    flat = flatten_list("to", [f"p{n}@x.org" for n in range(SLOTS + 3)])
    assert flat["to_count"] == SLOTS + 3
    assert f"to_{SLOTS}" not in flat


def test_non_text_elements_are_their_canonical_json() -> None:
    flat = flatten_list("attachments", [{"type": "file", "file_id": "19"}])
    assert flat["attachments_0"] == '{"file_id":"19","type":"file"}'


def test_the_mapped_call_keeps_scalars_and_digests_every_argument() -> None:
    arguments = {"recipients": ["a@x.org"], "subject": "hi", "body": "secret"}
    call = MAPPING.map("send_email", arguments)
    assert call.parameters == {
        "subject": "hi",
        "recipients_count": 1,
        "recipients_0": "a@x.org",
        "recipients_1": "",
        "recipients_2": "",
        "recipients_3": "",
    }
    assert call.context["arguments_sha256"] == arguments_digest(arguments)


def test_an_absent_list_sends_nothing() -> None:
    call = MAPPING.map("send_email", {"recipients": [], "subject": "hi"})
    assert call.parameters["recipients_count"] == 0
    assert "attachments_count" not in call.parameters
