"""Fonts and the dark theme of ux.md, loaded from installed packages (never committed).

Font files come from Debian packages (``fonts-noto-core`` for Noto Sans regular/bold/italic and
Noto Sans Mono, ``fonts-symbola`` for monochrome emoji and symbols, ``fonts-dejavu-core`` as the
fallback), found through known paths or ``fc-match``. Dear PyGui cannot merge fonts, so text
runs made of emoji are drawn with the emoji font (see ``split_emoji``).

Fonts are rasterised at ``size * scale`` so text stays crisp at 200 %.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

CANDIDATES: dict[str, list[str]] = {
    "regular": [
        "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    ],
    "bold": [
        "/usr/share/fonts/truetype/noto/NotoSans-Bold.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    ],
    "italic": [
        "/usr/share/fonts/truetype/noto/NotoSans-Italic.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Oblique.ttf",
    ],
    "mono": [
        "/usr/share/fonts/truetype/noto/NotoSansMono-Regular.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    ],
    "cjk": [
        "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
        "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    ],
    "hangul": [  # Droid Sans Fallback has Han and kana but only 3 of the 11,172 Hangul syllables
        "/usr/share/fonts/truetype/nanum/NanumGothic.ttf",
        "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    ],
    "emoji": [
        "/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf",
        "/usr/share/fonts/truetype/noto/NotoSansSymbols2-Regular.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    ],
}
FC_PATTERNS = {
    "regular": "sans-serif",
    "bold": "sans-serif:bold",
    "italic": "sans-serif:italic",
    "mono": "monospace",
    "emoji": "Symbola",
    "cjk": "sans-serif:lang=zh-cn",
    "hangul": "sans-serif:lang=ko",
}

# Unicode ranges beyond Dear PyGui's default (Basic Latin + Latin-1).
TEXT_RANGES = [
    (0x0100, 0x024F),  # Latin Extended-A/B
    (0x0370, 0x03FF),  # Greek
    (0x0400, 0x052F),  # Cyrillic
    (0x2000, 0x206F),  # General Punctuation
    (0x20A0, 0x20CF),  # Currency
    (0x2190, 0x21FF),  # Arrows
    (0x2500, 0x25FF),  # Box drawing, block elements, geometric shapes
    (0x2700, 0x27BF),  # Dingbats (✓ ✕)
]
EMOJI_RANGES = [
    (0x2190, 0x21FF),
    (0x2300, 0x23FF),
    (0x2600, 0x27BF),
    (0x2B00, 0x2BFF),
    (0x1F300, 0x1F5FF),
    (0x1F600, 0x1F64F),
    (0x1F680, 0x1F6FF),
    (0x1F900, 0x1F9FF),
]


def is_emoji(ch: str) -> bool:
    cp = ord(ch)
    return cp >= 0x1F000 or 0x2600 <= cp <= 0x27BF or 0x2300 <= cp <= 0x23FF or 0x2B00 <= cp <= 0x2BFF


def is_hangul(ch: str) -> bool:
    cp = ord(ch)
    return (
        0xAC00 <= cp <= 0xD7AF or 0x1100 <= cp <= 0x11FF or 0x3130 <= cp <= 0x318F or 0xA960 <= cp <= 0xA97F
    )


def is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x2E80 <= cp <= 0x9FFF or 0xAC00 <= cp <= 0xD7AF or 0xF900 <= cp <= 0xFAFF or 0xFF00 <= cp <= 0xFFEF
    )


def script_of(ch: str) -> str:
    """Which font draws ``ch``: "emoji", "hangul", "cjk" or "" (the text font)."""
    if is_emoji(ch):
        return "emoji"
    if is_hangul(ch):
        return "hangul"
    return "cjk" if is_cjk(ch) else ""


def split_emoji(text: str) -> list[tuple[str, str]]:
    """Runs of ``(text, script)`` (see ``script_of``); variation selectors and ZWJ are dropped
    (no colour fonts)."""
    runs: list[tuple[str, str]] = []
    for ch in text:
        if ch in "\ufe0f\ufe0e\u200d":
            continue
        e = script_of(ch)
        if runs and runs[-1][1] == e:
            runs[-1] = (runs[-1][0] + ch, e)
        else:
            runs.append((ch, e))
    return runs


_FALLBACK_RE = re.compile(
    "[\u1100-\u11ff\u2300-\u23ff\u2600-\u27bf\u2b00-\u2bff\u2e80-\u9fff\ua960-\ua97f\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U0001f000-\U0010ffff]"
)


def has_emoji(text: str) -> bool:
    """True when some character needs a fallback font (emoji/symbols or CJK): ``script_of``."""
    return _FALLBACK_RE.search(text) is not None


@cache
def font_file(role: str) -> str | None:
    for path in CANDIDATES.get(role, []):
        if Path(path).is_file():
            return path
    if shutil.which("fc-match"):
        try:
            out = subprocess.run(
                ["fc-match", "-f", "%{file}", FC_PATTERNS.get(role, "sans-serif")],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and Path(out).is_file():
            return out
    return None


def missing_fonts() -> list[str]:
    return [role for role in CANDIDATES if font_file(role) is None]


@dataclass
class FontSet:
    regular: int | str = 0
    bold: int | str = 0
    italic: int | str = 0
    mono: int | str = 0
    emoji: int | str = 0
    cjk: int | str = 0
    hangul: int | str = 0
    small: int | str = 0
    heading: int | str = 0
    size: float = 16.0


_LOADED: dict[tuple[int, float], FontSet] = {}


def load_fonts(dpg: Any, size: int, scale: float) -> FontSet:
    """Register fonts at ``size * scale`` pixels (once per process and size); returns their ids
    (0 = DPG's default)."""
    cached = _LOADED.get((size, scale))
    if cached is not None and dpg.does_item_exist(cached.regular):
        return cached
    px = max(8.0, round(size * scale))
    fs = FontSet(size=px)
    _LOADED[(size, scale)] = fs
    with dpg.font_registry():
        for role, px_role in (
            ("regular", px),
            ("bold", px),
            ("italic", px),
            ("mono", px * 0.92),
            ("emoji", px),
            ("small", px * 0.8),
            ("heading", px * 1.25),
        ):
            file = font_file("regular" if role == "small" else "bold" if role == "heading" else role)
            if file is None:
                continue
            # Dear PyGui 2.3 (Dear ImGui 1.92) loads glyphs on demand: no range lists needed.
            font = dpg.add_font(file, px_role)
            setattr(fs, role, font)
    return fs


LAZY_ROLES = ("cjk", "hangul")  # large files (4 to 5 MB each in memory): loaded when first needed
_MISSING: set[str] = set()


def script_font(dpg: Any, fs: FontSet, role: str) -> int | str:
    """The font of a fallback script, registered on first use (0: none installed)."""
    font: int | str = getattr(fs, role, 0)
    if font or role in _MISSING or role not in LAZY_ROLES:
        return font
    file = font_file(role)
    if file is None:
        _MISSING.add(role)
        return 0
    with dpg.font_registry():
        font = dpg.add_font(file, fs.size)
    setattr(fs, role, font)
    return font


# -- theme ---------------------------------------------------------------------------------------
BG = (16, 20, 28)  # #10141c
PANEL = (22, 27, 37)
PANEL_2 = (27, 33, 45)
RAIL = (11, 14, 20)
INPUT = (33, 40, 54)
TEXT = (230, 233, 240)
MUTED = (142, 150, 166)
BRAND = (88, 101, 242)
GREEN = (59, 165, 93)
AMBER = (250, 166, 26)
RED = (237, 66, 69)
LINK = (0, 168, 252)
HIGHLIGHT = (64, 52, 28)
DIVIDER = (40, 46, 60)  # the panes' 1 px edges with OPENCHAT_UI_FLAT_PANES


def make_theme(dpg: Any, scale: float) -> int | str:
    with dpg.theme() as theme, dpg.theme_component(dpg.mvAll):
        c = dpg.add_theme_color
        s = dpg.add_theme_style
        c(dpg.mvThemeCol_WindowBg, BG)
        # Child windows are transparent: the viewport is cleared to BG and only panes with their own
        # colour paint a background. Every filled pixel costs under a software renderer (llvmpipe:
        # one full-window quad ~5 ms at 1480x920), so nothing is painted twice.
        c(dpg.mvThemeCol_ChildBg, (0, 0, 0, 0))
        c(dpg.mvThemeCol_PopupBg, PANEL_2)
        c(dpg.mvThemeCol_Border, (40, 46, 60))
        c(dpg.mvThemeCol_Text, TEXT)
        c(dpg.mvThemeCol_TextDisabled, MUTED)
        c(dpg.mvThemeCol_FrameBg, INPUT)
        c(dpg.mvThemeCol_FrameBgHovered, (42, 50, 66))
        c(dpg.mvThemeCol_FrameBgActive, (48, 57, 75))
        c(dpg.mvThemeCol_Button, (44, 51, 66))
        c(dpg.mvThemeCol_ButtonHovered, (58, 67, 86))
        c(dpg.mvThemeCol_ButtonActive, BRAND)
        c(dpg.mvThemeCol_Header, (44, 51, 66))
        c(dpg.mvThemeCol_HeaderHovered, (50, 58, 76))
        c(dpg.mvThemeCol_HeaderActive, (60, 70, 92))
        c(dpg.mvThemeCol_ScrollbarBg, (0, 0, 0, 0))
        c(dpg.mvThemeCol_ScrollbarGrab, (50, 57, 72))
        c(dpg.mvThemeCol_Separator, (40, 46, 60))
        c(dpg.mvThemeCol_ModalWindowDimBg, (0, 0, 0, 150))
        c(dpg.mvThemeCol_TitleBgActive, PANEL_2)
        c(dpg.mvThemeCol_TitleBg, PANEL)
        c(dpg.mvThemeCol_Tab, PANEL_2)
        c(dpg.mvThemeCol_TabActive, BRAND)
        c(dpg.mvThemeCol_TabHovered, (70, 80, 190))
        c(dpg.mvThemeCol_CheckMark, BRAND)
        c(dpg.mvThemeCol_SliderGrab, BRAND)
        s(dpg.mvStyleVar_WindowRounding, 12 * scale)
        s(dpg.mvStyleVar_ChildRounding, 8 * scale)
        s(dpg.mvStyleVar_FrameRounding, 6 * scale)
        s(dpg.mvStyleVar_PopupRounding, 8 * scale)
        s(dpg.mvStyleVar_GrabRounding, 6 * scale)
        s(dpg.mvStyleVar_FramePadding, 8 * scale, 5 * scale)
        s(dpg.mvStyleVar_ItemSpacing, 8 * scale, 5 * scale)
        s(dpg.mvStyleVar_WindowPadding, 8 * scale, 8 * scale)
        s(dpg.mvStyleVar_ScrollbarSize, 10 * scale)
        s(dpg.mvStyleVar_WindowBorderSize, 0)
        s(dpg.mvStyleVar_ChildBorderSize, 0)
    return theme  # type: ignore[no-any-return]


def color_theme(
    dpg: Any,
    *,
    text: tuple[int, ...] | None = None,
    button: tuple[int, ...] | None = None,
    bg: tuple[int, ...] | None = None,
    scale: float = 1.0,
    flat: bool = False,
    square: bool = False,
) -> int | str:
    """``square``: a pane's background drawn without rounded corners (for the panes that fill the
    window edge to edge): a rounded rectangle is a fan of long thin triangles, which the software
    renderer (llvmpipe) fills ~1.5 ms per frame slower over the app's panes than plain rectangles."""
    with dpg.theme() as theme, dpg.theme_component(dpg.mvAll):
        if square:
            dpg.add_theme_style(dpg.mvStyleVar_ChildRounding, 0)
        if text is not None:
            dpg.add_theme_color(dpg.mvThemeCol_Text, text)
        if button is not None:
            dpg.add_theme_color(dpg.mvThemeCol_Button, button)
            dpg.add_theme_color(dpg.mvThemeCol_ButtonHovered, tuple(min(255, v + 18) for v in button[:3]))
            dpg.add_theme_color(dpg.mvThemeCol_ButtonActive, tuple(min(255, v + 30) for v in button[:3]))
        if bg is not None:
            dpg.add_theme_color(dpg.mvThemeCol_ChildBg, bg)
            dpg.add_theme_color(dpg.mvThemeCol_WindowBg, bg)
        if flat:
            dpg.add_theme_style(dpg.mvStyleVar_FramePadding, 0, 5 * scale)
            dpg.add_theme_style(dpg.mvStyleVar_ItemSpacing, 0, 0)
            dpg.add_theme_color(dpg.mvThemeCol_Button, (0, 0, 0, 0))
            dpg.add_theme_color(dpg.mvThemeCol_ButtonHovered, (255, 255, 255, 20))
            dpg.add_theme_color(dpg.mvThemeCol_ButtonActive, (255, 255, 255, 40))
    return theme  # type: ignore[no-any-return]


def uid_color(uid: str) -> tuple[int, int, int]:
    """An avatar colour hashed from the uid (HSL hue)."""
    import colorsys

    h = 0
    for ch in uid:
        h = (h * 31 + ord(ch)) & 0xFFFFFFFF
    r, g, b = colorsys.hls_to_rgb((h % 360) / 360.0, 0.52, 0.55)
    return (int(r * 255), int(g * 255), int(b * 255))
