"""The desktop's small state machines (``ui/state/``), without a display: the keyboard map, the
quick switcher, mention autocomplete, the leave/consent prompts, settings, image keys and the
account/onboarding flow. ``tests/e2e/test_view.py`` drives the same through the real widgets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.core.contracts.chat import (
    AVATAR_PRESETS,
    AttachmentRef,
    IdentityInfo,
    LinkPreview,
    MemberProfile,
    ProfileSetArgs,
    UploadedImage,
)
from testkit import fakes
from ui.state import images, keys
from ui.state.account import AccountState, check_root
from ui.state.autocomplete import Autocomplete
from ui.state.model import ViewModel
from ui.state.prompts import Prompts
from ui.state.settings import Settings
from ui.state.switcher import Switcher

WS = keys.KeyContext()


def vm() -> ViewModel:
    m = ViewModel(clock=lambda: 1000.0)
    m.apply_snapshot(fakes.snapshot(seq=10))
    m.set_stack_online(True)
    return m


# -- keyboard map -----------------------------------------------------------------------------------
def test_escape_skips_onboarding_else_closes_everything() -> None:
    assert keys.route_key("escape", keys.KeyContext(onboarding_open=True)) == keys.SkipOnboarding()
    assert keys.route_key("escape", keys.KeyContext(mentions_open=True)) == keys.CloseAll()
    assert keys.route_key("escape", WS) == keys.CloseAll()


def test_shortcuts() -> None:
    assert keys.route_key("k", WS, ctrl=True) == keys.OpenSwitcher()
    assert keys.route_key("k", WS, ctrl=True, alt=True) != keys.OpenSwitcher()
    assert keys.route_key("v", WS, ctrl=True) == keys.PasteImage()
    assert keys.route_key("v", keys.KeyContext(screen="firstrun"), ctrl=True) == keys.Ignore()
    assert keys.route_key("tab", keys.KeyContext(mentions_open=True)) == keys.InsertMention()
    assert keys.route_key("tab", WS) == keys.Ignore()


def test_arrows_by_what_is_open() -> None:
    ment = keys.KeyContext(mentions_open=True)
    assert keys.route_key("down", ment, text_active=True) == keys.MoveMention(1)
    assert keys.route_key("up", ment) == keys.MoveMention(-1)
    assert keys.route_key("up", ment, alt=True) == keys.MoveChannel(-1)  # a modifier: not the list
    sw = keys.KeyContext(overlay_open=True, switcher_items=True)
    assert keys.route_key("down", sw) == keys.MoveSwitch(1)
    assert keys.route_key("enter", sw) == keys.ChooseSwitch()
    assert keys.route_key("enter", keys.KeyContext(switcher_items=True)) == keys.Ignore()
    assert keys.route_key("down", WS, ctrl=True, alt=True) == keys.MoveServer(1)
    assert keys.route_key("up", WS, alt=True, shift=True) == keys.MoveChannel(-1, unread_only=True)
    assert keys.route_key("down", WS, alt=True) == keys.MoveChannel(1)
    assert keys.route_key("down", WS) == keys.Ignore()


def test_type_to_focus() -> None:
    assert keys.route_key("a", WS) == keys.TypeChar("a")
    assert keys.route_key("a", WS, shift=True) == keys.TypeChar("A")
    assert keys.route_key("space", WS) == keys.TypeChar(" ")
    assert keys.route_key("a", WS, text_active=True) == keys.Ignore()  # the field takes it
    assert keys.route_key("a", WS, ctrl=True) == keys.Ignore()
    assert keys.route_key("a", keys.KeyContext(overlay_open=True)) == keys.Ignore()
    assert keys.route_key("a", keys.KeyContext(read_only=True)) == keys.Ignore()
    assert keys.route_key("f5", WS) == keys.Ignore()


# -- quick switcher -----------------------------------------------------------------------------------
def test_switcher_query_move_take() -> None:
    m = vm()
    sw = Switcher()
    items = sw.query(m, "")
    assert items and sw.index == 0
    assert sw.move(-1) and sw.index == len(items) - 1  # wraps
    assert sw.move(1) and sw.index == 0
    target = next(i for i in items if i.kind == "server" and i.server_id != m.active_server)
    chosen = sw.take(items.index(target))
    assert chosen == target and sw.items == [] and not sw.move(1)
    m.choose(chosen)
    assert m.active_server == target.server_id
    assert sw.take(0) is None  # nothing listed any more
    narrowed = sw.query(m, "general")
    assert narrowed and all("general" in (i.label + i.detail).lower() for i in narrowed)


# -- mention autocomplete -------------------------------------------------------------------------------
def test_autocomplete_follows_the_draft_and_completes() -> None:
    m = vm()
    ac = Autocomplete()
    assert not ac.update(m, "hello") and not ac.open
    assert ac.update(m, "hi @") and ac.open and ac.index == 0
    assert not ac.update(m, "hi @")  # unchanged: the selection stays
    ac.move(1)
    assert ac.index == 1
    token = ac.items[1][0]
    assert ac.complete("hi @") == f"hi {token} "
    assert ac.complete("hi @", index=0) == f"hi {ac.items[0][0]} "
    ac.update(m, "hi @User")
    assert ac.items and all("user" in label.lower() or "user" in t.lower() for t, label in ac.items)
    assert ac.close() and not ac.close() and ac.complete("x @") is None
    ac.update(m, "@")
    assert ac.items and all(t != f"@{fakes.ME_TL}" for t, _ in ac.items)  # never oneself


# -- prompts ----------------------------------------------------------------------------------------------
def test_leave_prompt() -> None:
    m = vm()
    p = Prompts()
    assert p.ask_leave(m, "srv_unknown") is None and p.take_leave() is None
    sid = m.order[0]
    assert p.ask_leave(m, sid) == m.servers[sid].record.display_name
    assert p.take_leave() == sid and p.take_leave() is None


def test_consent_asked_once_per_server_that_offers_profiles() -> None:
    m = vm()
    p = Prompts()
    assert p.next_consent(m) is None  # every fake server has an answer already
    sid = m.order[0]
    sm = m.servers[sid]
    sm.record = sm.record.model_copy(update={"profile_consent": None})
    assert sm.capabilities is not None
    sm.capabilities = sm.capabilities.model_copy(update={"profile_enabled": False})
    assert p.next_consent(m) is None  # the server takes no profiles
    sm.capabilities = sm.capabilities.model_copy(update={"profile_enabled": True})
    assert p.next_consent(m) == (sid, sm.record.display_name)
    assert p.next_consent(m) is None  # asked once
    assert p.take_consent() == sid and p.take_consent() is None
    assert p.take_consent("srv_x") == "srv_x"  # Settings' per-server switch


# -- settings -------------------------------------------------------------------------------------------
def test_settings_previews_and_appearance() -> None:
    st = Settings(1.0, 16)
    assert (
        st.set_appearance(scale=2.0).startswith("Appearance saved") and st.scale == 2.0 and st.font_size == 16
    )
    st.set_appearance(font_size=18)
    assert (st.scale, st.font_size) == (2.0, 18)
    assert st.previews_answered(None, True, None) is None and st.previews_enabled is True
    assert st.previews_answered(False, False, None) == ("Link previews off.", False)
    assert st.previews_enabled is False
    assert st.previews_answered(True, None, "timed out") == ("Link previews not changed: timed out", True)
    assert st.previews_answered(None, None, "timed out") is None and st.previews_enabled is False


# -- image keys -----------------------------------------------------------------------------------------
def test_image_keys_and_pins() -> None:
    att = AttachmentRef(
        attachment_id="att_1",
        file_name="a.png",
        content_type="image/png",
        bytes=10,
        url="https://x.test/a.png",
    )
    m = fakes.msg("srv_a", "ch_1", "m1", "uid_x", "look", fakes.NOW, attachments=[att])
    m = m.model_copy(
        update={"link_previews": [LinkPreview(url="https://x.test/", image_url="https://x.test/i.png")]}
    )
    k = images.attachment_key(m, att)
    assert k == "srv_a/ch_1/m1/att_1"
    assert images.preview_key(m, 0) == "preview:srv_a:ch_1:m1:0"
    assert images.avatar_key("srv_a", "uid_x", 3) == "avatar:srv_a:uid_x:3"
    assert images.own_avatar_key("abc") == "avatar:own:abc"
    textures = ["avatar:own:abc", "draft:0", "preview:p", "srv_b/ch/m9/att_9", k]
    assert images.pinned_keys(textures, [m]) == {"avatar:own:abc", "draft:0", "preview:p", k}
    assert images.pinned_keys(textures, []) == {"avatar:own:abc", "draft:0", "preview:p"}
    assert images.redraws_rows("avatar:x") and images.redraws_rows("preview:x") and not images.redraws_rows(k)


# -- account / onboarding ---------------------------------------------------------------------------------
def profile(mode: str = "generated", sha: str | None = None) -> MemberProfile:
    return MemberProfile(
        display_name="Vinnie",
        avatar_mode=mode,
        avatar_preset_id="mint",
        avatar_sha256=sha,
        updated_at=datetime.now(UTC),
    )


def test_first_run_opens_identity_then_profile() -> None:
    a = AccountState()
    step, first = a.identity_read(IdentityInfo(exists=False), skipped=False)
    assert (step, first) == ("identity", True)
    a.open("identity")
    assert a.create_label == "Create a new identity" and a.skip_label == "Skip for now"
    assert a.begin() and not a.begin()  # one command at a time
    assert not a.identity_saved(IdentityInfo(exists=True)) and a.step == "profile" and not a.busy
    assert a.create_label == "Continue with my new identity"
    assert a.settle() and not a.settle()


def test_identity_read_again_or_skipped_opens_nothing() -> None:
    a = AccountState()
    assert a.identity_read(IdentityInfo(exists=False), skipped=True) == (None, True)
    assert a.identity_read(IdentityInfo(exists=False), skipped=False) == (None, False)  # not the first read
    b = AccountState()
    assert (
        b.identity_read(IdentityInfo(exists=True, servers=[fakes.record("s", "S", "S", "u")]), False)[0]
        is None
    )
    assert b.profile_read(None, first=True, skipped=False) == "profile"
    assert b.profile_read(None, first=True, skipped=True) is None
    assert b.profile_read(profile(), first=True, skipped=False) is None


def test_profile_fields_and_validation() -> None:
    a = AccountState()
    a.open("profile")
    assert a.profile_args("") == "Username is required."
    assert isinstance(a.profile_args("A"), str)
    assert not a.pick_preset("nope") and a.pick_preset(AVATAR_PRESETS[2])
    args = a.profile_args("  Vinnie ")
    assert args == ProfileSetArgs(
        display_name="Vinnie", avatar_mode="generated", avatar_preset_id=AVATAR_PRESETS[2]
    )
    assert a.preset_chosen(AVATAR_PRESETS[2]) and a.avatar_line == f"Avatar: generated ({AVATAR_PRESETS[2]})"
    a.mode = "uploaded"
    assert a.profile_args("Vinnie") == "Upload an avatar image or switch to generated."
    up = UploadedImage(file_name="me.png", content_type="image/png", data_b64="AA==")
    a.upload_chosen(up)
    assert a.profile_args("Vinnie") == ProfileSetArgs(display_name="Vinnie", avatar=up)
    assert a.avatar_line == "Avatar: me.png" and not a.preset_chosen(AVATAR_PRESETS[2])
    assert check_root("identity_abc12345") is None and check_root("identity_NOPE") is not None


def test_profile_read_and_own_avatar() -> None:
    a = AccountState()
    assert not a.set_profile(profile()) and a.avatar_colors() is not None and a.preset == "mint"
    assert a.set_profile(profile("uploaded", sha="s1"))  # an uploaded avatar to fetch
    assert a.avatar_colors() is None
    assert not a.own_avatar(profile("uploaded", sha="s1"))  # no bytes in the answer
    with_bytes = profile("uploaded", sha="s1").model_copy(update={"avatar_b64": "AAEC"})
    assert a.own_avatar(with_bytes) and a.avatar_image == b"\x00\x01\x02" and a.avatar_key == "s1"
    assert not a.set_profile(profile("uploaded", sha="s1"))  # the same image: not fetched again
    a.set_profile(profile())
    assert a.avatar_image is None


@pytest.mark.parametrize("editing", [False, True])
def test_skip_remembers_only_the_first_run(editing: bool) -> None:
    a = AccountState()
    a.set_profile(profile())
    a.open("profile", editing=editing)
    assert a.title == ("Edit profile" if editing else "OpenChat setup")
    assert a.skip() is (not editing)
    a.close()
    assert a.step is None and a.skip() is False


# -- small pieces that left the app: message link, paste result, preferences ----------------------------
def test_message_link_of_a_message_on_screen() -> None:
    m = vm()
    msg = m.messages()[-1]
    base = m.servers[msg.server_id].record.base_url.rstrip("/")
    assert m.find_on_screen(msg.id) == msg
    assert m.message_link(msg.id) == f"{base}/channels/{msg.channel_id}?message_id={msg.id}"
    assert m.message_link("m_not_here") is None and m.find_on_screen("m_not_here") is None


def test_pasted_image_or_reason() -> None:
    from ui.state.composer import Composer

    c = Composer()
    c.pasted(None, 1000)  # no image on the clipboard: text pastes as usual
    assert c.attachments == [] and c.error == ""
    c.pasted("too_large", 2 * 1024 * 1024)
    assert c.error == "Image is too large. Max 2.00 MB."
    c.pasted("No clipboard tool (xclip) found.", 1000)
    assert c.error == "No clipboard tool (xclip) found."
    c.pasted(("image/jpeg", b"\xff\xd8" + b"x" * 10), 1000)
    assert [(a.name, a.content_type) for a in c.attachments] == [
        ("image-1.jpg", "image/jpeg")
    ] and c.error == ""


def test_preferences_round_trip() -> None:
    from ui.state import prefs
    from ui.storage import Prefs

    m = vm()
    sid = m.order[1]
    m.select_server(sid)
    m.filters = {sid: "gen", m.order[0]: ""}
    m.collapsed = {(sid, "grp_b"), (sid, "grp_a")}
    m.members_open = False
    p = Prefs()
    prefs.remember(m, Settings(1.5, 18), p)
    assert (
        p.active_server == sid
        and p.filters == {sid: "gen"}
        and p.collapsed == [(sid, "grp_a"), (sid, "grp_b")]
    )
    assert (p.ui_scale, p.font_size, p.members_open) == (1.5, 18, False)
    fresh = ViewModel(clock=lambda: 0.0)
    prefs.restore(fresh, Prefs.model_validate_json(p.model_dump_json()))
    assert fresh.active_server == sid and fresh.filters == {sid: "gen"} and fresh.collapsed == m.collapsed
    assert fresh.members_open is False and fresh.active_channel == m.active_channel


# -- the app's wiring of the keyboard map, without a window ------------------------------------------------
def test_app_performs_the_routed_keys_without_a_window(tmp_path: Path) -> None:
    """``Workspace.on_key`` reads what is on screen, routes it through ``ui/state/keys.py`` and performs
    the action (no Dear PyGui is imported: the import-graph test checks ``ui.app`` loads it only
    in ``build_view``)."""
    from ui.app import App
    from ui.storage import Storage

    app = App(storage=Storage(tmp_path / "cfg"), os_notifications=False, watch_window=False)
    app.screen = "workspace"
    app.model.apply_snapshot(fakes.snapshot(seq=10))
    app.model.set_stack_online(True)
    assert (
        app.workspace.on_key("h") and app.workspace.on_key("i", shift=True) and app.workspace.on_key("space")
    )
    assert app.composer.draft == "hI "  # type-to-focus
    assert not app.workspace.on_key("x", text_active=True) and app.composer.draft == "hI "
    first = app.model.active_server
    assert app.workspace.on_key("down", ctrl=True, alt=True) and app.model.active_server != first
    assert app.workspace.on_key("up", ctrl=True, alt=True) and app.model.active_server == first
    assert not app.workspace.on_key("down")  # a plain arrow goes to the widget
    app.workspace.on_draft("hi @")
    assert (
        app.workspace.mention_items
        and app.workspace.on_key("down", text_active=True)
        and app.workspace.mention_index == 1
    )
    token = app.workspace.mention_items[1][0]
    assert (
        app.workspace.on_key("tab")
        and app.composer.draft == f"hi {token} "
        and not app.workspace.mention_items
    )
    app.workspace.on_draft("@")
    assert app.workspace.mention_items and app.workspace.on_key("escape") and not app.workspace.mention_items
    app.model.set_stack_online(False)  # read-only: typing does not go to the composer
    assert not app.workspace.on_key("z") and not app.composer.draft.endswith("z")
