"""A full filesystem under one of the daemon's files costs that file's records, nothing else.

The daemon writes its log, a LOGEMU file, a JSON file, JSON over TCP (to a listener here)
and a PCAP file; a 1 MiB tmpfs holds one of the files (each in turn) and is filled up
before the daemon starts. Packets logged by NFLOG in a namespace of the test's own; a
SIGHUP in the middle (the reopen of every file while full). Then:

* the daemon runs on and exits 0 at SIGTERM;
* every other output has every record;
* the full file holds only whole records (what a short write left of one is cut off
  again), and its losses are counted: records in it + records lost = records sent;
* once space is freed the full file gets the next records, and says so in the log.

Issue 10, item 2: before, an OSError from the log's write escaped through the output's
loss message and ``service.flush`` (exit 1, 0 of 2000 records sent over TCP), and SIGHUP
with a full log filesystem killed the daemon too.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest

from pyulogd.plugins.outputs.pcap import global_header
from tests.linux.lab import have_root_and_tools, lines, sh, wait_for
from tests.linux.nsdaemon import Daemon, LineListener, Namespace, counters_at_exit, unique

_skip = have_root_and_tools("mount", "umount")
pytestmark = [pytest.mark.linux, pytest.mark.skipif(_skip is not None, reason=_skip or "")]

GROUP = 53
N = 200  # packets while the filesystem is full (half before the SIGHUP, half after)
M = 20  # packets once there is room again
PREFIX = "qsec "
EMU_LINE = re.compile(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ qsec  IN= OUT=lo MAC= "
                      r"SRC=127\.0\.0\.1 DST=127\.0\.0\.1 LEN=\d+ TOS=00 PREC=0x00 TTL=64 ID=\d+ DF "
                      r"PROTO=UDP SPT=\d+ DPT=9 LEN=\d+ (UID=0 GID=0 )?"
                      r"MARK=0x0 \Z")  # fmt: skip

FILES = {"log": "daemon.log", "logemu": "emu.log", "json": "pkt.json", "pcap": "pkt.pcap"}
# What the full file holds before the daemon starts. The log starts empty: every line of it
# fails from the first one. The others hold a few bytes, so the first records still fit in
# the file's last page and one of them is written only in part.
SEED = {"log": b"", "logemu": b"seed\n", "json": b"{}\n", "pcap": global_header()}


def config(files: dict[str, Path], ns: Namespace, port: int) -> str:
    return f"""[global]
logfile="{files['log']}"
loglevel=3
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,print1:PRINTPKT,emu1:LOGEMU
stack=log1:NFLOG,base2:BASE,ifi2:IFINDEX,ip2str2:IP2STR,json1:JSON
stack=log1:NFLOG,base3:BASE,ifi3:IFINDEX,ip2str3:IP2STR,json2:JSON
stack=log1:NFLOG,base4:BASE,pcap1:PCAP

[log1]
group={ns.group}
network_namespace_path={ns.path}
netlink_qthreshold=1

[emu1]
file="{files['logemu']}"

[json1]
file="{files['json']}"

[json2]
mode=tcp
host=127.0.0.1
port={port}

