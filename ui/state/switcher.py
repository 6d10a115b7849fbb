"""The quick switcher (Ctrl+K): its list and selection, in one place (no Dear PyGui).

The view model scores the candidates (``ViewModel.quick_switch``); this keeps what the dialog
shows and which row is selected, and says what a choice opens. The dialog
(``ui.view.dialogs``) renders it and emits the member's query, moves and choice.
"""

from __future__ import annotations

from ui.state.model import SwitchItem, ViewModel


class Switcher:
    def __init__(self) -> None:
        self.items: list[SwitchItem] = []
        self.index = 0
        self.version = 0  # bumped on every change the dialog shows

    def query(self, model: ViewModel, text: str) -> list[SwitchItem]:
        """The member typed ``text``: the best matches, the first one selected."""
        self.items = model.quick_switch(text)
        self.index = 0
        self.version += 1
        return self.items

    def move(self, step: int) -> bool:
        """Up/Down: the selection moves, wrapping around. False when there is no list."""
        if not self.items:
            return False
        self.index = (self.index + step) % len(self.items)
        self.version += 1
        return True

    def take(self, index: int) -> SwitchItem | None:
        """The member chose row ``index``: the item (the list is done), or None out of range."""
        if not (0 <= index < len(self.items)):
            return None
        item = self.items[index]
        self.items = []
        self.index = 0
        self.version += 1
        return item
