"""Helpers of the golden-fixture conformance suite (no tests in here).

* ``EXAMPLES`` — the fixture directory: ``$OPENCHAT_SHARED_DIR/protocol/examples`` when set, else
  ``<repo>/../shared/protocol/examples``;
* image builders (Pillow) and a multipart encoder that keeps the recorded part order;
* ``Matcher`` — compares a recorded body with a live one: same keys in the same order, same value
  types, exact values except generated ones (ids are unified one-to-one with the recorded ones,
  timestamps checked for their format, absolute URLs for origin + path).
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

from PIL import Image


def examples_dir() -> Path:
    shared = os.environ.get("OPENCHAT_SHARED_DIR")
    if shared:
        return Path(shared) / "protocol" / "examples"
    return Path(__file__).resolve().parents[2].parent / "shared" / "protocol" / "examples"


EXAMPLES = examples_dir()
RECORDED_ORIGIN = "http://127.0.0.1:18080"

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
TS_NANOS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
GENERATED_ID = re.compile(r"^(msg|att|asset)_[0-9a-f]{8}$")
TIME_KEYS = frozenset({"created_at", "updated_at", "left_at", "expires_at", "acked_at", "ts"})


def load(name: str) -> dict[str, Any]:
    value = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    assert isinstance(value, dict)
    return value


def frames(name: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in (EXAMPLES / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


def all_fixture_names() -> set[str]:
    return {p.name for p in EXAMPLES.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl")}


def compact(value: Any) -> bytes:
    return (json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def ordered(raw: bytes | str) -> Any:
    """Parse JSON keeping key order visible (objects as lists of pairs)."""
    return json.loads(raw, object_pairs_hook=lambda pairs: ("obj", pairs))


# ---------------------------------------------------------------------------- images


def image_bytes(fmt: str, width: int, height: int) -> bytes:
    buf = io.BytesIO()
    mode = "P" if fmt == "GIF" else "RGB"
    Image.new(mode, (width, height)).save(buf, format=fmt)
    return buf.getvalue()


def png(width: int = 8, height: int = 8) -> bytes:
    return image_bytes("PNG", width, height)


def jpeg(width: int = 8, height: int = 8) -> bytes:
    return image_bytes("JPEG", width, height)


def gif(width: int = 8, height: int = 8) -> bytes:
    return image_bytes("GIF", width, height)


def padded(data: bytes, size: int) -> bytes:
    """``data`` followed by zero bytes up to ``size`` (the header still decodes)."""
    assert len(data) <= size
    return data + b"\x00" * (size - len(data))


def multipart(parts: list[tuple[str, str | None, str | None, bytes]]) -> tuple[bytes, str]:
    """``(body, content_type)`` for parts ``(name, filename, content_type, data)`` in that order."""
    boundary = "oc" + uuid.uuid4().hex
    out = io.BytesIO()
    for name, filename, ctype, data in parts:
        out.write(f"--{boundary}\r\n".encode())
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out.write(f"Content-Disposition: {disposition}\r\n".encode())
        if ctype is not None:
            out.write(f"Content-Type: {ctype}\r\n".encode())
        out.write(b"\r\n")
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


# ---------------------------------------------------------------------------- comparison


class Matcher:
    """Recorded vs live comparison with one-to-one unification of generated ids."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.ids: dict[str, str] = {}

    def learn(self, recorded: str, live: str) -> None:
        known = self.ids.get(recorded)
        assert known in (None, live), f"recorded id {recorded} maps to both {known} and {live}"
        assert live not in {v for k, v in self.ids.items() if k != recorded}, f"live id {live} reused"
        self.ids[recorded] = live

    def substitute(self, text: str) -> str:
        """A recorded string as the live server must produce it (ids and origin replaced)."""
        text = text.replace(RECORDED_ORIGIN, self.base_url)
        text = text.replace("ws" + RECORDED_ORIGIN[4:], "ws" + self.base_url[4:])
        for recorded, live in self.ids.items():
            text = text.replace(recorded, live)
        return text

    def match(self, recorded: Any, live: Any, path: str = "$") -> None:
        assert type(live) is type(recorded), (
            f"{path}: type {type(live).__name__} != {type(recorded).__name__}"
        )
        if isinstance(recorded, dict):
            assert list(live) == list(recorded), f"{path}: keys {list(live)} != {list(recorded)}"
            for key in recorded:
                self._field(key, recorded[key], live[key], f"{path}.{key}")
        elif isinstance(recorded, list):
            assert len(live) == len(recorded), f"{path}: {len(live)} items != {len(recorded)}"
            for index, (rec, liv) in enumerate(zip(recorded, live, strict=True)):
                self.match(rec, liv, f"{path}[{index}]")
        else:
            assert live == recorded, f"{path}: {live!r} != {recorded!r}"

    def _field(self, key: str, recorded: Any, live: Any, path: str) -> None:
        if isinstance(recorded, str) and isinstance(live, str):
            if key in TIME_KEYS:
                pattern = TS_NANOS if key == "ts" else TS
                assert pattern.match(live), f"{path}: {live!r} is not an RFC 3339 timestamp"
                return
            if GENERATED_ID.match(recorded):
                assert live[:4] == recorded[:4] or live.split("_")[0] == recorded.split("_")[0], path
                assert GENERATED_ID.match(live), f"{path}: {live!r} is not a generated id"
                self.learn(recorded, live)
                return
            if key == "client_id":
                assert UUID4.match(live), f"{path}: {live!r} is not a UUIDv4"
                self.learn(recorded, live)
                return
            assert live == self.substitute(recorded), f"{path}: {live!r} != {self.substitute(recorded)!r}"
            return
        self.match(recorded, live, path)
