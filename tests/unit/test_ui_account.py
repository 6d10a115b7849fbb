"""The desktop's account helpers (ui.account): avatar files, display names, disclosure text."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from services.core.contracts.chat import MAX_AVATAR_BYTES
from ui.account import check_display_name, disclosure_sentence, other_mode, read_avatar


def _image(path: Path, fmt: str, size: tuple[int, int] = (64, 64)) -> Path:
    Image.new("RGB", size, (200, 30, 90)).save(path, format=fmt)
    return path


@pytest.mark.parametrize(
    ("fmt", "ctype"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_avatar_formats_taken(tmp_path: Path, fmt: str, ctype: str) -> None:
    path = _image(tmp_path / f"a.{fmt.lower()}", fmt)
    up = read_avatar(path)
    assert up.content_type == ctype and up.file_name == path.name
    assert base64.b64decode(up.data_b64) == path.read_bytes()


def test_avatar_refusals(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Use PNG, JPG, or WEBP for your avatar\."):
        read_avatar(_image(tmp_path / "a.gif", "GIF"))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"Use PNG, JPG, or WEBP for your avatar\."):
        read_avatar(tmp_path / "notes.png")
    with pytest.raises(ValueError, match="Cannot read"):
        read_avatar(tmp_path / "missing.png")
    big = tmp_path / "big.png"
    buf = io.BytesIO()
    Image.frombytes("RGB", (1024, 1024), bytes(range(256)) * (1024 * 1024 * 3 // 256)).save(buf, "PNG")
    big.write_bytes(buf.getvalue() + b"\0" * MAX_AVATAR_BYTES)
    with pytest.raises(ValueError, match=r"Avatar must be 2 MB or smaller\."):
        read_avatar(big)


def test_display_name_bounds_and_disclosure() -> None:
    assert check_display_name("Al") is None and check_display_name("  Alice  ") is None
    assert check_display_name("A") is not None and check_display_name("x" * 33) is not None
    assert check_display_name("   ") == "Username is required."
    assert disclosure_sentence("server_scoped") == "This server sees only a server-scoped UID and proof."
    assert disclosure_sentence("global") == "This server sees only a global UID and proof."
    assert other_mode("global") == "server_scoped" and other_mode("server_scoped") == "global"
