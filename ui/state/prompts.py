"""The desktop's questions to the member: leave a server, and share the profile with a server
(features 1.6: a server gets the member's name and avatar only after the member agreed, asked
once per server). Pure state (no Dear PyGui); the dialogs render it.
"""

from __future__ import annotations

from ui.state.model import ViewModel


class Prompts:
    def __init__(self) -> None:
        self.leave_sid: str | None = None  # the server the Leave dialog asks about
        self.consent_sid: str | None = None  # the server the consent dialog asks about
        self.asked_consent: set[str] = set()  # asked once per server and run of the app

    def ask_leave(self, model: ViewModel, sid: str) -> str | None:
        """The server's name for the Leave dialog, or None for an unknown server."""
        sm = model.servers.get(sid)
        if sm is None:
            return None
        self.leave_sid = sid
        return sm.record.display_name

    def take_leave(self) -> str | None:
        """The member confirmed (or closed) the Leave dialog: the server asked about."""
        sid, self.leave_sid = self.leave_sid, None
        return sid

    def next_consent(self, model: ViewModel) -> tuple[str, str] | None:
        """The next server that offers profiles and has no answer yet, as (server id, name):
        marked asked. None when there is none (or the view is read-only)."""
        if model.read_only:
            return None
        for sid in model.order:
            sm = model.servers[sid]
            caps = sm.capabilities
            if (
                sm.record.profile_consent is None
                and caps is not None
                and caps.profile_enabled
                and sid not in self.asked_consent
            ):
                self.asked_consent.add(sid)
                self.consent_sid = sid
                return sid, sm.record.display_name
        return None

    def take_consent(self, sid: str | None = None) -> str | None:
        """The member answered: the server the answer is for (``sid`` from Settings' switches,
        else the one the dialog asked about)."""
        sid = sid or self.consent_sid
        self.consent_sid = None
        return sid
