"""Images from the system clipboard (ux.md 3.8, features 5.6).

Dear PyGui's clipboard carries text only, so an image is read with the platform's clipboard tool:
``wl-paste`` under Wayland, ``xclip`` under X11 (Debian packages ``wl-clipboard`` and ``xclip``).
PNG, JPEG and GIF are attached as they are; any other image type the clipboard offers (BMP, WEBP,
TIFF…) is converted to PNG first, since the public backend accepts only those three (features
5.6). Bounded: at most 4 times ``max_bytes`` read (the composer then applies the
server's limit), a 2 s timeout per call.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess

KEEP = ("image/png", "image/jpeg", "image/gif")
TIMEOUT_S = 2.0


class ClipboardError(Exception):
    """The clipboard holds an image that cannot be used: ``too_large`` (more than 4 times the upload
    limit, not even read), or the text to show."""


def _tool() -> list[str] | None:
    if os.environ.get("WAYLAND_DISPLAY") and shutil.which("wl-paste"):
        return ["wl-paste"]
    if os.environ.get("DISPLAY") and shutil.which("xclip"):
        return ["xclip", "-selection", "clipboard", "-o"]
    return None


def _run(args: list[str], max_bytes: int) -> bytes | None:
    try:
        proc = subprocess.run(args, capture_output=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    if len(proc.stdout) > max_bytes:
        raise ClipboardError("too_large")
    return proc.stdout


def image_types() -> list[str]:
    """The image MIME types the clipboard offers now (empty: none, or no clipboard tool)."""
    tool = _tool()
    if tool is None:
        return []
    if tool[0] == "wl-paste":
        out = _run(["wl-paste", "--list-types"], 64 * 1024)
    else:
        out = _run([*tool[:-1], "-t", "TARGETS", "-o"], 64 * 1024)
    if not out:
        return []
    types = [t.strip() for t in out.decode("utf-8", "replace").splitlines()]
    return [t for t in types if t.startswith("image/")]


def read_image(max_bytes: int) -> tuple[str, bytes] | None:
    """``(content_type, data)`` of the clipboard's image, or None when it holds none."""
    types = image_types()
    if not types:
        return None
    tool = _tool()
    assert tool is not None
    chosen = next((t for t in KEEP if t in types), types[0])
    if tool[0] == "wl-paste":
        data = _run(["wl-paste", "--no-newline", "--type", chosen], max_bytes * 4)
    else:
        data = _run([*tool[:-1], "-t", chosen, "-o"], max_bytes * 4)
    if not data:
        return None
    if chosen in KEEP:
        return chosen, data  # the composer checks the size against the server's limit
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            buf = io.BytesIO()
            img.save(buf, format="PNG")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ClipboardError("Paste or choose an image file.") from exc
    return "image/png", buf.getvalue()
