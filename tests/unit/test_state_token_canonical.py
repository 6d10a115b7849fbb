"""State HTTP API tokens verify in exactly one spelling (issue 10, defect 7).

The signature covers the expiry as a number, so before this rule ``int()`` read ``0…``, ``+…``,
``1_7…``, `` 17…`` (and other spellings) as the same expiry and a genuine signature verified in
every one of them."""

from __future__ import annotations

import pytest

from services.state import tokens

SECRET = b"k" * 32
NOW = 1_767_000_000.0


def _respell(token: str, expiry: str) -> str:
    version, member, _, signature = token.split(".")
    return f"{version}.{member}.{expiry}.{signature}"


def _spellings(exp: str) -> dict[str, str]:
    arabic_indic = "".join(chr(0x0660 + int(d)) for d in exp)
    return {
        "leading_zero": "0" + exp,
        "leading_zeros": "000" + exp,
        "plus_sign": "+" + exp,
        "underscore": exp[0] + "_" + exp[1:],
        "two_underscores": exp[:2] + "_" + exp[2:5] + "_" + exp[5:],
        "leading_space": " " + exp,
        "trailing_space": exp + " ",
        "leading_tab": "\t" + exp,
        "trailing_newline": exp + "\n",
        "non_ascii_digits": arabic_indic,
        "fullwidth_digits": "".join(chr(0xFF10 + int(d)) for d in exp),
    }


def test_the_issued_spelling_verifies() -> None:
    token, expires = tokens.issue(SECRET, "alice", NOW, 600)
    assert token.split(".")[2] == str(expires)
    assert tokens.verify(SECRET, token, NOW) == "alice"


@pytest.mark.parametrize("name", sorted(_spellings("1767000600")))
def test_every_other_spelling_of_the_expiry_is_refused(name: str) -> None:
    token, expires = tokens.issue(SECRET, "alice", NOW, 600)
    respelled = _spellings(str(expires))[name]
    assert int(respelled) == expires  # the same number to int(): the old check accepted it
    with pytest.raises(tokens.InvalidToken, match="malformed"):
        tokens.verify(SECRET, _respell(token, respelled), NOW)


@pytest.mark.parametrize("expiry", ["", "0", "-1767000600", "1767000600.0", "1e9", "0x6953", "abc"])
def test_non_numbers_and_zero_are_refused(expiry: str) -> None:
    token, _ = tokens.issue(SECRET, "alice", NOW, 600)
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(SECRET, _respell(token, expiry), NOW)
