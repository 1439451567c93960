"""What the daemon opens as root, attacked by an unprivileged user (issue 10, items 3, 6, 7).

Every kind of file the daemon writes (its log, each file output, the pidfile, the SQL
spool, the SQLite database, the UNIXSOCK socket) is opened in a directory that ``nobody``
owns, after ``nobody`` planted a symbolic link there to a root-only file: the file must be
refused and the root-only file left exactly as it was, with and without ``-u nobody`` (the
directory's owner is then the daemon's own user, which is allowed; without ``-u`` the
directory itself is refused). Directories others can write are refused before anything is
created in them. Runs as root, the links are planted by forked children that became nobody.
"""

from __future__ import annotations

import grp
import os
import select
import signal
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyulogd.core import safefile
from pyulogd.core.clock import FakeClock
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.core.plugin import Key, KeyType, Plugin, Source
from pyulogd.daemon.process import PidFile, PidFileError
from pyulogd.io.loop import Loop
from pyulogd.plugins.inputs.unixsock import UnixsockInput
from pyulogd.plugins.outputs.gprint import GprintOutput
from pyulogd.plugins.outputs.json import JsonOutput
from pyulogd.plugins.outputs.logemu import LogemuOutput
from pyulogd.plugins.outputs.nacct import NacctOutput
from pyulogd.plugins.outputs.oprint import OprintOutput
from pyulogd.plugins.outputs.pcap import PcapOutput
from pyulogd.plugins.outputs.sqlite3 import Sqlite3Output
from pyulogd.plugins.outputs.xml import XmlOutput, file_name
from tests.helpers import NflogKeys, make_stack, stop_stack
from tests.privs import (
    as_nobody,
    make_victim,
    plant_link,
    reachable_tmp,
    run_as_nobody,
    snapshot,
    users_dir,
    why_skip,
)

_skip = why_skip()
pytestmark = pytest.mark.skipif(_skip is not None, reason=_skip or "")
NOW = 1795764137.0
REFUSALS = (OSError, PluginError, ConfigError, PidFileError)


def _source_for(cls: type[Plugin]) -> type[Source]:
    keys = tuple(cls.input_keys) or (Key("oob.prefix", KeyType.STRING),)
    return type("KeysSource", (Source,), {"name": "KEYS", "output_type": cls.input_type, "output_keys": keys})


@dataclass
class Kind:
    """A file the daemon writes: its name in the directory, and how the daemon opens it."""

    name: str
    open: Callable[[Context, Path], Callable[[], None]]  # (ctx, directory) -> close


def _output(cls: type[Plugin], name: str, option: str = "file") -> Kind:
    def open_(ctx: Context, d: Path) -> Callable[[], None]:
        value = f"{d}/" if option == "directory" else str(d / name)
        stack = make_stack([_source_for(cls), (cls, {option: value})], ctx)
        return lambda: stop_stack(stack)

    return Kind(name, open_)


def _logfile(ctx: Context, d: Path) -> Callable[[], None]:
    ctx.log.set_destination(str(d / "ulogd.log"))
    return ctx.log.close


FILES = {
    "logfile": Kind("ulogd.log", _logfile),
    "LOGEMU": _output(LogemuOutput, "syslogemu.log"),
    "GPRINT": _output(GprintOutput, "gprint.log"),
    "OPRINT": _output(OprintOutput, "oprint.log"),
    "NACCT": _output(NacctOutput, "nacct.log"),
    "JSON": _output(JsonOutput, "ulogd.json"),
    "PCAP": _output(PcapOutput, "ulogd.pcap"),
    "XML": _output(XmlOutput, file_name("pkt", NOW), option="directory"),
}


def context(run_as: safefile.RunAs | None) -> Context:
    ctx = Context(loop=Loop(FakeClock(wall=NOW)))
    ctx.run_as = run_as
    ctx.log.run_as = run_as
    return ctx


# -- every file output and the daemon's log


