"""The agent keeps its token through an outage only while the expiry it recorded is ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trustauthority.agent.host import _in_future


def test_a_recorded_expiry_ahead_keeps_and_one_behind_drops() -> None:
    now = datetime.now(UTC)
    assert _in_future((now + timedelta(minutes=5)).isoformat())
    assert not _in_future((now - timedelta(seconds=1)).isoformat())


@pytest.mark.parametrize("recorded", ["", "soon", "2999-01-01T00:00:00", "2999-13-01T00:00:00Z"])
def test_an_unreadable_or_zoneless_expiry_counts_as_passed(recorded: str) -> None:
    assert not _in_future(recorded)
