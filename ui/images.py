"""Image attachments as textures: fetched once through the adapter (state HTTP API), decoded
with Pillow, uploaded as Dear PyGui static textures on the main thread, and bounded.

Memory: a card needs at most 720 px a side (360 x 240 at 200 %), so cards are decoded that small
(a 1280 px decode is 3x the texture memory); the original bytes (compressed, small) are kept in a
bounded LRU so the lightbox can show one full-size texture at a time. Textures are released least
recently used first, but never one a row on screen still draws (``pinned``)."""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from services.core.contracts.chat import AttachmentRef, ChatMessage
from ui.state.images import attachment_key

MAX_TEXTURES = 64
MAX_SIDE = 1280  # the lightbox's full-size texture
CARD_SIDE = 720  # cards in the timeline
RAW_BUDGET = 24 * 1024 * 1024  # original image bytes kept for the lightbox


def decode_rgba(data: bytes, max_side: int = MAX_SIDE) -> tuple[int, int, Any]:
    """PNG/JPEG/GIF bytes → (width, height, float32 RGBA array in 0..1)."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.seek(0)
        rgba = img.convert("RGBA")
        rgba.thumbnail((max_side, max_side))
        arr = np.asarray(rgba, dtype=np.float32).reshape(-1) / 255.0
        return rgba.width, rgba.height, arr


class ImageCache:
    def __init__(self, dpg: Any, fetch: Callable[[ChatMessage, AttachmentRef], None]) -> None:
        self.dpg = dpg
        self.fetch = fetch
        self.registry: int | str | None = None
        self.textures: OrderedDict[str, tuple[int | str, int, int]] = OrderedDict()
        self.requested: set[str] = set()
        self.failed: set[str] = set()
        self.errors: dict[str, str] = {}
        self.on_ready: Callable[[str], None] | None = None
        self.raw: OrderedDict[str, bytes] = OrderedDict()
        self.raw_bytes = 0
        self.full: tuple[str, tuple[int | str, int, int]] | None = None  # the lightbox's texture
        self.pinned: Callable[[], set[str]] = set  # keys drawn by rows on screen (never released)

    @staticmethod
    def key(m: ChatMessage, att: AttachmentRef) -> str:
        return attachment_key(m, att)

    def texture_for(self, m: ChatMessage, att: AttachmentRef) -> tuple[int | str, int, int] | None:
        k = self.key(m, att)
        tex = self.textures.get(k)
        if tex is not None:
            self.textures.move_to_end(k)
            return tex
        if k not in self.requested and k not in self.failed:
            self.requested.add(k)
            self.fetch(m, att)
        return None

    def put_bytes(self, key: str, data: bytes, max_side: int = CARD_SIDE, keep: bool = False) -> bool:
        """Decode ``data`` into the texture ``key``; ``keep``: remember the bytes for ``full``."""
        try:
            w, h, arr = decode_rgba(data, max_side)
        except Exception:
            self.failed.add(key)
            return False
        if keep:
            self.raw[key] = data
            self.raw_bytes += len(data)
            while self.raw_bytes > RAW_BUDGET and len(self.raw) > 1:
                _, old = self.raw.popitem(last=False)
                self.raw_bytes -= len(old)
        self.put_rgba(key, w, h, arr)
        return True

    def full_texture(self, key: str) -> tuple[int | str, int, int] | None:
        """The lightbox's texture of ``key``: full size (up to 1280 px) from the kept bytes, else
        the card's. One at a time: the previous full-size texture is released."""
        if self.full is not None and self.full[0] == key:
            return self.full[1]
        data = self.raw.get(key)
        if data is None:
            return self.textures.get(key)
        self.release_full()
        try:
            w, h, arr = decode_rgba(data, MAX_SIDE)
        except Exception:
            return self.textures.get(key)
        if self.registry is None:
            self.registry = self.dpg.add_texture_registry()
        tag = self.dpg.add_static_texture(w, h, arr, parent=self.registry)
        self.full = (key, (tag, w, h))
        return self.full[1]

    def release_full(self) -> None:
        if self.full is not None:
            self.dpg.delete_item(self.full[1][0])
            self.full = None

    def put_rgba(self, key: str, w: int, h: int, arr: Any) -> None:
        dpg = self.dpg
        if self.registry is None:
            self.registry = dpg.add_texture_registry()
        tag = dpg.add_static_texture(w, h, arr, parent=self.registry)
        self.textures[key] = (tag, w, h)
        if len(self.textures) > MAX_TEXTURES:
            keep = self.pinned() | {key}
            for old_key in [k for k in self.textures if k not in keep]:
                if len(self.textures) <= MAX_TEXTURES:
                    break
                old, _, _ = self.textures.pop(old_key)
                dpg.delete_item(old)
        if self.on_ready is not None:
            self.on_ready(key)