@pytest.mark.parametrize("with_u", [True, False], ids=["-u nobody", "root"])
@pytest.mark.parametrize("kind", FILES)
def test_link_planted_by_the_user_is_never_followed(kind: str, with_u: bool) -> None:
    with reachable_tmp() as base:
        d, victim = users_dir(base), make_victim(base)
        before = snapshot(victim)
        plant_link(victim, d / FILES[kind].name)
        ctx = context(run_as_nobody() if with_u else None)
        with pytest.raises(REFUSALS) as err:
            FILES[kind].open(ctx, d)
        # With -u the directory is the daemon user's own (allowed): the link is what is refused.
        assert ("is a symbolic link" if with_u else "is owned by nobody") in str(err.value)
        assert snapshot(victim) == before


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775], ids=["world", "sticky", "group"])
@pytest.mark.parametrize("kind", FILES)
def test_directory_others_can_write_is_refused(kind: str, mode: int) -> None:
    with reachable_tmp() as base:
        d = base / "shared"
        d.mkdir()
        os.chown(d, 0, run_as_nobody().gid if mode == 0o775 else 0)
        os.chmod(d, mode)
        with pytest.raises(REFUSALS) as err:
            FILES[kind].open(context(run_as_nobody()), d)
        assert "writable by" in str(err.value)
        assert os.listdir(d) == []


@pytest.mark.parametrize("kind", FILES)
def test_new_file_is_the_users_and_a_root_only_one_is_refused(kind: str) -> None:
    """-u: the user reopens the file on SIGHUP, so a new file is created for it (fchown),
    and an existing one it cannot write refuses the start, naming the file."""
    user = run_as_nobody()
    with reachable_tmp() as base:
        d = users_dir(base)  # XML makes a new file on every SIGHUP: its directory must be the user's
        close = FILES[kind].open(context(user), d)
        try:
            assert os.stat(d / FILES[kind].name).st_uid == user.uid
        finally:
            close()
    with reachable_tmp() as base:
        d = users_dir(base)
        make_victim(d, FILES[kind].name)
        with pytest.raises(REFUSALS) as err:
            FILES[kind].open(context(user), d)
        assert "not writable by user nobody" in str(err.value) and FILES[kind].name in str(err.value)
    with reachable_tmp() as base:  # root's 0700 directory: the user cannot even reach the file
        d = base / "closed"
        d.mkdir(mode=0o700)
        with pytest.raises(REFUSALS, match="not writable by user nobody"):
            FILES[kind].open(context(user), d)


def test_ancestor_the_user_owns_is_refused() -> None:
    """The user could rename a directory below its own and put a link in its place."""
    with reachable_tmp() as base:
        below = users_dir(base) / "logs"
        below.mkdir()
        with pytest.raises(safefile.UnsafePath, match="owned by nobody"):
            safefile.open_append(str(below / "a.log"), run_as_nobody())


def test_root_links_on_the_way_are_followed(tmp_path: Path) -> None:
    """A link root made (``/var/run`` -> ``/run``) is no danger: followed, then checked."""
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to("real")
    os.close(safefile.open_append(str(tmp_path / "alias" / "a.log")))
    assert (tmp_path / "real" / "a.log").exists()


def test_hard_link_fifo_and_device() -> None:
    with reachable_tmp() as base:
        victim = make_victim(base)
        before = snapshot(victim)
        os.link(victim, base / "hard.log")  # what a user can do where protected_hardlinks=0
        with pytest.raises(safefile.UnsafePath, match="2 hard links"):
            safefile.open_append(str(base / "hard.log"))
        assert snapshot(victim)[0] == before[0]
        os.mkfifo(base / "fifo.log")  # would block an open for writing without O_NONBLOCK
        with pytest.raises(OSError):
            safefile.open_append(str(base / "fifo.log"))
        reader = os.open(base / "fifo.log", os.O_RDONLY | os.O_NONBLOCK)
        try:  # with a reader the open succeeds: fstat() refuses it
            with pytest.raises(safefile.UnsafePath, match="not a regular file"):
                safefile.open_append(str(base / "fifo.log"))
        finally:
            os.close(reader)
    os.close(safefile.open_append("/dev/null"))  # devices: only root can make them


def test_as_user_and_writable_by() -> None:
    user = run_as_nobody()
    with reachable_tmp() as base:
        victim = make_victim(base)
        assert not safefile.writable_by(str(victim), user)
        assert safefile.writable_by(str(victim), None)
        with pytest.raises(ZeroDivisionError), safefile.as_user(user):
            assert os.geteuid() == user.uid and not os.access(victim, os.R_OK, effective_ids=True)
            1 / 0  # noqa: B018
        assert os.geteuid() == 0 and os.getegid() == 0  # back to root even after an error
        d = users_dir(base)
        with safefile.as_user(user):
            (d / "made").write_text("")
            assert os.geteuid() == user.uid
        assert os.stat(d / "made").st_uid == user.uid


