"""Composer state (pure): draft, reply target, image attachments with limits, typing heartbeat.

Texts and limits follow ux.md §5 and features 5.4-5.6, 6.3: at most 4 images, each and all
together within ``max_upload_bytes``, the UTF-8 body within ``max_message_bytes``, typing
``true`` at most every 2.5 s while the draft is non-empty and ``false`` when it empties or is sent.
"""

from __future__ import annotations

import base64
import mimetypes
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.core.contracts.chat import MAX_ATTACHMENTS, SendArgs, UploadedImage
from ui.state.model import format_bytes

TYPING_INTERVAL_S = 2.5
IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif"}


@dataclass
class Attachment:
    name: str
    content_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Composer:
    clock: Callable[[], float] = time.monotonic
    draft: str = ""
    reply_to: str | None = None
    reply_author: str = ""
    reply_uid: str = ""
    reply_ping: bool = True
    attachments: list[Attachment] = field(default_factory=list)
    sending: bool = False
    error: str = ""
    _typing_sent_at: float | None = None

    def reset(self) -> None:
        """Channel switch: draft, attachments and reply target reset (5.11)."""
        self.draft = ""
        self.reply_to = None
        self.reply_author = ""
        self.attachments = []
        self.error = ""
        self.sending = False
        self._typing_sent_at = None

    def set_reply(self, message_id: str, author: str, author_uid: str) -> None:
        self.reply_to = message_id
        self.reply_author = author
        self.reply_uid = author_uid
        self.reply_ping = True

    def clear_reply(self) -> None:
        self.reply_to = None
        self.reply_author = ""
        self.reply_uid = ""

    # -- typing heartbeat ---------------------------------------------------------------------------
    def on_draft(self, text: str) -> bool | None:
        """Update the draft; returns ``True``/``False`` when a typing event is due, else ``None``."""
        self.draft = text
        now = self.clock()
        if text.strip():
            if self._typing_sent_at is None or now - self._typing_sent_at >= TYPING_INTERVAL_S:
                self._typing_sent_at = now
                return True
            return None
        if self._typing_sent_at is not None:
            self._typing_sent_at = None
            return False
        return None

    def typing_stop_due(self) -> bool:
        """On send, blur or channel switch: ``False`` is due if ``True`` was sent."""
        due = self._typing_sent_at is not None
        self._typing_sent_at = None
        return due

    # -- attachments ------------------------------------------------------------------------------
    def add_files(self, paths: list[Path], max_upload: int) -> str:
        """Attach image files; returns the error text (or "")."""
        items = []
        for p in paths:
            ctype = mimetypes.guess_type(p.name)[0] or ""
            if ctype not in IMAGE_TYPES:
                self.error = "Paste or choose an image file."
                return self.error
            items.append(Attachment(p.name, ctype, p.read_bytes()))
        return self.add_images(items, max_upload)

    def replace_file(self, index: int, path: Path, max_upload: int) -> str:
        """Put another image file in place ``index`` (the preview card's ✎)."""
        if not 0 <= index < len(self.attachments):
            return ""
        ctype = mimetypes.guess_type(path.name)[0] or ""
        if ctype not in IMAGE_TYPES:
            self.error = "Paste or choose an image file."
            return self.error
        data = path.read_bytes()
        if len(data) > max_upload:
            self.error = f"Image is too large. Max {format_bytes(max_upload)}."
            return self.error
        self.error = ""
        self.attachments[index] = Attachment(path.name, ctype, data)
        return ""

    def pasted(self, got: tuple[str, bytes] | str | None, max_upload: int) -> None:
        """What the clipboard gave for Ctrl+V (ux.md 3.8): (content type, bytes) of an image,
        a reason it could not ("too_large" or a sentence), or None (no image: text pastes)."""
        if got is None:
            return
        if isinstance(got, str):
            self.error = f"Image is too large. Max {format_bytes(max_upload)}." if got == "too_large" else got
            return
        ctype, data = got
        ext = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif"}.get(ctype, "png")
        name = f"image-{len(self.attachments) + 1}.{ext}"
        self.add_images([Attachment(name, ctype, data)], max_upload)

    def add_images(self, items: list[Attachment], max_upload: int) -> str:
        self.error = ""
        room = MAX_ATTACHMENTS - len(self.attachments)
        if room <= 0:
            self.error = "Up to 4 images per message."
            return self.error
        for a in items:
            if a.content_type not in IMAGE_TYPES:
                self.error = "Paste or choose an image file."
                return self.error
            if a.size > max_upload:
                self.error = f"Image is too large. Max {format_bytes(max_upload)}."
                return self.error
        if len(items) > room:
            self.error = f"Only the first {room} images were added."
            items = items[:room]
        self.attachments.extend(items)
        return self.error

    def remove_attachment(self, index: int) -> None:
        if 0 <= index < len(self.attachments):
            del self.attachments[index]
            self.error = ""

    # -- sending ----------------------------------------------------------------------------------------
    def build(self, server_id: str, channel_id: str, max_message: int, max_upload: int) -> SendArgs | None:
        """The send arguments, or ``None`` with ``error`` set (or an empty draft: nothing to do)."""
        body = self.draft.strip()
        if not body and not self.attachments:
            return None
        if self.reply_to and self.reply_ping and self.reply_uid:
            token = f"@{self.reply_uid}"
            if token not in body:
                body = f"{token} {body}".strip()
        size = len(body.encode())
        if size > max_message:
            self.error = f"Message is too large. Max {_kb(max_message)}."
            return None
        total = sum(a.size for a in self.attachments)
        if self.attachments and total > max_upload:
            self.error = f"Attachments are too large together. Max {format_bytes(max_upload)} total."
            return None
        self.error = ""
        images = [
            UploadedImage(
                file_name=a.name or f"image-{i + 1}.png",
                content_type=a.content_type,
                data_b64=base64.b64encode(a.data).decode(),
            )
            for i, a in enumerate(self.attachments)
        ]
        return SendArgs(
            server_id=server_id, channel_id=channel_id, body=body, reply_to=self.reply_to, images=images
        )

    def sent(self) -> None:
        self.draft = ""
        self.attachments = []
        self.clear_reply()
        self.sending = False
        self.error = ""

    def failed(self, text: str) -> None:
        self.sending = False
        self.error = text


def _kb(n: int) -> str:
    return f"{n // 1024} KB" if n >= 1024 and n % 1024 == 0 else format_bytes(n)
