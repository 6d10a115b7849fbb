"""The desktop around the app: OS notifications (features 7.6) and the window's focus (rule D4).

* ``OsNotifier`` shows a ``notification`` event as an OS notification through
  ``desktop-notifier`` (on Linux: D-Bus ``org.freedesktop.Notifications``; macOS and Windows
  through their own notification centres). It runs its own asyncio loop on a daemon thread
  (clicks arrive as D-Bus signals there); the main thread reads ``clicks`` and ``fallbacks``
  each frame. One notification per tag: the previous one with the same tag is closed before
  the new one is shown (desktop-notifier has no ``replaces_id``). No sound is attached
  (silent). When no notification service exists the notification comes back on
  ``fallbacks`` and the app shows its in-app toast instead; the reason is logged once.
* ``X11Window`` finds the viewport's X11 window (the GLFW window Dear PyGui creates, by
  ``_NET_WM_PID``) with ``python-xlib`` and reads the real focus signal: the X server's input
  focus (``GetInputFocus``) and, under an EWMH window manager, ``_NET_ACTIVE_WINDOW``; visible
  = mapped and not iconified. ``activate()`` asks for focus (``_NET_ACTIVE_WINDOW`` client
  message with a window manager, else raise + ``SetInputFocus``). Dear PyGui has no focus
  callback and no native handle, hence this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.core.contracts.notify import Notification

log = logging.getLogger("openchat.ui.desktop")

APP_NAME = "OpenChat"


@dataclass(frozen=True)
class Click:
    server_id: str
    channel_id: str


class OsNotifier:
    """OS notifications on a thread of their own. ``available``: None until the first
    notification probes the service, then True/False (False: ``reason`` says why)."""

    def __init__(self, factory: Callable[[], Any] | None = None) -> None:
        self._factory = factory
        self.available: bool | None = None
        self.reason = ""
        self.clicks: queue.SimpleQueue[Click] = queue.SimpleQueue()
        self.fallbacks: queue.SimpleQueue[Notification] = queue.SimpleQueue()
        self.shown: list[tuple[str, str, str]] = []  # (tag, title, body), newest last (for tests/logs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._notifier: Any = None
        self._logged = False
        self._lock = threading.Lock()

    # -- main thread ------------------------------------------------------------------------------
    def show(self, n: Notification) -> None:
        if self.available is False:
            self.fallbacks.put(n)
            return
        loop = self._ensure_loop()
        asyncio.run_coroutine_threadsafe(self._show(n), loop)

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shutdown() -> None:
            bus = getattr(getattr(self._notifier, "_backend", None), "bus", None)
            if bus is not None:
                bus.disconnect()

        with contextlib.suppress(Exception):  # best effort on quit
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(2)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(2)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._loop = loop
                self._thread = threading.Thread(
                    target=loop.run_forever, name="openchat-notifier", daemon=True
                )
                self._thread.start()
            return self._loop

    # -- notifier thread --------------------------------------------------------------------------
    def _unavailable(self, why: str, n: Notification) -> None:
        self.available = False
        self.reason = why
        if not self._logged:
            self._logged = True
            log.warning("no OS notification service, using in-app toasts", extra={"reason": why})
        self.fallbacks.put(n)

    async def _probe(self) -> bool:
        if self.available is not None:
            return self.available
        if self._factory is not None:
            self._notifier = self._factory()
        else:
            try:
                from desktop_notifier import DesktopNotifier
            except ImportError:
                self.reason = "desktop-notifier is not installed"
                return False
            self._notifier = DesktopNotifier(app_name=APP_NAME, app_icon=None)
        try:
            # Connects (on Linux: the session bus, then org.freedesktop.Notifications): raises
            # when there is no bus or nobody owns the name, unlike ``send``, which only logs.
            await self._notifier.get_capabilities()
        except Exception as exc:
            self.reason = f"{type(exc).__name__}: {exc}"[:200]
            return False
        self.available = True
        log.info("OS notifications through %s", type(self._notifier._backend).__name__)
        return True

    async def _show(self, n: Notification) -> None:
        from desktop_notifier import Notification as OsNote

        try:
            ok = await self._probe()
        except Exception as exc:
            ok, self.reason = False, f"{type(exc).__name__}: {exc}"[:200]
        if not ok:
            self._unavailable(self.reason or "no notification service", n)
            return
        notifier = self._notifier
        try:
            if n.tag in await notifier.get_current_notifications():
                await notifier.clear(n.tag)  # one per channel: replace the previous one
        except Exception:  # already gone (expired or dismissed): nothing to replace
            log.debug("previous notification already closed", extra={"tag": n.tag})
        dispatched = asyncio.Event()
        note = OsNote(
            title=n.title,
            message=n.body,
            identifier=n.tag,
            thread=n.tag,
            sound=None,  # silent (7.6)
            on_clicked=lambda: self.clicks.put(Click(n.server_id, n.channel_id)),
            on_dispatched=dispatched.set,
        )
        await notifier.send_notification(note)
        if not dispatched.is_set():  # send() swallows errors: the service went away
            self.available = None
            self._unavailable("the notification service did not accept the notification", n)
            return
        self.shown.append((n.tag, n.title, n.body))
        del self.shown[:-50]


class X11Window:
    """The viewport's X11 window, through python-xlib (None from ``open`` elsewhere)."""

    def __init__(self, display: Any, title: Callable[[], str] | None = None) -> None:
        from Xlib import X

        self.X = X
        self.d = display
        self.root = display.screen().root
        self.title = title
        self.wid: int | None = None
        self.a_pid = display.intern_atom("_NET_WM_PID")
        self.a_active = display.intern_atom("_NET_ACTIVE_WINDOW")
        self.a_supported = display.intern_atom("_NET_SUPPORTED")
        self.a_wm_state = display.intern_atom("WM_STATE")
        self.a_state = display.intern_atom("_NET_WM_STATE")
        self.a_hidden = display.intern_atom("_NET_WM_STATE_HIDDEN")

    @classmethod
    def open(cls, title: Callable[[], str] | None = None) -> X11Window | None:
        if not os.environ.get("DISPLAY"):
            return None
        try:
            from Xlib import display as xdisplay
        except ImportError:
            log.info("python-xlib is not installed: window focus is not tracked")
            return None
        try:
            return cls(xdisplay.Display(), title)
        except Exception as exc:
            log.info("cannot open the X display: %s", type(exc).__name__)
            return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.d.close()

    def find(self) -> int | None:
        """The top-level window of this process (``_NET_WM_PID``), the one with our title
        first; a window manager's frame is searched through."""
        pid = os.getpid()
        found: list[tuple[int, int]] = []

        def walk(win: Any, depth: int) -> None:
            try:
                children = win.query_tree().children
            except Exception:
                return
            for c in children:
                try:
                    prop = c.get_full_property(self.a_pid, self.X.AnyPropertyType)
                except Exception:  # noqa: S112 - a window that vanished while walking the tree
                    continue
                if prop is not None and len(prop.value) and int(prop.value[0]) == pid:
                    try:
                        name = c.get_wm_name() or ""
                    except Exception:
                        name = ""
                    want = self.title() if self.title else ""
                    found.append((0 if want and name == want else 1, c.id))
                elif depth < 2:
                    walk(c, depth + 1)

        walk(self.root, 0)
        self.wid = min(found)[1] if found else None
        return self.wid

    def _window(self) -> Any:
        if self.wid is None and self.find() is None:
            return None
        return self.d.create_resource_object("window", self.wid)

    def _ewmh_active(self) -> bool:
        prop = self.root.get_full_property(self.a_supported, self.X.AnyPropertyType)
        return prop is not None and self.a_active in list(prop.value)

    def state(self) -> tuple[bool, bool] | None:
        """(focused, visible) now, or None when the window is not found."""
        try:
            return self._state()
        except Exception:
            self.wid = None  # destroyed or re-created: find it again next time
            return None

    def _state(self) -> tuple[bool, bool] | None:
        win = self._window()
        if win is None:
            return None
        attrs = win.get_attributes()
        visible = attrs.map_state == self.X.IsViewable
        wm_state = win.get_full_property(self.a_wm_state, self.X.AnyPropertyType)
        if wm_state is not None and len(wm_state.value) and int(wm_state.value[0]) == 3:  # IconicState
            visible = False
        net_state = win.get_full_property(self.a_state, self.X.AnyPropertyType)
        if net_state is not None and self.a_hidden in list(net_state.value):
            visible = False
        if self._ewmh_active():
            prop = self.root.get_full_property(self.a_active, self.X.AnyPropertyType)
            if prop is not None and len(prop.value):
                return int(prop.value[0]) == self.wid, visible
        focus = self.d.get_input_focus().focus
        fid = focus if isinstance(focus, int) else getattr(focus, "id", 0)
        return (fid != 0 and self._related(fid)), visible

    def _related(self, fid: int) -> bool:
        """The focus is on our window, one of its children, or the frame around it."""
        if fid == self.wid:
            return True
        try:
            node = self.d.create_resource_object("window", fid)
            tree = node.query_tree()
            w = self.d.create_resource_object("window", self.wid).query_tree()
        except Exception:
            return False
        # a child of ours (input focus on a sub-window)
        parent = tree.parent
        for _ in range(8):
            if parent is None or parent.id in (0, self.root.id):
                break
            if parent.id == self.wid:
                return True
            parent = parent.query_tree().parent
        # the window manager's frame: an ancestor of ours below the root
        anc = w.parent
        for _ in range(8):
            if anc is None or anc.id in (0, self.root.id):
                break
            if anc.id == fid:
                return True
            anc = anc.query_tree().parent
        return False

    def activate(self) -> bool:
        """Bring the window to the front with the input focus."""
        try:
            win = self._window()
            if win is None:
                return False
            if self._ewmh_active():
                from Xlib.protocol import event

                ev = event.ClientMessage(
                    window=win, client_type=self.a_active, data=(32, [1, self.X.CurrentTime, 0, 0, 0])
                )
                mask = self.X.SubstructureRedirectMask | self.X.SubstructureNotifyMask
                self.root.send_event(ev, event_mask=mask)
            else:
                win.map()
                win.configure(stack_mode=self.X.Above)
                win.set_input_focus(self.X.RevertToParent, self.X.CurrentTime)
            self.d.sync()
            return True
        except Exception as exc:
            log.info("cannot activate the window: %s", type(exc).__name__)
            self.wid = None
            return False


