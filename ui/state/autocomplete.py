"""The composer's mention autocomplete (features 7.3: "@" offers the users this desktop knows of,
never a server-wide directory), as a small state machine (no Dear PyGui).

``update`` follows the draft; ``move`` walks the list; ``complete`` gives the draft with the
chosen ``@token`` in place of the typed prefix.
"""

from __future__ import annotations

from ui.state.model import ViewModel


class Autocomplete:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []  # (token to insert, label shown)
        self.index = 0

    @property
    def open(self) -> bool:
        return bool(self.items)

    def update(self, model: ViewModel, draft: str) -> bool:
        """The draft changed: the candidates for its trailing ``@prefix``. True when the list
        changed (the selection goes back to the first row)."""
        items = model.mention_candidates(draft)
        if items == self.items:
            return False
        self.items = items
        self.index = 0
        return True

    def close(self) -> bool:
        """Esc: the list goes away. True when there was one."""
        if not self.items:
            return False
        self.items = []
        return True

    def move(self, step: int) -> None:
        if self.items:
            self.index = (self.index + step) % len(self.items)

    def complete(self, draft: str, index: int | None = None) -> str | None:
        """The draft with the chosen mention (row ``index``, else the selected one) in place of
        the ``@prefix`` it ends with, and a space after; None when the list is empty."""
        if not self.items:
            return None
        i = self.index if index is None else index
        token, _label = self.items[i % len(self.items)]
        at = draft.rfind("@")
        return draft[:at] + token + " "
