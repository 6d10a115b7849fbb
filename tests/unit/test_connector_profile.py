"""The member's own profile: validation, storage and avatar conversion (no network)."""

from __future__ import annotations

import base64
import io
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from services.connector.profile import (
    ProfileStore,
    apply_change,
    check_display_name,
    default_preset,
    inspect_image,
    prepare_avatar,
)
from services.core.bus import CommandError
from services.core.contracts import wire
from services.core.contracts.chat import AVATAR_PRESETS, ProfileSetArgs, UploadedImage

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def encode(fmt: str, size: tuple[int, int], mode: str = "RGB", **save: object) -> bytes:
    img = Image.linear_gradient("L").resize(size).convert(mode)
    out = io.BytesIO()
    img.save(out, format=fmt, **save)
    return out.getvalue()


def noise(fmt: str, size: tuple[int, int]) -> bytes:
    img = Image.frombytes("RGB", size, random.Random(7).randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def upload(data: bytes, name: str = "a.png") -> UploadedImage:
    return UploadedImage(file_name=name, content_type="image/png", data_b64=base64.b64encode(data).decode())


def limits(
    max_bytes: int = 2 * 1024 * 1024, types: tuple[str, ...] = ("image/png", "image/jpeg"), side: int = 1024
) -> wire.CapabilityAvatarUpload:
    return wire.CapabilityAvatarUpload(
        max_bytes=max_bytes, mime_types=list(types), max_width=side, max_height=side
    )


@pytest.mark.parametrize("name", ["Al", "Zoë_2", "李雷", "Ann-Marie O.", "x" * 32, "  padded  ", "Ⅻ 42"])
def test_display_name_accepted(name: str) -> None:
    assert check_display_name(name) == name.strip()


@pytest.mark.parametrize(
    "name", ["", "   ", "A", "x" * 33, "Ann 🎉", "tab\there", "semi;colon", "a/b", "new\nline", "Ann!"]
)
def test_display_name_rejected(name: str) -> None:
    with pytest.raises(CommandError) as err:
        check_display_name(name)
    assert err.value.code == "display_name_invalid"


def test_new_profile_defaults_and_revisions() -> None:
    first = apply_change(None, ProfileSetArgs(display_name=" Ann "), NOW)
    assert first.profile.display_name == "Ann"
    assert first.profile.avatar_mode == "generated"
    assert first.profile.avatar_preset_id == default_preset("Ann") in AVATAR_PRESETS
    assert first.profile.revision == 1 and first.image is None
    same = apply_change(first, ProfileSetArgs(display_name="Ann"), NOW)
    assert same is first  # nothing changed: no new revision, nothing to publish
    png = encode("PNG", (32, 32))
    uploaded = apply_change(first, ProfileSetArgs(avatar=upload(png)), NOW)
    assert uploaded.profile.avatar_mode == "uploaded" and uploaded.image == png
    assert uploaded.profile.avatar_content_type == "image/png" and uploaded.profile.avatar_bytes == len(png)
    assert uploaded.profile.avatar_preset_id == first.profile.avatar_preset_id  # kept as the fallback
    assert uploaded.profile.revision == 2
    renamed = apply_change(uploaded, ProfileSetArgs(display_name="Anna"), NOW)
    assert renamed.image == png and renamed.profile.avatar_mode == "uploaded"
    back = apply_change(renamed, ProfileSetArgs(avatar_preset_id="ember"), NOW)
    assert (back.profile.avatar_mode, back.profile.avatar_preset_id, back.image) == (
        "generated",
        "ember",
        None,
    )


@pytest.mark.parametrize(
    "args",
    [
        ProfileSetArgs(display_name="Ann", avatar_preset_id="preset_01"),
        ProfileSetArgs(display_name="Ann", avatar_mode="uploaded"),
        ProfileSetArgs(display_name="Ann", avatar_preset_id="reef", avatar=upload(b"x")),
        ProfileSetArgs(display_name="Ann", avatar=upload(encode("GIF", (8, 8)))),
        ProfileSetArgs(display_name="Ann", avatar=upload(b"not an image")),
        ProfileSetArgs(
            display_name="Ann", avatar=UploadedImage(file_name="a", content_type="image/png", data_b64="!!")
        ),
        ProfileSetArgs(display_name="Ann", avatar_mode="generated", avatar=upload(encode("PNG", (8, 8)))),
    ],
)
def test_avatar_rejected(args: ProfileSetArgs) -> None:
    with pytest.raises(CommandError) as err:
        apply_change(None, args, NOW)
    assert err.value.code == "avatar_invalid"


def test_avatar_size_limit() -> None:
    big = noise("PNG", (900, 900))
    assert len(big) > 2 * 1024 * 1024
    with pytest.raises(CommandError, match="2 MB or smaller"):
        inspect_image(big)
    assert inspect_image(encode("WEBP", (20, 10))).content_type == "image/webp"
    assert inspect_image(encode("JPEG", (20, 10))).content_type == "image/jpeg"


def test_webp_becomes_png_scaled_to_the_server_limits() -> None:
    prepared = prepare_avatar(encode("WEBP", (2000, 500), "RGBA"), limits())
    assert (prepared.file_name, prepared.content_type) == ("avatar.png", "image/png")
    with Image.open(io.BytesIO(prepared.data)) as img:
        assert img.format == "PNG" and img.size == (1024, 256) == (prepared.width, prepared.height)


def test_jpeg_stays_jpeg_and_small_images_are_not_enlarged() -> None:
    prepared = prepare_avatar(encode("JPEG", (300, 200)), limits())
    assert prepared.content_type == "image/jpeg" and prepared.file_name == "avatar.jpg"
    assert (prepared.width, prepared.height) == (300, 200)


def test_png_with_alpha_for_a_jpeg_only_server() -> None:
    prepared = prepare_avatar(encode("PNG", (64, 64), "RGBA"), limits(types=("image/jpeg",)))
    assert prepared.content_type == "image/jpeg"
    with Image.open(io.BytesIO(prepared.data)) as img:
        assert img.format == "JPEG" and img.mode == "RGB"


def test_too_many_bytes_shrinks_until_it_fits() -> None:
    data = noise("PNG", (400, 400))
    prepared = prepare_avatar(data, limits(max_bytes=40_000, types=("image/png",)))
    assert len(prepared.data) <= 40_000 and prepared.content_type == "image/png"
    assert prepared.width < 400


def test_server_without_png_or_jpeg() -> None:
    with pytest.raises(CommandError) as err:
        prepare_avatar(encode("PNG", (8, 8)), limits(types=("image/gif",)))
    assert err.value.code == "avatar_invalid"


def test_store_round_trip(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path / "registry.db")
    assert store.get("ann") is None
    png = encode("PNG", (16, 16))
    stored = apply_change(None, ProfileSetArgs(display_name="Ann", avatar=upload(png)), NOW)
    store.put("ann", stored)
    again = ProfileStore(tmp_path / "registry.db").get("ann")
    assert again is not None and again.profile == stored.profile and again.image == png
    assert again.with_image().avatar_b64 == base64.b64encode(png).decode()
    store.remember_asset("ann", "srv_a", "sha", "asset_1")
    assert store.asset("ann", "srv_a") == ("sha", "asset_1") and store.asset("ann", "srv_b") is None
    store.forget_server("ann", "srv_a")
    assert store.asset("ann", "srv_a") is None
    store.forget_member("ann")
    assert store.get("ann") is None
