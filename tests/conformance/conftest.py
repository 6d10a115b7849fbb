"""Conformance-suite plugin: registers the ``devserver`` marker so ``-k devserver`` selects the
golden-fixture replay (its module name does not say "devserver")."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "devserver: runs against a real devserver instance")
