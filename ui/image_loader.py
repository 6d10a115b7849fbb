"""Images over the member's bus connection (no Dear PyGui): attachments, avatars and link-preview
images are asked of the stack (which fetched them; the desktop never talks to a backend or a
page's host, ADR 0010) and handed to the texture cache (``ui.images.ImageCache``).

Keys and what stays pinned are the pure rules of ``ui.state.images``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from services.core.contracts.chat import AttachmentRef, ChatMessage
from ui.adapter import error_text
from ui.controller import StackPort
from ui.images import ImageCache
from ui.state import images as keys
from ui.state.model import ViewModel


class ImageLoader:
    def __init__(
        self,
        model: ViewModel,
        images: ImageCache,
        stack: Callable[[], StackPort | None],
        own_avatar: Callable[[], tuple[bytes | None, str]],
        drawn: Callable[[], Iterable[ChatMessage]],
    ) -> None:
        self.model = model
        self.images = images
        self._stack = stack
        self._own_avatar = own_avatar  # (the member's uploaded avatar bytes, its key)
        self._drawn = drawn  # the messages whose rows are on screen
        images.fetch = self.fetch
        images.on_ready = self.ready
        images.pinned = self.shown

    def shown(self) -> set[str]:
        """Texture keys the rows on screen draw (attachments, avatars, drafts): never released."""
        return keys.pinned_keys(self.images.textures, self._drawn())

    def ready(self, key: str) -> None:
        if keys.redraws_rows(key):  # drawn rows keep these until their inputs change
            self.model.redraw_rows("dock")
        else:
            self.model.touch("timeline")

    def fetch(self, m: ChatMessage, att: AttachmentRef) -> None:
        stack = self._stack()
        if stack is None:
            return
        key = ImageCache.key(m, att)
        images = self.images

        def done(data: bytes | None, error: BaseException | None) -> None:
            if error is not None or not data:
                images.failed.add(key)
                images.errors[key] = f"{type(error).__name__}: {str(error)[:200]}" if error else "empty"
                return
            images.put_bytes(key, data, keep=True)

        stack.submit(lambda c: c.attachment_bytes(m, att), done)

    def _wanted(self, key: str) -> tuple[tuple[int | str, int, int] | None, StackPort | None]:
        """The texture for ``key`` if there is one, else the stack to ask when it is not asked
        yet, has not failed and the stack is attached (then marked asked)."""
        images = self.images
        tex = images.textures.get(key)
        if tex is not None or key in images.requested or key in images.failed:
            return tex, None
        stack = self._stack()
        if stack is not None:
            images.requested.add(key)
        return None, stack

    def _put_small(self, key: str, side: int) -> Callable[[bytes | None, BaseException | None], None]:
        images = self.images

        def done(data: bytes | None, error: BaseException | None) -> None:
            if error is not None or not data:
                images.failed.add(key)
                return
            images.put_bytes(key, data, max_side=side)

        return done

    def avatar_texture(self, sid: str, uid: str) -> tuple[int | str, int, int] | None:
        """An uploaded avatar (ux.md 5.1): the member's own from the local profile, others'
        over the member's bus connection (the stack fetched it; never the backend directly)."""
        sm = self.model.servers.get(sid)
        if sm is None:
            return None
        images = self.images
        own, own_key = self._own_avatar()
        if uid == sm.record.user_uid and own is not None:
            key = keys.own_avatar_key(own_key)
            if key not in images.textures and key not in images.failed:
                images.put_bytes(key, own, max_side=keys.AVATAR_SIDE)
            return images.textures.get(key)
        prof = sm.profiles.get(uid)
        if prof is None or prof.avatar_mode != "uploaded" or not prof.avatar_url:
            return None
        key = keys.avatar_key(sid, uid, prof.profile_version)
        tex, stack = self._wanted(key)
        if stack is not None:
            stack.submit(lambda c: c.avatar_bytes(sid, uid), self._put_small(key, keys.AVATAR_SIDE))
        return tex

    def preview_texture(self, m: ChatMessage, index: int) -> tuple[int | str, int, int] | None:
        """The image of link preview ``index`` of ``m``: fetched by the stack, brought over the
        member's bus connection (ADR 0010), never fetched by the desktop from the page's host."""
        if index >= len(m.link_previews) or not m.link_previews[index].image_url or self._stack() is None:
            return None
        key = keys.preview_key(m, index)
        tex, stack = self._wanted(key)
        if stack is not None:
            stack.submit(lambda c: c.preview_image_bytes(m, index), self._put_small(key, keys.PREVIEW_SIDE))
        return tex

    def save(self, m: ChatMessage, att: AttachmentRef, target: Path) -> None:
        """Save… in the lightbox: the bytes again over the bus (textures keep no original bytes)."""
        stack = self._stack()
        if stack is None:
            self.model.toast("Image not saved: the home stack is unreachable.", error=True)
            return
        model = self.model

        def done(data: bytes | None, error: BaseException | None) -> None:
            if error is not None or not data:
                model.toast(f"Image not saved: {error_text(error) if error else 'empty'}", error=True)
                return
            try:
                target.write_bytes(data)
            except OSError as exc:
                model.toast(f"Image not saved: {exc.strerror or type(exc).__name__}", error=True)
                return
            model.toast(f"Image saved to {target.name}.")

        stack.submit(lambda c: c.attachment_bytes(m, att), done)
