"""Under CI=true a missing Kafka, Prometheus or data set fails the test; elsewhere it skips."""

from __future__ import annotations

import pytest

from tests.integration.services import unavailable


@pytest.mark.parametrize("ci", ["true", "1", "yes", "TRUE"])
def test_under_ci_a_missing_service_fails_the_test_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="kcat not found"):
        unavailable("kcat not found")


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_outside_ci_a_missing_service_skips_the_test_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="kcat not found"):
        unavailable("kcat not found")
