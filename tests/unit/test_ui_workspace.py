"""The workspace (``ui/workspace.py``) on its own: no ``App``, no window, no Dear PyGui.

It is the object the panes are built from; here it is driven the way their callbacks drive it,
with the real view model, composer, controller and state machines (no stack attached: the
commands that would go out are not the point, the state the member sees is)."""

from __future__ import annotations

from pathlib import Path

from testkit import fakes
from ui.controller import Controller
from ui.state import intents as it
from ui.state.composer import Composer
from ui.state.model import ViewModel
from ui.state.settings import Settings
from ui.storage import Prefs
from ui.voice import VoiceController
from ui.workspace import Workspace


def workspace(tmp_path: Path) -> tuple[Workspace, list[str]]:
    saved: list[str] = []
    model = ViewModel()
    composer = Composer()
    ws: Workspace | None = None

    def effect(e: it.Effect) -> None:
        assert ws is not None
        ws.apply_effect(e)  # no panes: the effects that move widgets have nothing to move

    controller = Controller(
        model,
        composer,
        client_id="desktop-test",
        effects=effect,
        voice=VoiceController(model, lambda: None, config_dir=tmp_path),
    )
    ws = Workspace(
        model,
        composer,
        controller,
        Prefs(),
        settings=Settings(1.0, 16),
        save_prefs=lambda: saved.append("prefs"),
        choose_connection=lambda path: False,
        poke=lambda: None,
    )
    ws.screen = "workspace"
    model.apply_snapshot(fakes.snapshot(seq=10))
    model.set_stack_online(True)
    return ws, saved


def test_the_workspace_drives_navigation_composer_and_switcher_without_a_window(tmp_path: Path) -> None:
    ws, saved = workspace(tmp_path)
    m = ws.model
    assert ws.panes is None  # no window
    ws.select_server("srv_harbor")
    assert m.active_server == "srv_harbor"
    ws.select_channel("ch_ops")
    assert m.channel_id == "ch_ops"
    ws.toggle_members()  # a layout preference: remembered
    assert not m.members_open and saved == ["prefs"]
    # the composer: typing, a mention completed with Tab, Shift+Enter for a new line
    assert ws.on_key("h") and ws.on_key("i")
    assert ws.composer.draft == "hi"
    ws.on_draft("hi @")
    assert ws.mention_items
    token = ws.mention_items[0][0]
    assert ws.insert_mention() and ws.composer.draft == f"hi {token} " and not ws.mention_items
    assert ws.on_composer_enter(shift=True) is False and ws.composer.draft.endswith("\n")
    ws.insert_emoji("🙂")
    assert ws.composer.draft.endswith("🙂 ")
    # the quick switcher: a query, a choice
    items = ws.quick_query("qa-play")
    assert items and items[0].channel_id == "ch_qa" and ws.switcher.items == items
    # Ctrl+Alt+Down: the next server, by the keyboard map
    assert ws.on_key("down", ctrl=True, alt=True) and m.active_server != "srv_harbor"


def test_the_add_server_flow_and_prompts_run_through_the_workspace(tmp_path: Path) -> None:
    ws, saved = workspace(tmp_path)
    ws.open_add_server()
    assert ws.add_flow.url  # the default backend, ready in the dialog's state
    ws.set_add_url("https://chat.example.org")
    assert ws.add_flow.url == "https://chat.example.org"
    ws.add_local_id_changed("srv_example")
    ws.set_appearance(scale=1.5)
    assert ws.scale == 1.5 and saved == ["prefs"]
    assert ws.model.toasts[-1].text.startswith("Appearance saved")
    ws.ask_leave("srv_harbor")  # the question is kept until answered (a pane shows it)
    assert ws.prompts.take_leave() == "srv_harbor"