class DesktopHooks:
    """The app's ties to the desktop, polled once per frame on the main thread: OS notifications
    (their fallbacks become toasts, their clicks open the channel) and the window's focus and
    visibility (read from X11 every ``poll_s``; a change is reported with ``on_focus``)."""

    def __init__(
        self,
        notifier: OsNotifier | None,
        *,
        toast: Callable[[str], None],
        on_click: Callable[[Click], None],
        on_focus: Callable[[bool, bool], None],
        poll_s: float = 0.25,
    ) -> None:
        self.notifier = notifier
        self.window: X11Window | None = None
        self.window_state: tuple[bool, bool] | None = None  # (focused, visible) last read from X11
        self._toast = toast
        self._on_click = on_click
        self._on_focus = on_focus
        self.poll_s = poll_s
        self._window_at = 0.0

    def notify(self, n: Notification) -> None:
        """A notification to show: the OS's, or the in-app toast where there is no notifier."""
        if self.notifier is not None:
            self.notifier.show(n)
            return
        self._toast(f"{n.title}: {n.body}"[:160])

    def tick(self, now: float) -> None:
        """Once per frame: read the window's state when due, take the notifier's results."""
        if self.window is not None and now - self._window_at >= self.poll_s:
            self._window_at = now
            self.poll_window()
        if self.notifier is not None:
            while not self.notifier.fallbacks.empty():
                n = self.notifier.fallbacks.get_nowait()
                self._toast(f"{n.title}: {n.body}"[:160])
            while not self.notifier.clicks.empty():
                self._on_click(self.notifier.clicks.get_nowait())

    def poll_window(self) -> None:
        assert self.window is not None
        state = self.window.state()
        if state is None or state == self.window_state:
            return
        self.window_state = state
        log.debug("window focus", extra={"focused": state[0], "visible": state[1]})
        self._on_focus(*state)

    def raise_window(self) -> bool:
        """Bring the window forward (a notification was clicked). True when X11 did: the focus
        change is then read from X11; False: the caller counts the window as focused."""
        if self.window is not None and self.window.activate():
            self.poll_window()
            return True
        return False

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.close()
        if self.window is not None:
            self.window.close()
            self.window = None
