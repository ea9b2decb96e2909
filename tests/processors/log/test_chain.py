"""Hash-linked lineage events: the documented formula, and every way to break a chain."""

from __future__ import annotations

import copy
import hashlib

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.log.chain import (
    ChainError,
    compute_event_hash,
    leaf_bytes,
    link,
    link_with_leaf,
    verify_chain,
    verify_event_hash,
)


def make_event(n: int, **overrides: object) -> dict:
    """A LineageEvent record (schemas/lineage_event.avsc), as a worker emits it."""
    event = {
        "event_id": f"evt-{n:04d}",
        "intent_id": f"intent-{n // 3}",
        "agent_id": "agent-7",
        "stage": ("decode", "authorization", "enforcement")[n % 3],
        "event_type": "layer.verdict",
        "status": "allow",
        "reasons": [f"reason {n}"],
        "attributes": {"topic": "intents", "partition": str(n % 4), "offset": str(n)},
        "occurred_at_ms": 1_700_000_000_000 + n,
        "worker": "gate-1",
        "prev_hash": None,
        "event_hash": None,
    }
    event.update(overrides)
    return event


def make_chain(count: int) -> list[dict]:
    chain, prev = [], None
    for n in range(count):
        linked = link(make_event(n), prev)
        chain.append(linked)
        prev = linked["event_hash"]
    return chain


def test_event_hash_is_the_documented_formula():
    first = link(make_event(0), None)
    body = {k: v for k, v in first.items() if k != "event_hash"}
    assert body["prev_hash"] is None
    expected = hashlib.sha256(b"" + b"\x00" + rfc8785.dumps(body)).hexdigest()
    assert first["event_hash"] == "sha256:" + expected

    second = link(make_event(1), first["event_hash"])
    assert second["prev_hash"] == first["event_hash"]
    body = {k: v for k, v in second.items() if k != "event_hash"}
    prefix = first["event_hash"].encode()
    expected = hashlib.sha256(prefix + b"\x00" + rfc8785.dumps(body)).hexdigest()
    assert second["event_hash"] == "sha256:" + expected


def test_link_does_not_modify_its_input_and_replaces_old_hashes():
    event = make_event(0, prev_hash="sha256:" + "0" * 64, event_hash="sha256:" + "1" * 64)
    before = copy.deepcopy(event)
    linked = link(event, None)
    assert event == before
    assert linked["prev_hash"] is None
    verify_event_hash(linked)


def test_leaf_bytes_is_canonical_json_of_the_linked_event():
    linked = link(make_event(0), None)
    assert leaf_bytes(linked) == rfc8785.dumps(linked)
    # key order does not matter
    assert leaf_bytes(dict(reversed(list(linked.items())))) == leaf_bytes(linked)
    with pytest.raises(ChainError, match="event_hash"):
        leaf_bytes(make_event(0))


def test_an_intact_chain_verifies():
    chain = make_chain(10)
    verify_chain(chain)
    verify_chain([])
    # a segment verifies from its anchor
    verify_chain(chain[4:], anchor=chain[3]["event_hash"])


def test_an_altered_event_is_found():
    chain = make_chain(10)
    chain[3]["attributes"]["offset"] = "999"
    with pytest.raises(ChainError, match="position 3.*altered") as info:
        verify_chain(chain)
    assert info.value.position == 3


def test_an_altered_and_rehashed_event_breaks_the_next_link():
    chain = make_chain(10)
    chain[3] = link({**chain[3], "status": "deny"}, chain[3]["prev_hash"])
    with pytest.raises(ChainError, match="position 4 follows an event that is not") as info:
        verify_chain(chain)
    assert info.value.position == 4


def test_a_dropped_event_is_found():
    chain = make_chain(10)
    del chain[5]
    with pytest.raises(ChainError, match="dropped between positions 4 and 5") as info:
        verify_chain(chain)
    assert info.value.position == 5


def test_a_dropped_first_event_is_found():
    chain = make_chain(5)
    with pytest.raises(ChainError, match="position 0.*dropped"):
        verify_chain(chain[1:])


