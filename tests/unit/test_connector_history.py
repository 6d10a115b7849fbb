"""The bounded, streaming history parser (``services/connector/history.py``): pure, no I/O."""

from __future__ import annotations

import json

import pytest

from services.connector.history import HistoryFormatError, HistoryParser, parse_history


def doc(n: int, **changes: object) -> dict[str, object]:
    d: dict[str, object] = {
        "id": f"m{n}",
        "channel_id": "c1",
        "author_uid": "u",
        "body": f"body {n}",
        "created_at": f"2026-01-01T00:00:{n % 60:02d}Z",
    }
    d.update(changes)
    return d


def body(items: list[bytes], **top: object) -> bytes:
    head = json.dumps({"channel_id": "c1", **top})[:-1].encode()
    return head + b',"messages":[' + b",".join(items) + b"]}"


def test_keeps_only_the_newest_items_of_an_overlong_answer() -> None:
    items = [json.dumps(doc(n)).encode() for n in range(1000)]
    page = parse_history(body(items, next_cursor="cur_1"), keep=10, chunk=7)  # tiny chunks too
    assert [m.id for m in page.messages] == [f"m{n}" for n in range(990, 1000)]
    assert (page.total, page.truncated, page.rejected_count) == (1000, 990, 0)
    assert page.channel_id == "c1" and page.next_cursor == "cur_1"


def test_invalid_items_are_rejected_one_by_one_with_reasons() -> None:
    items = [
        json.dumps(doc(1)).encode(),
        json.dumps(doc(2, author_uid=5)).encode(),
        json.dumps(doc(3, id="x" * 201)).encode(),
        json.dumps(doc(4, id="a\nb")).encode(),
        b"[1, 2]",
        json.dumps(doc(5))[:-1].encode() + b',"deep":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        json.dumps(doc(6, body="y" * 2000)).encode(),
        json.dumps(doc(7)).encode(),
    ]
    parser = HistoryParser(keep=100, max_item_chars=1000)
    data = body(items)
    for start in range(0, len(data), 4096):
        parser.feed(data[start : start + 4096])
    page = parser.finish()
    assert [m.id for m in page.messages] == ["m1", "m7"]
    assert [(r.index, r.message_id, r.reason) for r in page.rejected] == [
        (1, "m2", "author_uid: string_type"),
        (2, None, "id: not 1-200 printable characters"),
        (3, None, "id: not 1-200 printable characters"),
        (4, None, "message: expected an object, got list"),
        (5, "m5", "message: nested deeper than 32"),
        (6, "m6", "message: more than 1000 characters"),
    ]
    text = repr(page.rejected)
    assert "body" not in text and "yyyy" not in text  # reasons never carry values


def test_other_keys_and_unknown_fields_are_skipped_not_kept() -> None:
    data = (
        b'{"junk":{"a":[[[{"b":1}]]]},"channel_id":"c1","messages":['
        + json.dumps(doc(1, extra={"k": [1]})).encode()
        + b'],"more":[1,2]}'
    )
    page = parse_history(data, keep=5)
    assert [m.id for m in page.messages] == ["m1"]


def test_lone_surrogates_become_replacement_text() -> None:
    raw = json.dumps(doc(1, body="PLACE")).encode().replace(b"PLACE", b"a\\ud800b")
    page = parse_history(body([raw]), keep=5)
    assert page.messages[0].body == "a?b"
    page.messages[0].model_dump_json()  # encodable: no surrogate left


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"channel_id":"c1"}', "no messages list"),
        (b'{"channel_id":"c1","messages":[', "not valid JSON"),
        (b'{"messages":["\xff"]}', "not valid JSON"),
    ],
)
def test_a_page_that_is_no_history_is_one_clear_error(data: bytes, reason: str) -> None:
    with pytest.raises(HistoryFormatError, match=reason):
        parse_history(data, keep=5)
