"""The view's part of the desktop's preferences (``ui.storage.Prefs``, ``prefs.json``): what is
remembered between runs — the server and channel on screen, filters, collapsed categories per
``(server, group)``, dismissed banners, the members pane, appearance. Pure mapping, no I/O."""

from __future__ import annotations

from ui.state.model import ViewModel
from ui.state.settings import Settings
from ui.storage import Prefs


def restore(model: ViewModel, p: Prefs) -> None:
    """The remembered view into a fresh model (before the snapshot arrives)."""
    model.active_server = p.active_server
    model.active_channel = dict(p.channels)
    model.filters = dict(p.filters)
    model.collapsed = {(a, b) for a, b in p.collapsed}
    model.dismissed = set(p.dismissed)
    model.members_open = p.members_open


def remember(model: ViewModel, settings: Settings, p: Prefs) -> None:
    """The view and settings of now into ``p`` (to be saved)."""
    p.active_server = model.active_server
    p.channels = dict(model.active_channel)
    p.filters = {k: v for k, v in model.filters.items() if v}
    p.collapsed = sorted(model.collapsed)
    p.dismissed = sorted(model.dismissed)
    p.members_open = model.members_open
    p.ui_scale = settings.scale
    p.font_size = settings.font_size
