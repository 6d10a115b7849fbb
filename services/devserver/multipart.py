"""In-memory ``multipart/form-data`` parsing with Go's ``ParseMultipartForm`` semantics.

* a part with a ``filename`` parameter that is non-empty is a *file*, any other named part is a
  *value* (so a ``files`` part without a file name is not an attachment);
* the file name is ``filepath.Base`` of the given name;
* a missing boundary, a malformed body, a missing final boundary or more than ``MAX_PARTS`` parts
  is an error (``MultipartError``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

MAX_PARTS = 1000


class MultipartError(ValueError):
    """The body is not a well-formed multipart form."""


@dataclass
class FilePart:
    file_name: str
    content_type: str
    data: bytes


@dataclass
class Form:
    values: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[FilePart]] = field(default_factory=dict)

    def value(self, name: str) -> str:
        found = self.values.get(name)
        return found[0] if found else ""


def is_multipart(content_type: str) -> bool:
    return content_type.strip().lower().startswith("multipart/form-data")


def go_base(name: str) -> str:
    """``filepath.Base`` on Linux."""
    if name == "":
        return "."
    stripped = name.rstrip("/")
    if stripped == "":
        return "/"
    return stripped.rsplit("/", 1)[-1]


def _param(header_value: bytes, key: bytes) -> str | None:
    _, params = parse_options_header(header_value)
    raw = params.get(key)
    return None if raw is None else raw.decode("utf-8", "replace")


def parse_form(content_type: str, body: bytes) -> Form:
    """Parse ``body`` as the multipart form announced by ``content_type``."""
    _, params = parse_options_header(content_type.encode("latin-1", "replace"))
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError("no multipart boundary param in Content-Type")

    form = Form()
    state: dict[str, object] = {"ended": False, "parts": 0}
    headers: dict[str, bytes] = {}
    header_name: list[bytes] = []
    header_value: list[bytes] = []
    data: list[bytes] = []

    def on_part_begin() -> None:
        headers.clear()
        data.clear()
        parts = int(str(state["parts"])) + 1
        if parts > MAX_PARTS:
            raise MultipartError("multipart: message too large")
        state["parts"] = parts

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        header_name.append(buf[start:end])

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        header_value.append(buf[start:end])

    def on_header_end() -> None:
        headers[b"".join(header_name).decode("latin-1").strip().lower()] = b"".join(header_value).strip()
        header_name.clear()
        header_value.clear()

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        data.append(buf[start:end])

    def on_part_end() -> None:
        disposition = headers.get("content-disposition", b"")
        name = _param(disposition, b"name") or ""
        if not name:
            return
        filename = _param(disposition, b"filename")
        payload = b"".join(data)
        if filename:
            ctype = headers.get("content-type", b"").decode("latin-1").strip()
            form.files.setdefault(name, []).append(FilePart(go_base(filename), ctype, payload))
        else:
            form.values.setdefault(name, []).append(payload.decode("utf-8", "replace"))

    def on_end() -> None:
        state["ended"] = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
        max_header_count=64,
        max_header_size=16 * 1024,
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartError:
        raise
    except Exception as exc:
        raise MultipartError(str(exc)) from exc
    if not state["ended"]:
        raise MultipartError("multipart: NextPart: EOF")
    return form
