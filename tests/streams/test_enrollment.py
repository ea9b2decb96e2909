"""One-time enrolment links: the invitations folder the console and the invite process share."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from processors.crypto.keys import SigningKey, b64url, generate_signing_key, raw_public_key
from processors.exceptions import TrustplaneError
from streams.enrollment import (
    BadEnrollmentKey,
    InviteError,
    InviteExpired,
    InviteStore,
    InviteUsed,
    Redemption,
    UnknownInvite,
    await_enrolment,
)

T0 = 1_700_000_000_000


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def x_of(key: SigningKey) -> str:
    return b64url(raw_public_key(key.public_key))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> InviteStore:
    return InviteStore(tmp_path / "console" / "invites", clock=clock)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- create -----------------------------------------------------------------------------------


def test_an_invitation_keeps_only_the_secrets_hash_in_private_files(store: InviteStore) -> None:
    invite = store.create("newcomer", 600)
    assert invite.expires_at_ms == T0 + 600_000 and invite.label == "newcomer"
    assert invite.link("http://127.0.0.1:6060") == (
        f"http://127.0.0.1:6060/enroll#{invite.id}.{invite.secret}"
    )
    assert "." not in invite.id and "." not in invite.secret and len(invite.secret) >= 43
    path = store.directory / f"{invite.id}.json"
    document = json.loads(path.read_text())
    assert set(document) == {"secret_sha256", "label", "expires_at_ms", "created_at_ms"}
    assert invite.secret not in path.read_text()
    assert mode(path) == 0o600 and mode(store.directory) == 0o700
    assert [p.name for p in store.directory.iterdir()] == [path.name]  # no temporary left
    assert store.status(invite.id).state == "pending"


def test_an_invitation_needs_a_label_and_a_sensible_lifetime(store: InviteStore) -> None:
    with pytest.raises(TrustplaneError, match="needs a label"):
        store.create(" ", 600)
    with pytest.raises(InviteError, match="lifetime must be 1 s to"):
        store.create("newcomer", 0)
    with pytest.raises(InviteError, match="lifetime"):
        store.create("newcomer", 8 * 24 * 3600)


def test_an_open_folder_is_closed(tmp_path: Path) -> None:
    folder = tmp_path / "invites"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)  # noqa: S103 - a folder left open
    InviteStore(folder)
    assert mode(folder) == 0o700


# --- redeem -----------------------------------------------------------------------------------


def test_redeeming_writes_the_request_once(store: InviteStore, clock: Clock) -> None:
    invite, key = store.create("newcomer", 600), generate_signing_key()
    clock.now += 1000
    redemption = store.redeem(invite.id, invite.secret, x_of(key), key.kid, "Alice's Firefox")
    assert redemption == Redemption(
        invite.id, key.kid, x_of(key), "Alice's Firefox", T0 + 1000, "newcomer"
    )
    assert redemption.enrolled_label == "newcomer: Alice's Firefox"
    request = store.directory / f"{invite.id}.request.json"
    assert json.loads(request.read_text()) == {
        "x": x_of(key),
        "kid": key.kid,
        "label": "Alice's Firefox",
        "at_ms": T0 + 1000,
    }
    assert mode(request) == 0o600
    assert store.request(invite.id) == redemption
    status = store.status(invite.id)
    assert (status.state, status.kid) == ("requested", key.kid)
    other = generate_signing_key()
    with pytest.raises(InviteUsed, match="used already: each link enrols one key") as caught:
        store.redeem(invite.id, invite.secret, x_of(other), other.kid, "")
    assert caught.value.code == "used"
    assert store.request(invite.id) == redemption


def test_the_secret_must_match(store: InviteStore) -> None:
    invite, key = store.create("newcomer", 600), generate_signing_key()
    for secret in ("", invite.secret[:-1], invite.secret + "x", "A" * 43):
        with pytest.raises(UnknownInvite, match="with this secret") as caught:
            store.redeem(invite.id, secret, x_of(key), key.kid, "")
        assert caught.value.code == "unknown"
    assert store.request(invite.id) is None


@pytest.mark.parametrize("invite_id", ["nope-nope-nope", "../../etc/passwd", "a.b", "", "x" * 65])
def test_an_unknown_or_malformed_id_is_unknown(store: InviteStore, invite_id: str) -> None:
    key = generate_signing_key()
    with pytest.raises(UnknownInvite):
        store.redeem(invite_id, "secret", x_of(key), key.kid, "")
    with pytest.raises(UnknownInvite):
        store.status(invite_id)


def test_an_expired_invitation_cannot_be_redeemed(store: InviteStore, clock: Clock) -> None:
    invite, key = store.create("newcomer", 60), generate_signing_key()
    clock.now = invite.expires_at_ms
    with pytest.raises(InviteExpired, match="expired at 2023-11-14T22:14:20.000Z") as caught:
        store.redeem(invite.id, invite.secret, x_of(key), key.kid, "")
    assert caught.value.code == "expired"
    status = store.status(invite.id)
    assert status.state == "expired" and "expired at" in status.detail


def test_a_bad_key_is_refused_and_does_not_use_the_invitation_up(store: InviteStore) -> None:
    invite, key = store.create("newcomer", 600), generate_signing_key()
    cases = [
        (x_of(key) + "=", key.kid, "base64url without padding"),
        (x_of(key)[:-1], key.kid, "decodes to 31 bytes"),
        (b64url(bytes(32)), key.kid, "not a valid Ed25519 public key"),
        (x_of(key), "my-key", "not the RFC 7638 thumbprint"),
    ]
    for x, kid, reason in cases:
        with pytest.raises(BadEnrollmentKey, match=reason) as caught:
            store.redeem(invite.id, invite.secret, x, kid, "")
        assert caught.value.code == "bad_key"
    with pytest.raises(BadEnrollmentKey, match="control or format"):
        store.redeem(invite.id, invite.secret, x_of(key), key.kid, "a\x00b")
    assert store.status(invite.id).state == "pending"
    redemption = store.redeem(invite.id, invite.secret, x_of(key), key.kid, "")
    assert redemption.enrolled_label == "newcomer"


def test_two_browsers_racing_for_one_link_enrol_one_key(store: InviteStore) -> None:
    invite = store.create("newcomer", 600)
    keys = [generate_signing_key() for _ in range(8)]
    won: list[str] = []
    lost: list[str] = []
    start = threading.Barrier(len(keys))

    def redeem(key: SigningKey) -> None:
        start.wait()
        try:
            won.append(store.redeem(invite.id, invite.secret, x_of(key), key.kid, "").kid)
        except InviteUsed:
            lost.append(key.kid)

    threads = [threading.Thread(target=redeem, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(lost) == len(keys) - 1
    request = store.request(invite.id)
    assert request is not None and request.kid == won[0]


# --- the invite process -----------------------------------------------------------------------


def test_the_invite_process_enrols_the_redeemed_key_and_records_it(
    store: InviteStore, clock: Clock
) -> None:
    invite, key = store.create("newcomer", 600), generate_signing_key()
    enrolled: list[tuple[str, str, str]] = []
    said: list[str] = []
    polls = 0

    def sleep(_: float) -> None:
        nonlocal polls
        polls += 1
        clock.now += 500
        if polls == 3:  # the browser redeems the link meanwhile
            store.redeem(invite.id, invite.secret, x_of(key), key.kid, "laptop")

    def enroll(redemption: Redemption) -> str:
        enrolled.append((redemption.kid, redemption.x, redemption.enrolled_label))
        return f"enrolled operator key {redemption.kid!r}"

    status = await_enrolment(store, invite, enroll, sleep=sleep, say=said.append)
    assert enrolled == [(key.kid, x_of(key), "newcomer: laptop")]
    assert (status.state, status.kid) == ("enrolled", key.kid)
    assert status.detail == f"enrolled operator key {key.kid!r}"
    done = json.loads((store.directory / f"{invite.id}.done.json").read_text())
    assert done == {
        "kid": key.kid,
        "result": "enrolled",
        "detail": f"enrolled operator key {key.kid!r}",
        "at_ms": clock.now,
    }
    assert any("requested at" in line for line in said)
    assert store.status(invite.id).state == "enrolled"
    clock.now = invite.expires_at_ms + 1  # the outcome outlives the invitation
    assert store.status(invite.id).state == "enrolled"


def test_a_refused_enrolment_is_recorded_as_failed(store: InviteStore) -> None:
    invite, key = store.create("newcomer", 600), generate_signing_key()
    store.redeem(invite.id, invite.secret, x_of(key), key.kid, "")

    def enroll(redemption: Redemption) -> str:
        raise TrustplaneError("the workers refused the enrolment: root key retired")

    status = await_enrolment(store, invite, enroll, sleep=lambda _: None, say=lambda _: None)
    assert status.state == "failed"
    assert status.detail == "the workers refused the enrolment: root key retired"


def test_the_invite_process_checks_the_key_again(store: InviteStore) -> None:
    """A request file written by someone else than :meth:`InviteStore.redeem`."""
    invite, key = store.create("newcomer", 600), generate_signing_key()
    path = store.directory / f"{invite.id}.request.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"x": x_of(key), "kid": "not-its-thumbprint", "label": "", "at_ms": T0}, handle)

    def enroll(redemption: Redemption) -> str:
        raise AssertionError("must not be enrolled")

    status = await_enrolment(store, invite, enroll, sleep=lambda _: None, say=lambda _: None)
    assert status.state == "failed" and "thumbprint" in status.detail


def test_a_request_others_may_write_is_not_trusted(store: InviteStore) -> None:
    invite, key = store.create("newcomer", 600), generate_signing_key()
    store.redeem(invite.id, invite.secret, x_of(key), key.kid, "")
    os.chmod(store.directory / f"{invite.id}.request.json", 0o666)  # noqa: S103 - the attack

    def enroll(redemption: Redemption) -> str:
        raise AssertionError("must not be enrolled")

    status = await_enrolment(store, invite, enroll, sleep=lambda _: None, say=lambda _: None)
    assert status.state == "failed" and "not trusted" in status.detail


def test_the_invite_process_gives_up_at_expiry(store: InviteStore, clock: Clock) -> None:
    invite = store.create("newcomer", 2)

    def sleep(_: float) -> None:
        clock.now += 500

    with pytest.raises(InviteExpired, match="expired at .* without being redeemed") as caught:
        await_enrolment(store, invite, lambda r: "", sleep=sleep, say=lambda _: None)
    assert caught.value.hint is not None and "operators invite" in caught.value.hint
    assert store.status(invite.id).state == "expired"


def test_a_request_left_unenrolled_reads_expired(store: InviteStore, clock: Clock) -> None:
    invite, key = store.create("newcomer", 60), generate_signing_key()
    store.redeem(invite.id, invite.secret, x_of(key), key.kid, "")
    clock.now = invite.expires_at_ms
    status = store.status(invite.id)
    assert status.state == "expired" and "before its key was enrolled" in status.detail


# --- `trustplane operators invite`, without a broker -----------------------------------------


def test_the_invite_command_prints_the_link_and_enrols_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams import operator
    from streams.cli.main import cli
    from streams.config import Settings

    for name in list(os.environ):
        if name.startswith("TRUSTPLANE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TRUSTPLANE_STATE_DIR", str(tmp_path / "state"))
    settings = Settings.load(None)
    operator.ensure_local_keys(settings)
    store = InviteStore(settings.console_state_dir / "invites")
    key = generate_signing_key()
    calls: list[dict[str, Any]] = []

    class Result:
        reason = "enrolled operator key (stand-in)"

    def enroll_operator(given: Settings, **kwargs: Any) -> Result:
        calls.append(kwargs)
        return Result()

    monkeypatch.setattr(operator, "enroll_operator", enroll_operator)

    def browser() -> None:  # finds the invitation and redeems it, as the console would
        for _ in range(200):
            files = [p for p in store.directory.glob("*.json") if p.name.count(".") == 1]
            if files:
                break
            threading.Event().wait(0.02)
        invite_id = files[0].name.split(".")[0]
        fragment = (tmp_path / "out.txt").read_text().split("#", 1)[1].split()[0]
        assert fragment.startswith(f"{invite_id}.")
        store.redeem(invite_id, fragment.split(".", 1)[1], x_of(key), key.kid, "")

    import streams.enrollment as enrollment

    real_create = enrollment.InviteStore.create

    def create(self: InviteStore, label: str, ttl_s: int) -> Any:
        made = real_create(self, label, ttl_s)
        (tmp_path / "out.txt").write_text(made.link(settings.console_url))
        threading.Thread(target=browser, daemon=True).start()
        return made

    monkeypatch.setattr(enrollment.InviteStore, "create", create)
    result = CliRunner().invoke(cli, ["operators", "invite", "--label", "newcomer", "--ttl", "60"])
    assert result.exit_code == 0, result.output
    assert f"{settings.console_url}/enroll#" in result.output
    assert calls and calls[0]["kid"] == key.kid and calls[0]["label"] == "newcomer"
    assert calls[0]["key"].kid == operator.load_private_key(settings.resolved_operator_key_path).kid
