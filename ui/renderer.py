"""Which OpenGL renderer draws the window, and the look that follows from it (issue 15).

A software renderer (Mesa's llvmpipe on a machine without a GPU driver, or under Xvfb) pays CPU
for every filled pixel: at 1480x920 the panes' own background fills are about half of the ~9 ms
it spends per frame (bench/RESULTS.md, issue 15). On such a renderer the desktop draws its panes
flat — the window's background, 1 px dividers at their edges — unless the member chose a look
(``OPENCHAT_UI_FLAT_PANES=1`` flat everywhere, ``=0`` the filled panes everywhere). A GPU fills
the panes for free, so there the filled look stays.

Pure except for ``gl_renderer``, which asks the current OpenGL context (main thread, after the
viewport is shown; Dear PyGui's Linux backend is GLFW + OpenGL). On Windows (DirectX) and macOS
(Metal) there is no OpenGL context to ask: the answer is ``None`` and the look stays filled.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Mapping

log = logging.getLogger("openchat.ui")

ENV = "OPENCHAT_UI_FLAT_PANES"
GL_RENDERER = 0x1F01
# substrings of GL_RENDERER that name a renderer drawing on the CPU
SOFTWARE = ("llvmpipe", "softpipe", "swrast", "software rasterizer", "swiftshader", "lavapipe")


def flat_panes_choice(env: Mapping[str, str] | None = None) -> bool | None:
    """The member's choice: ``True`` flat, ``False`` filled, ``None`` by the renderer (the default)."""
    value = (os.environ if env is None else env).get(ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def is_software(renderer: str | None) -> bool:
    """Whether ``renderer`` (a GL_RENDERER string) draws on the CPU; unknown counts as a GPU."""
    name = (renderer or "").lower()
    return any(s in name for s in SOFTWARE)


def flat_panes_for(renderer: str | None, env: Mapping[str, str] | None = None) -> bool:
    """The look to draw: the member's choice, else flat on a software renderer."""
    choice = flat_panes_choice(env)
    return is_software(renderer) if choice is None else choice


def gl_renderer() -> str | None:
    """GL_RENDERER of the current OpenGL context, or ``None`` (no libGL, no context: not Linux)."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("GL") or "libGL.so.1")
        get = lib.glGetString
    except (OSError, AttributeError):
        return None
    get.restype = ctypes.c_char_p
    get.argtypes = [ctypes.c_uint]
    raw = get(GL_RENDERER)
    if not raw:
        return None
    name = bytes(raw).decode("utf-8", "replace")[:200]
    log.info("OpenGL renderer: %s (%s panes by default)", name, "flat" if is_software(name) else "filled")
    return name
