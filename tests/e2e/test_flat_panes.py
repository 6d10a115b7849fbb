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


def test_a_software_renderer_gets_the_flat_panes(
    ui_factory: Any, shooter: Shooter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the desktop does once its window is shown (run_app): it asks the window's OpenGL
    context which renderer draws it; on Mesa's llvmpipe (this Xvfb) the panes go flat, on a GPU
    they stay filled, and the member's OPENCHAT_UI_FLAT_PANES=0 keeps them filled anyway."""
    from ui.renderer import gl_renderer

    monkeypatch.delenv("OPENCHAT_UI_FLAT_PANES", raising=False)
    app = workspace(ui_factory)
    assert app.view.flat_panes is False  # filled until the renderer is known
    name = gl_renderer()
    assert name is not None and "llvmpipe" in name.lower(), name
    app.view.use_renderer(name)
    assert app.view.flat_panes is True
    shooter.shot(app, "llvmpipe", changed=False)
    img = shooter.capture()
    assert pixel(img, 1400, 600) == pixel(img, 200, 600) == fonts.BG
    assert pixel(img, MEMBERS_X, 600) == fonts.DIVIDER

    app.view.use_renderer("NVIDIA GeForce RTX 3060/PCIe/SSE2")  # a GPU: the panes fill again
    assert app.view.flat_panes is False
    shooter.shot(app, "gpu", changed=False)  # the pane colours are close to the background
    img = shooter.capture()
    assert pixel(img, 1400, 600) == pixel(img, 200, 600) == fonts.PANEL
    assert pixel(img, 700, 20) == fonts.RAIL

    monkeypatch.setenv("OPENCHAT_UI_FLAT_PANES", "0")  # the member's choice beats the renderer
    app.view.use_renderer(name)
    assert app.view.flat_panes is False
