"""Fixtures shared by the real-kernel tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.privs import reachable_tmp


@pytest.fixture()
def reachable_tmp_path() -> Iterator[Path]:
    """tmp_path for a daemon started with ``-u nobody``: root's (0755) but reachable by the
    user, who must be able to reopen its files on SIGHUP (pytest's tmp_path is below a root
    0700 directory, and the daemon refuses to start with files the user cannot reach)."""
    with reachable_tmp() as d:
        yield d