# -- pidfile


def test_pidfile_link_is_removed_never_followed() -> None:
    """The issue's exploit: ``ln -s /root-only/file DIR/pyulogd.pid`` in a directory of nobody."""
    with reachable_tmp() as base:
        d, victim = users_dir(base), make_victim(base)
        before = snapshot(victim)
        path = d / "pyulogd.pid"
        plant_link(victim, path)
        pid = PidFile(str(path), run_as_nobody())
        pid.acquire()
        try:
            assert snapshot(victim) == before
            assert not path.is_symlink() and path.read_text() == f"{os.getpid()}\n"
            assert os.stat(path).st_uid == 0  # stays root's: nobody must not rewrite the pid
            with pytest.raises(PidFileError, match="already running"):
                PidFile(str(path), run_as_nobody()).acquire()
        finally:
            pid.release()
        assert not path.exists()


def test_pidfile_directory_checks() -> None:
    with reachable_tmp() as base:
        d = users_dir(base)
        with pytest.raises(PidFileError, match="owned by nobody"):
            PidFile(str(d / "p.pid")).acquire()  # without -u nobody is just another user
        os.chown(d, 0, 0)
        os.chmod(d, 0o777)
        with pytest.raises(PidFileError, match="writable by every user"):
            PidFile(str(d / "p.pid"), run_as_nobody()).acquire()
        assert os.listdir(d) == []


# -- SQL spool and SQLite


