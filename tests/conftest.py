"""Fixtures for every test.

Outputs spool to ``/var/spool/pyulogd/<daemon>/<instance id>`` unless ``spool_dir`` says
otherwise (io/spool.py ``default_dir``, issue 12). A test that builds such an output in this process gets
that default under its own temporary directory instead, so no test writes the machine's
/var/spool, and records one test kept at stop are never sent to the peer of another test
that uses the same instance id. (Daemons a test starts as a process set ``spool_dir``
in their config when their outputs may spool.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

import pyulogd.io.spool


@pytest.fixture(autouse=True)
def _private_spool_base(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyulogd.io.spool, "SPOOL_BASE", str(Path(tmp_path_factory.mktemp("spool"))))
