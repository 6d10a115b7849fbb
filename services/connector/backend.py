"""HTTP client of one OpenChat backend (wire §1-§9), plus the URL rules of the stack.

- base URLs keep their path prefix (rule D8): every API path, HTTP and realtime, is appended to it;
- ``X-OpenChat-User-UID`` and ``X-OpenChat-Device-ID`` go on **every** request, reads included (rule D7);
  the realtime URL carries them as query parameters too (the headers are added by the session);
- every response is size-bounded and time-bounded and validated with ``contracts.wire`` models;
- errors become ``BackendError(code, message, retryable, status)``: the backend's flat envelope
  when it sent one, a synthetic code otherwise (non-JSON 404/405 bodies included); ``404``/``405``/
  ``501`` on a Profile B path raise ``Unsupported`` (a quiet "not on this server", never shown as
  an error);
- attachment and avatar URLs are rewritten to the base URL the stack uses (the backend builds them
  from its own configured public base URL).

Nothing here logs a message body or a response body.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ValidationError

from services.connector.history import LARGE_ANSWER_ITEMS, HistoryFormatError, HistoryPage, HistoryParser
from services.core.bus import CommandError
from services.core.contracts import wire
from services.core.rtc import identity_headers

log = logging.getLogger("openchat.connector.backend")

W = TypeVar("W", bound=BaseModel)

DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
HISTORY_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1"})
UNSUPPORTED_STATUSES = frozenset({404, 405, 501})


class BackendError(Exception):
    """A failed backend call, with the error the member sees."""

    def __init__(
        self, code: str, message: str, *, retryable: bool = False, status: int | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.status = status

    def to_command_error(self) -> CommandError:
        return CommandError(self.code, self.message[:2000], self.retryable)


class Unreachable(BackendError):
    """The backend could not be reached (DNS, refused, reset, timeout)."""


class Unsupported(BackendError):
    """An optional (Profile B) endpoint this server does not have (404/405/501)."""


@dataclass(frozen=True)
class Identity:
    """What a server learns about the member: the projected uid and the device id. Nothing else."""

    user_uid: str
    device_id: str

    def headers(self) -> dict[str, str]:
        return identity_headers(self.user_uid, self.device_id)


def normalize_base_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash, query or fragment."""
    raw = url.strip()
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendError("invalid_url", "Backend URL is invalid.")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise BackendError("invalid_url", "Backend URL is invalid (no query, fragment or credentials).")
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc.lower(), path, "", ""))


def is_local(base_url: str) -> bool:
    return (urlsplit(base_url).hostname or "") in LOCAL_HOSTS