def _make_db(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (oob_prefix TEXT, raw_pktlen INTEGER)")
    con.close()


def sqlite_stack(ctx: Context, db: Path, **opts: Any) -> Any:
    cfg = {"db": str(db), "table": "t", "batch_timeout": "50ms", **opts}
    return make_stack([NflogKeys, (Sqlite3Output, cfg)], ctx)


@pytest.mark.parametrize("name", ["LOCK", "ack"])
def test_spool_link_is_never_followed(name: str) -> None:
    user = run_as_nobody()
    with reachable_tmp() as base:
        d, victim = users_dir(base), make_victim(base)
        before = snapshot(victim)
        as_nobody(lambda: _make_db(d / "a.db"))
        spool = d / "a.db.spool"
        as_nobody(lambda: os.mkdir(spool, 0o700))
        plant_link(victim, spool / name)
        with pytest.raises(PluginError, match="cannot use spool directory"):
            sqlite_stack(context(user), d / "a.db")
        assert snapshot(victim) == before


def test_sqlite_db_link_is_never_followed() -> None:
    with reachable_tmp() as base:
        d, victim = users_dir(base), make_victim(base)
        before = snapshot(victim)
        plant_link(victim, d / "a.db")
        with pytest.raises(ConfigError, match="not writable by user nobody"):
            sqlite_stack(context(run_as_nobody()), d / "a.db")
        with pytest.raises(ConfigError, match="owned by nobody"):
            sqlite_stack(context(None), d / "a.db", spool_dir=str(base / "spool"))
        assert snapshot(victim) == before


def test_sqlite_files_are_made_by_the_user() -> None:
    """-u: the database (from schema_file) and the spool are the user's from the start
    (before, root made them and every write after the drop failed)."""
    user = run_as_nobody()
    with reachable_tmp() as base:
        d = users_dir(base)
        schema = base / "schema.sql"
        schema.write_text("CREATE TABLE t (oob_prefix TEXT, raw_pktlen INTEGER);")
        os.chmod(schema, 0o600)  # readable by root only: read before anything runs as the user
        stack = sqlite_stack(context(user), d / "a.db", schema_file=str(schema))
        out = stack.instances[-1]
        try:
            assert out.writer is not None and not out.writer.is_alive()  # waits for running()
            for p in (d / "a.db", d / "a.db.spool", d / "a.db.spool" / "LOCK", d / "a.db.spool" / "ack"):
                assert os.stat(p).st_uid == user.uid, p
            assert stat.S_IMODE(os.stat(d / "a.db.spool").st_mode) == 0o700
        finally:
            stop_stack(stack)


def test_sqlite_local_paths_the_user_cannot_write_refuse_the_start() -> None:
    user = run_as_nobody()
    with reachable_tmp() as base:
        _make_db(base / "a.db")  # root's directory, root's database
        (base / "spool").mkdir(mode=0o700)  # as root made it before this was fixed
        with pytest.raises(ConfigError, match=r"cannot use spool_dir .*not writable by user nobody"):
            sqlite_stack(context(user), base / "a.db", spool_dir=str(base / "spool"))
        with pytest.raises(ConfigError, match=r"cannot use db .*-wal and -shm"):
            sqlite_stack(context(user), base / "a.db", spool_dir=str(users_dir(base, "spool2")))
        d = users_dir(base, "db")
        _make_db(d / "a.db")
        with pytest.raises(ConfigError, match=r"cannot use db .*a\.db.* not writable by user nobody"):
            sqlite_stack(context(user), d / "a.db")


# -- UNIXSOCK


def unixsock(ctx: Context, path: Path, **opts: Any) -> Any:
    return make_stack([(UnixsockInput, {"socket_path": str(path), **opts})], ctx)


def test_unixsock_link_and_shared_directory_are_refused() -> None:
    with reachable_tmp() as base:
        d, victim = users_dir(base), make_victim(base)
        before = snapshot(victim)
        plant_link(victim, d / "u.sock")
        with pytest.raises(PluginError, match="not a socket"):
            unixsock(context(run_as_nobody()), d / "u.sock", perms=0o666)
        assert snapshot(victim) == before
        shared = base / "shared"
        shared.mkdir(mode=0o1777)
        os.chmod(shared, 0o1777)
        with pytest.raises(PluginError, match="writable by every user"):
            unixsock(context(None), shared / "u.sock")
        assert os.listdir(shared) == []


def test_unixsock_mode_and_owner_from_the_start() -> None:
    user = run_as_nobody()
    with reachable_tmp() as base:
        stack = unixsock(context(None), base / "u.sock", perms=0o640, owner="nobody")
        try:
            st = os.lstat(base / "u.sock")
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == user.uid
            assert sorted(os.listdir(base)) == ["u.sock"]  # the private directory is gone
        finally:
            stop_stack(stack)
        assert os.listdir(base) == []


def _racer(d: Path, victim: Path, report: int) -> None:
    """As nobody, forever: swap the socket for a link to the victim the moment it appears
    (where ulogd2 chmods and chowns it), and the private directory for a link too."""
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    while True:
        for name in os.listdir(dfd):
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if name == "u.sock" and stat.S_ISSOCK(st.st_mode):
                    os.unlink(name, dir_fd=dfd)
                    os.symlink(victim, name, dir_fd=dfd)
                    os.write(report, b"s")
                elif name == "u.sock" and stat.S_ISLNK(st.st_mode):
                    os.unlink(name, dir_fd=dfd)  # out of the way of the next start
                elif name.startswith(".u.sock.") and stat.S_ISDIR(st.st_mode):
                    os.rename(name, name + ".moved", src_dir_fd=dfd, dst_dir_fd=dfd)
                    os.symlink(victim.parent, name, dir_fd=dfd)
                    os.write(report, b"d")
            except OSError:
                pass


def test_unixsock_racer_never_changes_the_link_target() -> None:
    """Item 7: a racer as nobody in a socket directory it owns swaps the socket for a link
    in a loop while the input starts again and again (ulogd2 lost after 1 start, the
    chmod/chown after bind() that pyulogd had lost after 6): the link's target keeps its
    mode and owner. The racer must have swapped something, or the test proves nothing."""
    user = run_as_nobody()
    with reachable_tmp() as base:
        d, victim = users_dir(base), make_victim(base)
        before = snapshot(victim)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the racer
            try:
                os.close(r)
                os.setgroups([])
                os.setgid(user.gid)
                os.setuid(user.uid)
                _racer(d, victim, w)
            finally:
                os._exit(1)
        os.close(w)
        started = swaps = 0
        ctx, group = context(user), grp.getgrgid(user.gid).gr_name
        try:
            for _ in range(300):
                try:
                    stack = unixsock(ctx, d / "u.sock", perms=0o666, owner="nobody", group=group)
                except (PluginError, OSError):
                    continue  # the racer's link was in place, or the socket gone: refused
                started += 1
                stop_stack(stack)
                assert snapshot(victim) == before
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            while select.select([r], [], [], 0)[0]:
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                swaps += len(chunk)
            os.close(r)
        assert snapshot(victim) == before
        assert started > 0 and swaps > 0, (started, swaps)
