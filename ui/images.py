"""Image attachments as textures: fetched once through the adapter (state HTTP API), decoded
with Pillow off the bus thread's hot path, uploaded as Dear PyGui static textures on the main
thread, and bounded (least recently used textures are released)."""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from services.core.contracts.chat import AttachmentRef, ChatMessage

MAX_TEXTURES = 64
MAX_SIDE = 1280


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

    @staticmethod
    def key(m: ChatMessage, att: AttachmentRef) -> str:
        return f"{m.server_id}/{m.channel_id}/{m.id}/{att.attachment_id}"

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

    def put_bytes(self, key: str, data: bytes, max_side: int = MAX_SIDE) -> bool:
        try:
            w, h, arr = decode_rgba(data, max_side)
        except Exception:
            self.failed.add(key)
            return False
        self.put_rgba(key, w, h, arr)
        return True

    def put_rgba(self, key: str, w: int, h: int, arr: Any) -> None:
        dpg = self.dpg
        if self.registry is None:
            self.registry = dpg.add_texture_registry()
        tag = dpg.add_static_texture(w, h, arr, parent=self.registry)
        self.textures[key] = (tag, w, h)
        while len(self.textures) > MAX_TEXTURES:
            _, (old, _, _) = self.textures.popitem(last=False)
            dpg.delete_item(old)
        if self.on_ready is not None:
            self.on_ready(key)