def realtime_url(base_url: str, ident: Identity, server_id: str, resume_from: str | None = None) -> str:
    """``ws(s)://host/prefix/v1/realtime?server_id=&user_uid=&device_id=`` (the backend URL's path
    prefix kept, rule D8; wire §10)."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query: dict[str, str] = {"server_id": server_id, "user_uid": ident.user_uid, "device_id": ident.device_id}
    if resume_from is not None:
        query["resume_from"] = resume_from
    return urlunsplit((scheme, parts.netloc, parts.path + "/v1/realtime", urlencode(query), ""))


def rewrite_origin(url: str, base_url: str) -> str:
    """Point an absolute attachment/avatar URL at ``base_url`` (keeps the API path from ``/v1/``)."""
    parts = urlsplit(url)
    path = parts.path
    index = path.find("/v1/")
    if index < 0:
        return ""  # not an API URL of this backend: drop rather than follow it elsewhere
    base = urlsplit(base_url)
    return urlunsplit((base.scheme, base.netloc, base.path + path[index:], parts.query, ""))


def _error_from_response(status: int, body: bytes) -> BackendError:
    retryable = status >= 500 or status == 429
    try:
        parsed = wire.ErrorBody.model_validate_json(body)
    except (ValidationError, ValueError):
        parsed = None
    if parsed is not None and parsed.code:
        return BackendError(
            parsed.code[:64], parsed.message[:500], retryable=parsed.retryable or retryable, status=status
        )
    code = {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
        429: "backend_rate_limited",
    }.get(status, "backend_error")
    return BackendError(code, f"the server answered HTTP {status}", retryable=retryable, status=status)


class BackendClient:
    """One backend as seen by one identity. Cheap: shares the connector's ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        ident: Identity,
        *,
        total_timeout_s: float = 30.0,
    ) -> None:
        self.http = http
        self.base_url = normalize_base_url(base_url)
        self.ident = ident
        self.total_timeout_s = total_timeout_s
        self.large_answers = 0  # history answers of ``LARGE_ANSWER_ITEMS`` or more (memory release)

    def with_identity(self, ident: Identity) -> BackendClient:
        return BackendClient(self.http, self.base_url, ident, total_timeout_s=self.total_timeout_s)

    # -- transport -------------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        json_body: Any = None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
        data: dict[str, str] | None = None,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        optional: bool = False,
        headers: dict[str, str] | None = None,
        sink: Callable[[bytes], None] | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; return ``(status, body)`` of a 2xx answer, else raise ``BackendError``.
        With ``sink``, a 2xx body is handed to it chunk by chunk as it arrives (still bounded to
        ``max_bytes``) and the returned body is empty."""
        url = self.base_url + path
        kwargs: dict[str, Any] = {"headers": {**(headers or {}), **self.ident.headers()}}
        if params:
            kwargs["params"] = params
        if json_body is not None:
            kwargs["json"] = json_body
        if files is not None:
            kwargs["files"] = files
            kwargs["data"] = data or {}
        try:
            async with asyncio.timeout(self.total_timeout_s):
                async with self.http.stream(method, url, **kwargs) as response:
                    status = response.status_code
                    ok = 200 <= status < 300
                    body = await _read_bounded(
                        response,
                        max_bytes if ok or sink is None else DEFAULT_MAX_RESPONSE_BYTES,
                        sink if ok else None,
                    )
        except TimeoutError as exc:
            raise Unreachable(
                "backend_timeout",
                f"the server did not answer within {self.total_timeout_s:g} s",
                retryable=True,
            ) from exc
        except httpx.TimeoutException as exc:
            raise Unreachable("backend_timeout", "the server did not answer in time", retryable=True) from exc
        except httpx.TransportError as exc:
            raise Unreachable(
                "backend_unreachable", f"cannot reach {self.base_url}: {type(exc).__name__}", retryable=True
            ) from exc
        if 200 <= status < 300:
            return status, body
        error = _error_from_response(status, body)
        if (
            optional
            and status in UNSUPPORTED_STATUSES
            and error.code
            in (
                "not_found",
                "method_not_allowed",
                "backend_error",
            )
        ):
            raise Unsupported("unsupported", f"{path} is not supported by this server", status=status)
        raise error

    async def get_model(self, path: str, model: type[W], **kwargs: Any) -> W:
        _, body = await self.request("GET", path, **kwargs)
        return parse(model, body, path)

    # -- endpoints -------------------------------------------------------------------------------
    async def capabilities(self) -> tuple[wire.Capabilities, str]:
        """``/v1/client/capabilities``, falling back to the legacy ``/client/capabilities``."""
        try:
            return await self.get_model(
                "/v1/client/capabilities", wire.Capabilities
            ), "/v1/client/capabilities"
        except Unreachable:
            raise
        except BackendError as first:
            try:
                caps = await self.get_model("/client/capabilities", wire.Capabilities)
            except Unreachable:
                raise
            except BackendError:
                raise first from None
            return caps, "/client/capabilities"

    async def directory(self) -> wire.ServerDirectory:
        return await self.get_model("/v1/servers", wire.ServerDirectory)

    async def leave(self, server_id: str) -> wire.LeaveResult:
        _, body = await self.request("DELETE", f"/v1/servers/{_seg(server_id)}/membership")
        return parse(wire.LeaveResult, body, "membership")

    async def channels(self, server_id: str) -> wire.ChannelList:
        return await self.get_model(f"/v1/servers/{_seg(server_id)}/channels", wire.ChannelList)

    async def members(self, server_id: str) -> wire.MemberList:
        return await self.get_model(f"/v1/servers/{_seg(server_id)}/members", wire.MemberList)

    async def messages(self, channel_id: str, limit: int, before: str | None = None) -> HistoryPage:
        """A history page, parsed while it streams in (``history.py``): at most the newest
        ``limit`` items are kept whatever the server sends, each validated on its own (invalid
        ones are listed in ``rejected``, logged once per page with reasons, never bodies); the
        answer is bounded to ``HISTORY_MAX_RESPONSE_BYTES``."""
        params = [("limit", str(limit))]
        if before is not None:
            params.append(("before", before))
        parser = HistoryParser(limit)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def feed(chunk: bytes) -> None:
            # invalid UTF-8 becomes U+FFFD (one item's text, not the whole page, is affected)
            parser.feed(decoder.decode(chunk).encode())

        path = f"/v1/channels/{_seg(channel_id)}/messages"
        try:
            await self.request("GET", path, params=params, max_bytes=HISTORY_MAX_RESPONSE_BYTES, sink=feed)
            parser.feed(decoder.decode(b"", final=True).encode())
            page = parser.finish()
        except HistoryFormatError as exc:
            log.warning("invalid backend payload", extra={"what": "history", "reason": str(exc)})
            raise BackendError(
                "bad_backend_response", "the server sent an invalid history payload", retryable=True
            ) from exc
        if page.total >= LARGE_ANSWER_ITEMS:
            self.large_answers += 1
        if page.truncated:
            log.warning(
                "history answer longer than asked; older items ignored",
                extra={"channel_id": channel_id[:128], "asked": limit, "sent": page.total},
            )
        return page

    async def post_message(
        self,
        channel_id: str,
        body: str,
        reply_to: str | None,
        images: list[tuple[str, bytes, str]],
    ) -> wire.Message:
        path = f"/v1/channels/{_seg(channel_id)}/messages"
        if images:
            fields = {"body": body}
            if reply_to:
                fields["reply_to_message_id"] = reply_to
            files = [("files", image) for image in images]
            _, raw = await self.request("POST", path, files=files, data=fields)
        else:
            doc: dict[str, Any] = {"body": body}
            if reply_to:
                doc["reply_to_message_id"] = reply_to
            _, raw = await self.request("POST", path, json_body=doc)
        return parse(wire.MessageCreateResponse, raw, "message create").message

    async def profiles(self, uids: list[str]) -> wire.ProfileBatch:
        if not 1 <= len(uids) <= 100:
            raise BackendError("invalid_query", "profiles:batch takes 1 to 100 uids")
        return await self.get_model(
            "/v1/profiles:batch", wire.ProfileBatch, params=[("user_uid", u) for u in uids]
        )

    # -- the member's own profile (wire §9; optional: ``Unsupported`` on 404/405/501) -----------
    async def own_profile(self) -> wire.Profile:
        """``GET /v1/profile/me``."""
        _, body = await self.request("GET", "/v1/profile/me", optional=True)
        return parse(wire.Profile, body, "profile")

    async def put_own_profile(self, doc: dict[str, Any], if_match: int | None) -> wire.Profile:
        """``PUT /v1/profile/me`` (a full replace) with ``If-Match: <profile_version>``."""
        headers = {"If-Match": str(if_match)} if if_match is not None else None
        _, body = await self.request("PUT", "/v1/profile/me", json_body=doc, headers=headers, optional=True)
        return parse(wire.Profile, body, "profile")

    async def upload_avatar(self, file_name: str, data: bytes, content_type: str) -> wire.AvatarAsset:
        """``POST /v1/profile/avatar``, the image in the multipart part ``file``."""
        _, body = await self.request(
            "POST", "/v1/profile/avatar", files=[("file", (file_name, data, content_type))], optional=True
        )
        return parse(wire.AvatarAsset, body, "avatar upload")

    async def read_ack(self, channel_id: str) -> wire.ReadAckResponse:
        """``GET /v1/channels/{cid}/read-ack`` (Profile B); ``Unsupported`` on 404/405/501."""
        _, body = await self.request("GET", f"/v1/channels/{_seg(channel_id)}/read-ack", optional=True)
        return parse(wire.ReadAckResponse, body, "read-ack")

    async def put_read_ack(self, channel_id: str, last_read_message_id: str) -> wire.ReadAckResponse:
        """``PUT /v1/channels/{cid}/read-ack {last_read_message_id}`` (Profile B, monotonic)."""
        _, body = await self.request(
            "PUT",
            f"/v1/channels/{_seg(channel_id)}/read-ack",
            json_body={"last_read_message_id": last_read_message_id},
            optional=True,
        )
        return parse(wire.ReadAckResponse, body, "read-ack")

    async def delete_message(self, channel_id: str, message_id: str) -> None:
        await self.request(
            "DELETE", f"/v1/channels/{_seg(channel_id)}/messages/{_seg(message_id)}", optional=True
        )


def parse(model: type[W], body: bytes, what: str) -> W:
    """Validate a backend payload; a bad one is a retryable ``bad_backend_response``."""
    try:
        return model.model_validate_json(body)
    except (ValidationError, ValueError) as exc:
        errors = exc.error_count() if isinstance(exc, ValidationError) else 1
        log.warning("invalid backend payload", extra={"what": what, "errors": errors, "size": len(body)})
        raise BackendError(
            "bad_backend_response", f"the server sent an invalid {what} payload", retryable=True
        ) from exc


def parse_json(body: bytes | str) -> Any:
    return json.loads(body)


def _seg(value: str) -> str:
    """A path segment: ids are opaque, so percent-encode anything that is not id-safe."""
    from urllib.parse import quote

    return quote(value, safe="_-.~:")


async def _read_bounded(
    response: httpx.Response, max_bytes: int, sink: Callable[[bytes], None] | None = None
) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BackendError(
            "response_too_large", f"the server's answer exceeds {max_bytes} bytes", retryable=False
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise BackendError(
                "response_too_large", f"the server's answer exceeds {max_bytes} bytes", retryable=False
            )
        if sink is not None:
            sink(chunk)
        else:
            chunks.append(chunk)
    return b"".join(chunks)
