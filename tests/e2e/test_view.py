"""The desktop view rendered under Xvfb from Snapshot/event objects (no stack needed)."""

from __future__ import annotations

from typing import Any

from tests.e2e import fakes
from tests.e2e.conftest import Shooter, label_of, render, text_of


def workspace(ui_factory: Any, **kw: Any) -> Any:
    app = ui_factory(**kw)
    app.screen = "workspace"
    app.member = "vinnie"
    app.model.display_name = "Vinnie"
    app.model.apply_snapshot(fakes.snapshot())
    app.model.set_stack_online(True)
    app.view.layout(1480, 920)
    return app


def test_workspace_renders(ui_factory: Any, shooter: Shooter) -> None:
    app = workspace(ui_factory)
    shooter.shot(app, "workspace")
    assert label_of("oc_chip") == "Live"
    assert text_of("oc_build_label") == "build main · a5ab8f8885bc"