def test_an_inserted_event_is_found():
    chain = make_chain(10)
    forged = link(make_event(99), chain[4]["event_hash"])
    chain.insert(5, forged)
    with pytest.raises(ChainError, match="position 6 follows the event at position 4") as info:
        verify_chain(chain)
    assert info.value.position == 6


def test_reordered_events_are_found():
    chain = make_chain(10)
    chain[5], chain[6] = chain[6], chain[5]
    with pytest.raises(ChainError, match="position 5 follows the event at position 6.*order"):
        verify_chain(chain)


def test_a_duplicated_event_is_found():
    chain = make_chain(6)
    chain.insert(3, chain[2])
    with pytest.raises(ChainError, match="position 3 follows the event at position 1"):
        verify_chain(chain)


def test_a_second_genesis_is_found():
    chain = make_chain(4) + [link(make_event(50), None)]
    with pytest.raises(ChainError, match="position 4 starts a chain"):
        verify_chain(chain)


def test_malformed_hashes_are_refused():
    chain = make_chain(3)
    chain[1]["event_hash"] = "md5:abc"
    with pytest.raises(ChainError, match="64 lowercase hex"):
        verify_chain(chain)
    with pytest.raises(ChainError, match="prev_hash"):
        link(make_event(0), "not-a-hash")
    with pytest.raises(ChainError, match="anchor"):
        verify_chain([], anchor="nope")
    with pytest.raises(ChainError, match="not an object"):
        verify_chain(["text"])  # type: ignore[list-item]


def test_values_without_a_canonical_form_are_refused():
    with pytest.raises(ChainError, match="canonical"):
        link(make_event(0, occurred_at_ms=2**60), None)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_events = st.dictionaries(
    st.text(max_size=8, alphabet=st.characters(codec="utf-8")).filter(
        lambda k: k not in ("prev_hash", "event_hash")
    ),
    _values,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(_events, st.none() | st.just("sha256:" + "ab" * 32))
def test_hashes_and_leaves_are_exactly_rfc8785(event, prev):
    """The notary canonicalizes each member once and composes (RFC 8785 §3.2.3 order);
    the result must be byte-identical to the rfc8785 library's whole-object output."""
    linked, leaf = link_with_leaf(event, prev)
    assert leaf == rfc8785.dumps(linked) == leaf_bytes(linked)
    body = {k: v for k, v in linked.items() if k != "event_hash"}
    expected = hashlib.sha256((prev or "").encode() + b"\x00" + rfc8785.dumps(body)).hexdigest()
    assert linked["event_hash"] == "sha256:" + expected == compute_event_hash(linked, prev)


@settings(max_examples=100, deadline=None)
@given(st.lists(_events, min_size=1, max_size=8), st.data())
def test_any_change_to_any_event_is_detected(events, data):
    chain, prev = [], None
    for event in events:
        chain.append(link(event, prev))
        prev = chain[-1]["event_hash"]
    verify_chain(chain)
    position = data.draw(st.integers(0, len(chain) - 1))
    victim = dict(chain[position])
    key = data.draw(st.sampled_from(sorted(victim)))
    if key == "event_hash":
        victim[key] = "sha256:" + hashlib.sha256(b"other").hexdigest()
    else:
        victim[key] = ["changed", victim[key]]
    chain[position] = victim
    with pytest.raises(ChainError) as info:
        verify_chain(chain)
    assert info.value.position == position


def test_compute_event_hash_ignores_a_stale_event_hash():
    event = make_event(1)
    assert compute_event_hash(event, None) == compute_event_hash({**event, "event_hash": "x"}, None)


def test_member_order_around_event_hash_is_rfc8785():
    """Names that sort just before/after "event_hash", and beyond the BMP (UTF-16 order
    differs from code-point order there), compose exactly as rfc8785 orders them."""
    event = {
        k: 1 for k in ("event", "event_hasg", "event_hash_", "event_i", "\ue000", "\U0001f600", "")
    }
    linked, leaf = link_with_leaf(event, None)
    assert leaf == rfc8785.dumps(linked)
