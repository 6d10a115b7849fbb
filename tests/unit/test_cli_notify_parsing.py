"""Parsing of ``openchat notify mute --for`` and ``openchat notify quiet`` (issue 18)."""

from __future__ import annotations

import click
import pytest

from services.cli.notify import parse_duration, parse_quiet
from services.core.contracts.notify import MUTE_DURATIONS_S


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15m", 900), ("1h", 3600), ("8h", 28800), ("24h", 86400), ("90s", 90), ("2d", 172800), ("10 min", 600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_the_menu_choices_are_expressible() -> None:
    assert [parse_duration(t) for t in ("15m", "1h", "8h", "24h")] == list(MUTE_DURATIONS_S)


@pytest.mark.parametrize("text", ["forever", "FOREVER", "until-unmuted"])
def test_forever(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize("text", ["", "1", "h", "-1h", "1y", "0s", "400d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_duration(text)


def test_quiet_windows() -> None:
    assert parse_quiet("22:00-07:00") == (True, "22:00", "07:00")
    assert parse_quiet("off")[0] is False
    for bad in ("22-07", "24:00-07:00", "22:60-07:00", "22:00"):
        with pytest.raises(click.BadParameter):
            parse_quiet(bad)
