"""The Dear PyGui panes: they render the view model (``ui.state``), emit the member's intents
through each pane's own port (``ui.ports``: ``RailPort``, ``ChatPort``…; ``AppPort`` is their
sum) and own their widget tags. The wiring drives the built workspace through
``ui.ports.WorkspaceView``. The only part of ``ui`` (with ``ui.app``) that imports Dear PyGui;
nothing here imports ``ui.app``, the controller, the adapter or the account flow."""

from ui.view.shell import View

__all__ = ["View"]