[pcap1]
file="{files['pcap']}"
"""


def fill(directory: Path) -> None:
    """Take every free block of the filesystem."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        chunk = b"\0" * 65536
        while True:
            try:
                os.write(fd, chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                chunk = chunk[: len(chunk) // 2]
                if not chunk:
                    break
    finally:
        os.close(fd)


@pytest.fixture()
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "full"
    d.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(d))
    try:
        yield d
    finally:
        if subprocess.run(["umount", str(d)], capture_output=True).returncode != 0:
            sh("umount", "-l", str(d), check=False)


def pcap_records(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        return [bytes(buf) for _ts, buf in dpkt.pcap.Reader(f)]  # raises on a torn record


def count(kind: str, path: Path, seed: bytes = b"") -> int:
    """Records of this kind of output in the file after ``seed`` (all of them checked whole)."""
    if kind == "pcap":
        return len(pcap_records(path))  # the seed is the header
    data = path.read_bytes()
    assert data.startswith(seed)
    got = data[len(seed):].decode("utf-8").splitlines()
    if kind == "logemu":
        assert all(EMU_LINE.match(x) for x in got), [x for x in got if not EMU_LINE.match(x)][:3]
    else:
        records = [json.loads(x) for x in got]
        assert all(r["oob.prefix"] == PREFIX and r["dest_port"] == 9 for r in records)
    return len(got)


@pytest.mark.parametrize("full", sorted(FILES))
def test_a_full_file_costs_only_its_own_records(tmp_path: Path, tmpfs: Path, full: str) -> None:
    files = {k: (tmpfs if k == full else tmp_path) / name for k, name in FILES.items()}
    files[full].write_bytes(SEED[full])
    fill(tmpfs)
    listener = LineListener()
    listener.start()
    ns = Namespace(unique("qsec-"), GROUP, PREFIX)
    daemon: Daemon | None = None
    try:
        daemon = Daemon(tmp_path, config(files, ns, listener.port), files["log"])
        wait_for(ns.nflog_bound, 10, "the NFLOG group to be bound")
        ns.send(N // 2)
        wait_for(lambda: len(listener.lines()) >= N // 2, 20, "the first half over TCP")
        daemon.signal(signal.SIGHUP)  # every file reopened while the filesystem is full
        wait_for(lambda: "reopening logfile" in daemon.text() if full != "log" else
                 daemon.stderr().count("reopening logfile") >= 2, 10, "the SIGHUP")  # fmt: skip
        ns.send(N - N // 2)
        wait_for(lambda: len(listener.lines()) >= N, 20, f"{N} records over TCP")
        # Every output but the full one has every record.
        for kind in ("logemu", "json", "pcap"):
            if kind != full:
                wait_for(lambda k=kind: count(k, files[k]) >= N, 10, f"{N} records in {kind}")  # type: ignore[misc]
                assert count(kind, files[kind]) == N
        if full != "log":
            kept = count(full, files[full], SEED[full])
            assert kept < N  # the filesystem was full
        assert daemon.proc.poll() is None

        # Room again: the full file takes the next records.
        os.unlink(tmpfs / "filler")
        ns.send(M)
        wait_for(lambda: len(listener.lines()) >= N + M, 20, f"{N + M} records over TCP")
        if full != "log":
            wait_for(lambda: count(full, files[full], SEED[full]) == kept + M, 10, f"the {M} last records in {full}")
        assert daemon.stop() == 0
    finally:
        if daemon is not None:
            daemon.kill()
        ns.delete()
        listener.close()

    assert len(listener.lines()) == N + M
    log = "\n".join(lines(files["log"]))
    stats = counters_at_exit(log)
    assert stats["nflog.log1.packets"] == N + M
    if full == "log":
        err = daemon.stderr()
        assert "pyulogd: can't write the daemon log (" + str(files["log"]) + "): No space left on device" in err
        assert "entering main loop" in err and "entering main loop" not in log
        lost = stats["log.lines_lost"]
        assert lost >= 10  # start-up, SIGHUP notices
        assert f"the daemon log works again; {lost} line(s) could not be written to it" in log
        assert not any(k.endswith(("lines_lost", "records_lost")) and k != "log.lines_lost" for k in stats)
        return
    lost_key = {"logemu": "logemu.emu1.lines_lost", "json": "json.json1.lines_lost",
                "pcap": "pcap.pcap1.records_lost"}[full]  # fmt: skip
    assert stats[lost_key] == N - kept
    assert stats[lost_key.rsplit(".", 1)[0] + ".write_errors"] >= 1
    assert "log.lines_lost" not in stats
    assert re.search(r"can't write to .*: No space left on device; dropping", log) or "Error during write" in log
    assert "works again" in log
