"""io/lockdir.py: the locked directory of the spools and the write-ahead log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyulogd.io.lockdir import lock_dir, open_file
from pyulogd.io.spool import Spool, SpoolError
from pyulogd.io.wal import WalError


def test_a_second_daemon_is_refused_and_nothing_is_left_open(tmp_path: Path) -> None:
    d = str(tmp_path / "spool")
    dir_fd, lock_fd = lock_dir(d, "spool directory", SpoolError)
    try:
        assert oct(os.stat(d).st_mode & 0o777) == "0o700"
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(WalError, match=r"write-ahead log directory '.*' is used by another running daemon"):
            lock_dir(d, "write-ahead log directory", WalError)
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        os.close(lock_fd)
        os.close(dir_fd)
    dir_fd, lock_fd = lock_dir(d, "spool directory", SpoolError)  # free again once closed
    os.close(lock_fd)
    os.close(dir_fd)


def test_planted_links_and_fifos_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    d.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("precious")
    (d / "LOCK").symlink_to(target)
    with pytest.raises(SpoolError, match="cannot use spool directory"):
        lock_dir(str(d), "spool directory", SpoolError)
    assert target.read_text() == "precious"
    (d / "LOCK").unlink()
    os.mkfifo(d / "ack")
    dir_fd, lock_fd = lock_dir(str(d), "spool directory", SpoolError)
    try:
        with pytest.raises(OSError, match="not a regular file"):
            open_file(dir_fd, str(d), "ack", os.O_RDWR | os.O_CREAT)
    finally:
        os.close(lock_fd)
        os.close(dir_fd)
    with pytest.raises(SpoolError, match="cannot use spool directory"):
        Spool(str(d), 1 << 20).open()
