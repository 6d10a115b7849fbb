"""Image type sniffing and header decoding, as the public backend does them.

``sniff`` follows Go's ``http.DetectContentType`` for the signatures that matter here;
``normalize_content_type`` is the backend's rule (declared type lower-cased without parameters,
sniffed when empty or ``application/octet-stream``); ``decode_dimensions`` reads only the image
header with Pillow (like Go's ``image.DecodeConfig`` for png/jpeg/gif) and never re-encodes.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

_SIGNATURES: list[tuple[bytes, str]] = [
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"BM", "image/bmp"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"%PDF-", "application/pdf"),
]
_BINARY_BYTES = set(range(0x00, 0x09)) | {0x0B} | set(range(0x0E, 0x1B)) | set(range(0x1C, 0x20))

_PIL_FORMATS = {"png": ["PNG"], "jpeg": ["JPEG"], "gif": ["GIF"]}


def sniff(data: bytes) -> str:
    """Content type of ``data`` the way ``http.DetectContentType`` names it (subset)."""
    head = data[:512]
    for signature, ctype in _SIGNATURES:
        if head.startswith(signature):
            return ctype
    if head[:4] == b"RIFF" and head[8:14] == b"WEBPVP":
        return "image/webp"
    if any(b in _BINARY_BYTES for b in head):
        return "application/octet-stream"
    return "text/plain; charset=utf-8"


def normalize_content_type(declared: str, data: bytes) -> str:
    """Declared type, lower-cased without parameters; sniffed when empty or octet-stream."""
    ctype = declared.strip().lower()
    if ctype and ";" in ctype:
        ctype = ctype.split(";", 1)[0].strip()
    if data and ctype in ("", "application/octet-stream"):
        ctype = sniff(data).lower()
    return ctype


def decode_dimensions(
    data: bytes, formats: tuple[str, ...] = ("png", "jpeg", "gif")
) -> tuple[int, int] | None:
    """``(width, height)`` from the image header, or ``None`` when it does not decode.

    Like Go's ``image.DecodeConfig`` the format comes from the bytes, not the declared type, and
    only the registered decoders (``formats``) are tried.
    """
    allowed = [fmt for name in formats for fmt in _PIL_FORMATS[name]]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=allowed) as img:
                width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError):
        return None
    if width <= 0 or height <= 0:
        return None
    return width, height
