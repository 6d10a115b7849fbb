"""The Add Server flow as a typed state machine (pure: no Dear PyGui, no asyncio).

discover (a backend URL -> its directory) -> pick a server -> probe (capabilities, trust,
disclosure) -> join (confirmed). Each step that needs the stack returns the command to send
(``DiscoverCmd``, ``ProbeCmd``, ``JoinCmd``); its answer comes back through ``discovered``,
``probed`` or ``joined``. The dialog renders ``AddServerFlow`` as it is; nothing else holds the
flow's state.

"Probe Backend" without "Discover" joins the id the capabilities give (rule D1; the probe warns
when the directory does not list it). The local id the server gets in this stack (issue #14,
ADR 0018) is shown and editable before joining: the probe proposes one (the backend's id when
free, else one derived from the host); what the member types is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from services.core.contracts.chat import DirectoryEntry, ProbeResult, ServerRecord
from services.core.local_ids import valid_local_id


@dataclass(frozen=True)
class DiscoverCmd:
    url: str


@dataclass(frozen=True)
class ProbeCmd:
    url: str
    server_id: str | None


@dataclass(frozen=True)
class JoinCmd:
    url: str
    server_id: str  # the backend's id
    local_id: str | None = None  # the member's local id for it (None: the connector picks)


def valid_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def entry_label(entry: DirectoryEntry) -> str:
    """How the dialog lists a directory entry (and how a pick names it)."""
    return f"{entry.display_name} ({entry.server_id})"


@dataclass
class AddServerFlow:
    """Where the member is in adding a server."""

    url: str = ""
    busy: str = ""  # "Discovering..." while a discover is out
    servers: list[DirectoryEntry] = field(default_factory=list)
    picked: str | None = None
    probe: ProbeResult | None = None
    error: str = ""
    local_id: str = ""  # the local id the server gets here (issue #14): proposed, or typed
    local_edited: bool = False  # the member typed it (a new probe keeps it)
    version: int = 0  # bumped on every change (the dialog re-renders when it moves)

    def _changed(self) -> None:
        self.version += 1

    # -- transitions ------------------------------------------------------------------------------
    def open(self, url: str) -> None:
        """A fresh flow (the dialog opened) with the default backend URL."""
        self.reset(url)

    def reset(self, url: str) -> None:
        self.url, self.busy, self.servers, self.picked, self.probe, self.error = url, "", [], None, None, ""
        self.local_id, self.local_edited = "", False
        self._changed()

    def set_local_id(self, text: str) -> None:
        """The member edited the local id field (empty: back to the probe's proposal)."""
        text = text.strip()
        self.local_edited = bool(text)
        self.local_id = text or (self.probe.local_id if self.probe is not None else "")
        self.error = ""
        self._changed()

    def set_url(self, url: str) -> None:
        """The URL field changed: everything learnt about the previous URL is dropped."""
        self.reset(url.strip())

    def fail(self, text: str) -> None:
        self.error = text
        self._changed()

    def discover(self, url: str) -> DiscoverCmd | None:
        url = url.strip()
        if not valid_url(url):
            self.fail("Backend URL is invalid.")
            return None
        self.reset(url)
        self.busy = "Discovering..."
        return DiscoverCmd(url)

    def discovered(self, servers: list[DirectoryEntry] | None, error: str | None) -> ProbeCmd | None:
        """The directory's answer; the first server is picked and probed at once."""
        self.busy = ""
        if error is not None or servers is None:
            self.fail(error or "Discovery failed.")
            return None
        self.servers = list(servers)
        if not servers:
            self.fail(f"No servers available at {self.url.rstrip('/')}/v1/servers")
            return None
        self.picked = servers[0].server_id
        self._changed()
        return self.probe_cmd(self.url)

    def pick(self, label: str) -> ProbeCmd | None:
        for entry in self.servers:
            if entry_label(entry) == label:
                self.picked = entry.server_id
                self.probe = None
                self._changed()
                return self.probe_cmd(self.url)
        return None

    def probe_cmd(self, url: str) -> ProbeCmd | None:
        url = url.strip()
        if not valid_url(url):
            self.fail("Backend URL is invalid.")
            return None
        return ProbeCmd(url, self.picked)

    def probed(self, result: ProbeResult | None, error: str | None) -> None:
        if error is not None or result is None:
            self.fail(error or "Probe failed.")
            return
        self.probe = result
        self.error = ""
        if not self.local_edited:
            self.local_id = result.local_id or self.backend_id or ""
        self._changed()

    @property
    def backend_id(self) -> str | None:
        """The backend id a join uses: the picked entry, else the capabilities' id (D1)."""
        probe = self.probe
        return self.picked or (probe.backend_server_id if probe is not None else None) or None

    def join(self, url: str, joined: Mapping[str, ServerRecord]) -> JoinCmd | None:
        """Confirm: join the picked (or probed) server, as the local id shown, unless that
        backend server is joined already or the local id is taken (``joined``: by local id)."""
        probe = self.probe
        sid = self.backend_id
        if probe is None or not sid:
            self.fail("Probe the backend first.")
            return None
        base = probe.url.rstrip("/")
        if any(r.backend_id == sid and r.base_url.rstrip("/") == base for r in joined.values()):
            self.fail(f"Server already added: {sid}")
            return None
        local = self.local_id or probe.local_id or sid
        if not valid_local_id(local):
            self.fail("Local server id: use 1-128 letters, digits, '_' or '-'.")
            return None
        if local in joined:
            self.fail(f"Local server id already in use: {local}")
            return None
        return JoinCmd(url.strip(), sid, local)

    def joined(self, record: ServerRecord | None, error: str | None) -> bool:
        """The join's answer: ``True`` when the server was joined (the dialog closes)."""
        if error is not None or record is None:
            self.fail(error or "Join failed.")
            return False
        return True

    # -- reads for the dialog ---------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return [entry_label(s) for s in self.servers]

    @property
    def picked_entry(self) -> DirectoryEntry | None:
        return next((s for s in self.servers if s.server_id == self.picked), None)

    def summary(self) -> tuple[str, str, str]:
        """(summary, warnings, disclosure) as the dialog shows them."""
        probe = self.probe
        if probe is None:
            return self.busy, "", ""
        entry = self.picked_entry
        name = entry.display_name if entry else probe.capabilities.server_name
        desc = entry.description if entry else ""
        pill = "Verified" if probe.trust.verified else "Unverified"
        sid = self.backend_id or ""
        ids = f"server id {sid}" if sid else ""
        return (
            "\n".join(x for x in (f"{name}  [{pill}]", desc, probe.url, ids) if x),
            "\n".join(probe.trust.warnings),
            f"Disclosure: {probe.disclosure.summary}",
        )
