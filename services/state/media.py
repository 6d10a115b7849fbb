"""Attachment and avatar bytes: fetched from the backend, cached on disk with an LRU size bound.

``MediaCache`` is a directory (``$OPENCHAT_HOME/cache/media``) of ``<sha256>.bin`` files with a
``<sha256>.type`` sidecar holding the content type; a hit refreshes the file's mtime, and after
each store the least recently used files are removed until the total fits ``max_bytes``. Keys are
scoped by (member, server, URL), so one member's cached bytes are never looked up for another.

``MediaFetcher`` fetches one URL with httpx: only http(s), only from the origin of the server's
recorded base URL (no redirects followed), with the member's UID/device headers, timeouts and a
size bound enforced while streaming. Authorization (is the message in this member's view?) is the
HTTP layer's job, before anything here runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from services.core.contracts.chat import ServerRecord

SAFE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


class MediaError(Exception):
    """The bytes cannot be served (status is the HTTP status to answer)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Media:
    data: bytes
    content_type: str


def safe_content_type(value: str) -> str:
    """Images we know are served as such; anything else as opaque bytes."""
    base = value.split(";", 1)[0].strip().lower()
    return base if base in SAFE_IMAGE_TYPES else "application/octet-stream"


class MediaCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    @staticmethod
    def key(member: str, server_id: str, url: str) -> str:
        return hashlib.sha256(f"{member}\0{server_id}\0{url}".encode()).hexdigest()

    def get(self, key: str) -> Media | None:
        data_path, type_path = self.root / f"{key}.bin", self.root / f"{key}.type"
        try:
            data = data_path.read_bytes()
            content_type = type_path.read_text()
            os.utime(data_path)  # LRU: a hit is a use
        except OSError:
            return None
        return Media(data, content_type)

    def read_range(self, key: str, offset: int, length: int) -> tuple[bytes, str, int] | None:
        """Bytes ``offset .. offset+length`` of a cached file, its content type and total size
        (a hit is a use); None when it is not cached."""
        data_path, type_path = self.root / f"{key}.bin", self.root / f"{key}.type"
        try:
            content_type = type_path.read_text()
            with data_path.open("rb") as fh:
                total = os.fstat(fh.fileno()).st_size
                fh.seek(min(offset, total))
                data = fh.read(length)
            os.utime(data_path)
        except OSError:
            return None
        return data, content_type, total

    def put(self, key: str, media: Media) -> None:
        if len(media.data) > self.max_bytes:
            return  # would evict everything and still not fit
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.{os.getpid()}.tmp"
        tmp.write_bytes(media.data)
        (self.root / f"{key}.type").write_text(media.content_type)
        tmp.replace(self.root / f"{key}.bin")
        self.evict()

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("*.bin"))

    def evict(self) -> None:
        entries: list[tuple[float, int, Path]] = []
        for path in self.root.glob("*.bin"):
            try:
                st = path.stat()
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            for victim in (path, path.with_suffix(".type")):
                with contextlib.suppress(FileNotFoundError):
                    victim.unlink()
            total -= size


def address_allowed(address: str, *, allow_private: bool = False) -> bool:
    """Only globally routable unicast addresses, unless ``allow_private``."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if allow_private:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


async def public_host(url: str, *, allow_private: bool) -> bool:
    """Whether ``url`` is http(s) and every address its host resolves to is allowed (a message
    can never make the home server fetch something on the household network)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]) for info in infos}
    return bool(addresses) and all(address_allowed(a, allow_private=allow_private) for a in addresses)


def same_origin(url: str, base_url: str) -> bool:
    u, b = urlsplit(url), urlsplit(base_url)
    if u.scheme not in ("http", "https") or u.scheme != b.scheme:
        return False
    return (u.hostname or "").lower() == (b.hostname or "").lower() and u.port == b.port


class MediaFetcher:
    def __init__(
        self, cache: MediaCache, client: httpx.AsyncClient, max_bytes: int, timeout_s: float
    ) -> None:
        self.cache = cache
        self.client = client
        self.max_bytes = max_bytes
        self.timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))

    async def get(
        self,
        member: str,
        record: ServerRecord,
        url: str,
        declared_type: str,
        declared_bytes: int | None = None,
    ) -> Media:
        if not same_origin(url, record.base_url):
            raise MediaError(404, "the media URL is not on the server's origin")
        if declared_bytes is not None and declared_bytes > self.max_bytes:
            raise MediaError(413, "the attachment exceeds the media size limit")
        key = self.cache.key(member, record.server_id, url)
        cached = await asyncio.to_thread(self.cache.get, key)
        if cached is not None:
            return cached
        media = await self._fetch(record, url, declared_type)
        await asyncio.to_thread(self.cache.put, key, media)
        return media

    async def read_range(
        self,
        member: str,
        record: ServerRecord,
        url: str,
        declared_type: str,
        declared_bytes: int | None,
        offset: int,
        length: int,
    ) -> tuple[bytes, str, int]:
        """One chunk of a backend file (fetched into the cache on the first chunk)."""
        key = self.cache.key(member, record.server_id, url)
        hit = await asyncio.to_thread(self.cache.read_range, key, offset, length)
        if hit is not None:
            return hit
        media = await self.get(member, record, url, declared_type, declared_bytes)
        return media.data[offset : offset + length], media.content_type, len(media.data)

    async def preview_range(
        self, member: str, server_id: str, url: str, offset: int, length: int, *, allow_private: bool
    ) -> tuple[bytes, str, int]:
        """One chunk of a link-preview image: any public http(s) origin (the host is resolved and
        private, loopback, link-local and reserved addresses refused unless ``allow_private``),
        no member headers sent, and only image types kept."""
        key = self.cache.key(member, server_id, "preview\0" + url)
        hit = await asyncio.to_thread(self.cache.read_range, key, offset, length)
        if hit is not None:
            return hit
        if not await public_host(url, allow_private=allow_private):
            raise MediaError(404, "the preview image's host is not a public address")
        media = await self._fetch(None, url, "application/octet-stream")
        if media.content_type not in SAFE_IMAGE_TYPES:
            raise MediaError(415, "the preview image is not a PNG, JPEG, GIF or WEBP image")
        await asyncio.to_thread(self.cache.put, key, media)
        return media.data[offset : offset + length], media.content_type, len(media.data)

    async def _fetch(self, record: ServerRecord | None, url: str, declared_type: str) -> Media:
        headers = (
            {"X-OpenChat-User-UID": record.user_uid, "X-OpenChat-Device-ID": record.device_id}
            if record is not None
            else {}
        )
        try:
            async with self.client.stream(
                "GET", url, headers=headers, timeout=self.timeout, follow_redirects=False
            ) as response:
                if response.status_code != 200:
                    raise MediaError(502, f"the backend answered HTTP {response.status_code}")
                length = response.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > self.max_bytes:
                    raise MediaError(502, "the backend's file exceeds the media size limit")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise MediaError(502, "the backend's file exceeds the media size limit")
                    chunks.append(chunk)
                content_type = response.headers.get("content-type") or declared_type
        except httpx.HTTPError as exc:
            raise MediaError(502, f"the backend could not be reached ({type(exc).__name__})") from exc
        return Media(b"".join(chunks), safe_content_type(content_type))
