"""Dialogs and overlays of the workspace (ux.md 2.8); each owns its widget tags."""

from ui.view.dialogs.overlays import Dialogs

__all__ = ["Dialogs"]
