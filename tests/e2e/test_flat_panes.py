"""OPENCHAT_UI_FLAT_PANES (issue 15): the panes take the window's background and 1 px dividers
mark their edges, instead of each pane painting its own colour (which costs a software renderer
~4.5 ms of CPU per frame at 1480x920, bench/RESULTS.md). The default look keeps the pane colours."""

from __future__ import annotations

from typing import Any

import pytest

from testkit import fakes
from tests.e2e.conftest import Shooter
from ui import fonts

MEMBERS_X = 1480 - 248  # the members pane's left edge at the default width (ux.md: 248 px)


def workspace(ui_factory: Any) -> Any:
    app = ui_factory()
    app.screen = "workspace"
    app.model.apply_snapshot(fakes.snapshot())
    app.model.set_stack_online(True)
    app.view.layout(1480, 920)
    return app


def pixel(img: Any, x: int, y: int) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in img[y, x, :3])
    return (r, g, b)


@pytest.mark.parametrize("flat", [False, True])
def test_panes_fill_or_dividers(
    ui_factory: Any, shooter: Shooter, monkeypatch: pytest.MonkeyPatch, flat: bool
) -> None:
    if flat:
        monkeypatch.setenv("OPENCHAT_UI_FLAT_PANES", "1")
    else:
        monkeypatch.delenv("OPENCHAT_UI_FLAT_PANES", raising=False)
    app = workspace(ui_factory)
    assert app.view.flat_panes is flat
    shooter.shot(app, "flat" if flat else "default")
    img = shooter.capture()
    # an empty spot of the members pane, of the channel pane and of the taskbar
    members, channels, taskbar = pixel(img, 1400, 600), pixel(img, 200, 600), pixel(img, 700, 20)
    chat = pixel(img, 900, 200)
    assert chat == fonts.BG
    if flat:
        assert members == channels == taskbar == fonts.BG
        assert pixel(img, MEMBERS_X, 600) == fonts.DIVIDER  # the members pane's edge
        assert pixel(img, 700, 40) == fonts.DIVIDER  # under the taskbar
        assert pixel(img, MEMBERS_X + 2, 600) == fonts.BG
    else:
        assert members == channels == fonts.PANEL
        assert taskbar == fonts.RAIL
        assert pixel(img, MEMBERS_X, 600) == fonts.PANEL
