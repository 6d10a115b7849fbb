"""Semantic-version comparison for the update check (features 13.1) and the package version."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from services.core.version import VersionError, compare_versions, is_newer, package_version, parse_version


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.2.3", "1.2.3", 0),
        ("v1.2.3", "1.2.3", 0),  # a leading v is ignored
        ("1.2.3-rc.1", "1.2.3", 0),  # a pre-release suffix is ignored
        ("1.2.3+build.7", "1.2.3", 0),
        ("0.2.0rc1", "0.2.0", 0),  # PEP 440 pre-release
        ("0.2.0.dev3", "0.2.0", 0),
        ("1.2", "1.2.0", 0),
        ("1.10.0", "1.9.9", 1),  # numeric, not lexical
        ("2.0.0", "10.0.0", -1),
        ("0.1.1", "0.1.0", 1),
        ("0.1.0", "0.2.0", -1),
    ],
)
def test_compare(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


@pytest.mark.parametrize("bad", ["", "latest", "1.x", "v", "1.2.3.4.5" * 20])
def test_not_a_version(bad: str) -> None:
    with pytest.raises(VersionError):
        parse_version(bad)
    assert is_newer(bad, "0.0.1") is False


def test_is_newer() -> None:
    assert is_newer("0.2.0", "0.1.9") and not is_newer("0.1.0", "0.1.0") and not is_newer("0.0.9", "0.1.0")


def test_package_version_is_the_project_version() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert package_version() == pyproject["project"]["version"]
