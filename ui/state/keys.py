"""The keyboard map (ux.md "keyboard", the Keyboard dialog's table) as a pure function.

``route_key`` turns one key press and what is on screen (``KeyContext``) into one ``KeyAction``;
the app performs it. No Dear PyGui: every binding is tested without a display.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class KeyContext(NamedTuple):
    """What the keyboard map depends on, read by the app before routing a key (a tuple: built on
    every key press, so it costs what a tuple costs)."""

    screen: str = "workspace"  # "firstrun" or "workspace"
    onboarding_open: bool = False  # the Welcome / Edit profile dialog is on screen
    mentions_open: bool = False  # the mention autocomplete list has items
    overlay_open: bool = False  # a dialog, menu or the lightbox is on screen
    switcher_items: bool = False  # the quick switcher holds a list to move through
    read_only: bool = False  # the active server takes no messages (offline, read-only)


@dataclass(frozen=True)
class SkipOnboarding:
    """Esc with the Welcome dialog open: close it as "Skip for now" / "Cancel" would."""


@dataclass(frozen=True)
class CloseAll:
    """Esc: close the mention list, every overlay and the emoji picker."""


@dataclass(frozen=True)
class OpenSwitcher:
    pass


@dataclass(frozen=True)
class OpenSearch:
    """Ctrl+F in the workspace: the message search panel."""


@dataclass(frozen=True)
class PasteImage:
    """Ctrl+V in the workspace: attach an image from the clipboard (text pastes as usual)."""


@dataclass(frozen=True)
class InsertMention:
    pass


@dataclass(frozen=True)
class MoveMention:
    step: int


@dataclass(frozen=True)
class MoveSwitch:
    step: int


@dataclass(frozen=True)
class ChooseSwitch:
    pass


@dataclass(frozen=True)
class MoveServer:
    step: int


@dataclass(frozen=True)
class MoveChannel:
    step: int
    unread_only: bool = False


@dataclass(frozen=True)
class TypeChar:
    """Type-to-focus: a printable key with no text field focused goes into the composer."""

    char: str


@dataclass(frozen=True)
class Ignore:
    """Not a binding: the key goes on to Dear PyGui (the result says whether it was consumed)."""

    consumed: bool = False


KeyAction = (
    SkipOnboarding
    | CloseAll
    | OpenSwitcher
    | OpenSearch
    | PasteImage
    | InsertMention
    | MoveMention
    | MoveSwitch
    | ChooseSwitch
    | MoveServer
    | MoveChannel
    | TypeChar
    | Ignore
)


def route_key(
    name: str,
    ctx: KeyContext,
    *,
    ctrl: bool = False,
    alt: bool = False,
    shift: bool = False,
    text_active: bool = False,
) -> KeyAction:
    """The action bound to key ``name`` (Dear PyGui's lower-case names: "escape", "k", "up",
    "enter", "space", "a"…) with these modifiers, given what is on screen."""
    if name == "escape":
        return SkipOnboarding() if ctx.onboarding_open else CloseAll()
    if ctrl and not alt and name == "k":
        return OpenSwitcher()
    if ctrl and not alt and name == "f" and ctx.screen == "workspace":
        return OpenSearch()
    if ctrl and not alt and name == "v" and ctx.screen == "workspace":
        return PasteImage()
    if name == "tab" and ctx.mentions_open:
        return InsertMention()
    if name in ("up", "down"):
        step = -1 if name == "up" else 1
        if ctx.mentions_open and not (ctrl or alt):
            return MoveMention(step)
        if ctx.overlay_open and ctx.switcher_items:
            return MoveSwitch(step)
        if ctrl and alt:
            return MoveServer(step)
        if alt and shift:
            return MoveChannel(step, unread_only=True)
        if alt:
            return MoveChannel(step)
        return Ignore()
    if name == "enter" and ctx.overlay_open and ctx.switcher_items:
        return ChooseSwitch()
    # type-to-focus: a printable key with no modifier while no text field has focus
    if not (ctrl or alt) and not text_active and (len(name) == 1 or name == "space"):
        if ctx.overlay_open or ctx.read_only:
            return Ignore()
        return TypeChar(" " if name == "space" else (name.upper() if shift else name))
    return Ignore()
