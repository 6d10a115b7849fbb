"""The Dear PyGui panes: they render the view model (``ui.state``), emit the member's intents
through the app's port (``ui.ports.AppPort``) and own their widget tags. The only part of ``ui``
(with ``ui.app``) that imports Dear PyGui; nothing here imports ``ui.app``."""

from ui.view.shell import View

__all__ = ["View"]
