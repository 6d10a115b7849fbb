"""ui/renderer.py: which look a renderer gets (issue 15), without a window."""

from __future__ import annotations

import pytest

from ui.renderer import flat_panes_choice, flat_panes_for, is_software


@pytest.mark.parametrize(
    ("name", "software"),
    [
        ("llvmpipe (LLVM 15.0.6, 256 bits)", True),
        ("softpipe", True),
        ("Software Rasterizer", True),
        ("Google SwiftShader", True),
        ("Mesa Intel(R) UHD Graphics 620 (KBL GT2)", False),
        ("NVIDIA GeForce RTX 3060/PCIe/SSE2", False),
        ("AMD Radeon RX 6600 (radeonsi, navi23, LLVM 15.0.6, DRM 3.49)", False),
        ("", False),
        (None, False),
    ],
)
def test_software_renderers_are_recognised(name: str | None, software: bool) -> None:
    assert is_software(name) is software


@pytest.mark.parametrize(
    ("value", "choice"),
    [("1", True), ("true", True), ("ON", True), ("0", False), ("no", False), ("", None), ("auto", None)],
)
def test_the_members_choice(value: str, choice: bool | None) -> None:
    assert flat_panes_choice({"OPENCHAT_UI_FLAT_PANES": value}) is choice


def test_the_look_follows_the_renderer_unless_chosen() -> None:
    llvmpipe, gpu = "llvmpipe (LLVM 15.0.6, 256 bits)", "NVIDIA GeForce RTX 3060/PCIe/SSE2"
    assert flat_panes_for(llvmpipe, {}) is True
    assert flat_panes_for(gpu, {}) is False
    assert flat_panes_for(None, {}) is False  # no OpenGL context to ask (Windows, macOS)
    assert flat_panes_for(llvmpipe, {"OPENCHAT_UI_FLAT_PANES": "0"}) is False
    assert flat_panes_for(gpu, {"OPENCHAT_UI_FLAT_PANES": "1"}) is True
