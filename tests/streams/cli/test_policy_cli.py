"""``trustplane policy validate | test | bundle`` (the Typer sub-app, without Kafka)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from processors.layers.policy import PolicyBundle
from streams.cli.policy import policy_app

ROOT = Path(__file__).resolve().parents[3]
BUNDLE = ROOT / "policies" / "bundle"
CASES = ROOT / "policies" / "bundle.cases.json"
AT = "2026-11-10T12:00:00Z"

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(policy_app, list(args))
    return result.exit_code, result.output


def test_validate_prints_version_digest_count_and_expiry() -> None:
    code, output = invoke("validate", str(BUNDLE), "--at", AT)
    assert code == 0, output
    digest = PolicyBundle.from_directory(BUNDLE).digest
    assert "valid" in output and "2026.11.1" in output and digest in output
    assert "24 (11 permit, 13 forbid)" in output
    assert "2030-01-01T00:00:00Z" in output


def test_validate_refuses_bad_cedar_with_cedars_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(BUNDLE, broken)
    with (broken / "policies.cedar").open("a") as f:
        f.write('\n@id("oops")\npermit (principal, action resource);\n')
    code, output = invoke("validate", str(broken), "--at", AT)
    assert code == 1
    assert "invalid" in output and "unexpected token `resource`" in output
    assert "line 201" in output


def test_validate_refuses_expired_and_unknown_paths(tmp_path: Path) -> None:
    code, output = invoke("validate", str(BUNDLE), "--at", "2031-01-01T00:00:00Z")
    assert code == 1 and "expired at 2030-01-01T00:00:00Z" in output
    code, output = invoke("validate", str(tmp_path / "missing"))
    assert code == 2 and "does not exist" in output
    code, output = invoke("validate", str(BUNDLE), "--at", "tomorrow")
    assert code == 2 and "not an ISO 8601 time" in output


def test_test_runs_the_example_table() -> None:
    code, output = invoke("test", str(BUNDLE), str(CASES), "--at", AT)
    assert code == 0, output
    assert output.count("PASS") == len(json.loads(CASES.read_text())["cases"])
    assert "FAIL" not in output
    assert "payments.limit-10k" in output
    assert output.strip().endswith("46 passed, 0 failed")


def test_test_reports_failures_and_exits_non_zero(tmp_path: Path) -> None:
    cases = tmp_path / "cases.json"
    cases.write_text(
        json.dumps(
            {
                "defaults": {"at": AT, "environment": "prod", "runtime_id": "rt-1"},
                "cases": [
                    {
                        "name": "reads are fine",
                        "agent": "audit-1",
                        "roles": ["readonly"],
                        "action": "invoices.read",
                        "resource": "invoice:1",
                        "expect": "allow",
                        "determining": ["readonly.may-read"],
                    },
                    {
                        "name": "a wrong expectation",
                        "agent": "pay-1",
                        "roles": ["payments-agent"],
                        "action": "payments.transfer",
                        "resource": "acct:ACME-1",
                        "parameters": {"amount": 20000.0, "currency": "EUR"},
                        "expect": "allow",
                    },
                ],
            }
        )
    )
    code, output = invoke("test", str(BUNDLE), str(cases), "--at", AT)
    assert code == 1
    assert "PASS" in output and "FAIL" in output
    assert "expected allow, got deny" in output and "payments.limit-10k" in output
    assert "1 passed, 1 failed" in output
    code, output = invoke("test", str(BUNDLE), str(cases), "--at", AT, "--failures-only")
    assert "reads are fine" not in output and "a wrong expectation" in output


def test_test_with_a_malformed_table(tmp_path: Path) -> None:
    cases = tmp_path / "cases.json"
    cases.write_text('{"cases": [{"agent": "a", "expected": "allow"}]}')
    code, output = invoke("test", str(BUNDLE), str(cases), "--at", AT)
    assert code == 2 and "unknown fields: expected" in output


def test_bundle_writes_the_document_form(tmp_path: Path) -> None:
    target = tmp_path / "bundle.json"
    code, output = invoke("bundle", str(BUNDLE), "-o", str(target), "--at", AT)
    assert code == 0, output
    doc = json.loads(target.read_text())
    assert set(doc) == {"manifest", "policies", "schema"}
    digest = PolicyBundle.from_directory(BUNDLE).digest
    assert PolicyBundle.from_document(doc).digest == digest
    assert digest in output
    code, output = invoke("validate", str(target), "--at", AT)
    assert code == 0 and digest in output
    code, output = invoke("test", str(target), str(CASES), "--at", AT)
    assert code == 0 and "46 passed, 0 failed" in output


def test_bundle_to_stdout_and_refusals(tmp_path: Path) -> None:
    result = runner.invoke(policy_app, ["bundle", str(BUNDLE), "-o", "-", "--at", AT])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["manifest"]["version"] == "2026.11.1"
    broken = tmp_path / "broken"
    shutil.copytree(BUNDLE, broken)
    (broken / "policies.cedar").write_text("permit (principal, action, resource);\n")
    code, output = invoke("bundle", str(broken), "-o", str(tmp_path / "x.json"), "--at", AT)
    assert code == 1 and "no @id annotation" in output
    assert not (tmp_path / "x.json").exists()
    code, output = invoke("bundle", str(CASES), "-o", str(tmp_path / "x.json"))
    assert code == 2 and "is not a directory" in output
