"""Images staged in chunks over the member's bus connection before a send (ADR 0010).

``connector.upload`` appends one chunk to ``<root>/<member>/<upload_id>.part``; chunks arrive in
order (the desktop sends them one after another), so the file's size *is* the state and any
connector replica sharing ``OPENCHAT_HOME`` can take the next chunk. A chunk at another offset is
refused with the offset expected. Bounds: one file ≤ ``UPLOAD_MAX_BYTES``, a member's staged
files together ≤ ``UPLOAD_MEMBER_MAX_BYTES``; files older than ``UPLOAD_TTL_S`` are removed on
the member's next upload. ``take`` reads a complete file for a send and deletes it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import time
from pathlib import Path

from services.core.bus import CommandError
from services.core.contracts.blobs import (
    UPLOAD_MAX_BYTES,
    UPLOAD_MEMBER_MAX_BYTES,
    UPLOAD_TTL_S,
    UploadChunkArgs,
    UploadChunkResult,
)


class UploadStager:
    def __init__(
        self, root: Path, *, ttl_s: float = UPLOAD_TTL_S, member_max: int = UPLOAD_MEMBER_MAX_BYTES
    ) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self.member_max = member_max

    def _path(self, member: str, upload_id: str) -> Path:
        return self.root / member / f"{upload_id}.part"

    def _sweep(self, folder: Path) -> int:
        """Remove expired files; return the bytes still staged."""
        total = 0
        now = time.time()
        for path in folder.glob("*.part"):
            try:
                st = path.stat()
            except OSError:
                continue
            if now - st.st_mtime > self.ttl_s:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            else:
                total += st.st_size
        return total

    def _append(self, member: str, args: UploadChunkArgs, data: bytes) -> UploadChunkResult:
        folder = self.root / member
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(member, args.upload_id)
        size = path.stat().st_size if path.exists() else 0
        if args.offset != size:
            raise CommandError("upload_offset", f"expected offset {size}", retryable=False)
        if size + len(data) > args.total or args.total > UPLOAD_MAX_BYTES:
            raise CommandError("too_large", "the upload exceeds its declared or maximum size")
        staged = self._sweep(folder)  # what is on disk now: bounds every chunk, not just the first
        if (args.offset == 0 and staged + args.total > self.member_max) or staged + len(
            data
        ) > self.member_max:
            raise CommandError("too_large", "too many uploads are staged; send or wait", retryable=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        received = size + len(data)
        return UploadChunkResult(upload_id=args.upload_id, received=received, complete=received == args.total)

    async def append(self, member: str, args: UploadChunkArgs) -> UploadChunkResult:
        try:
            data = base64.b64decode(args.data_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CommandError("invalid_payload", "the chunk is not valid base64") from exc
        return await asyncio.to_thread(self._append, member, args, data)

    def _take(self, member: str, upload_id: str) -> bytes:
        path = self._path(member, upload_id)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise CommandError(
                "upload_not_found", "the staged image is gone (expired?): attach it again"
            ) from None

    async def take(self, member: str, upload_id: str) -> bytes:
        return await asyncio.to_thread(self._take, member, upload_id)

    def discard(self, member: str, upload_ids: list[str]) -> None:
        for upload_id in upload_ids:
            with contextlib.suppress(FileNotFoundError):
                self._path(member, upload_id).unlink()
