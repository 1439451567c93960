"""ECS and AUDITDB on a real kernel: a daemon logs accepted and dropped datagrams inside a
namespace of the test's own; the ECS documents are valid ECS with the kernel's times and
the reference Community ID, the audit store answers pyulogd-audit, and both are chained
and verify."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pyulogd.io.netns import setns
from tests.audit_helpers import run
from tests.ecs_schema import check_lines
from tests.linux.lab import have_root_and_tools, lines, wait_for
from tests.linux.nsdaemon import Daemon, Namespace, unique

pytestmark = pytest.mark.linux
reason = have_root_and_tools()
if reason:
    pytest.skip(reason, allow_module_level=True)
communityid = pytest.importorskip("communityid")


def rules(ns: Namespace) -> None:
    text = f"""table inet ecsaudit {{
  chain out {{ type filter hook output priority 0; policy accept;
    udp dport 10 log prefix "DROP port10 " group {ns.group}
    udp dport 10 drop
  }}
}}"""
    fd = os.open(ns.path, os.O_RDONLY)
    try:
        subprocess.run(["nft", "-f", "-"], input=text, text=True, check=True, capture_output=True,
                       preexec_fn=lambda: setns(fd), pass_fds=(fd,))  # fmt: skip
    finally:
        os.close(fd)


def send(ns: Namespace, port: int, n: int) -> None:
    fd = os.open(ns.path, os.O_RDONLY)
    try:
        # a datagram dropped in the output hook fails with EPERM: expected for port 10
        code = (f"import socket\ns=socket.socket(2,2)\nfor i in range({n}):\n try: s.sendto(b'x', "
                f"('127.0.0.1', {port}))\n except PermissionError: pass")
        subprocess.run(["python3", "-c", code], check=True, capture_output=True, preexec_fn=lambda: setns(fd),
                       pass_fds=(fd,))
    finally:
        os.close(fd)


def test_ecs_and_auditdb_from_the_kernel(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    key = out / "chain.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    ns = Namespace(unique("ecsa-"), group=23, prefix="ACCEPT port9 ")
    daemon = None
    try:
        rules(ns)
        db = f"sqlite://{out}/audit.db"
        config = f"""[global]
logfile="{out}/pyulogd.log"
loglevel=3
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ecs1:ECS
stack=log1:NFLOG,base2:BASE,ifi2:IFINDEX,audit1:AUDITDB
[log1]
group=23
network_namespace_path="{ns.path}"
[ecs1]
file="{out}/ecs.json"
chain_key="{key}"
[audit1]
db="{db}"
batch_timeout=0.1
chain_key="{key}"
"""
        daemon = Daemon(out, config, out / "pyulogd.log")
        wait_for(ns.nflog_bound, what="the NFLOG group bound")
        send(ns, 9, 5)
        send(ns, 10, 3)
        wait_for(lambda: len(lines(out / "ecs.json")) >= 8, what="8 ECS documents")
        assert daemon.stop() == 0
        daemon = None
        docs = check_lines((out / "ecs.json").read_text())
        assert len(docs) == 8
        names = sorted(d["rule"]["name"] for d in docs)
        assert names == ["ACCEPT port9"] * 5 + ["DROP port10"] * 3
        for d in docs:
            assert d["pyulogd"]["timestamp_source"] == "kernel" and d["network"]["transport"] == "udp"
            assert d["pyulogd"]["netns"] == ns.name
            want = communityid.CommunityID().calc(communityid.FlowTuple(
                17, d["source"]["ip"], d["destination"]["ip"], d["source"]["port"], d["destination"]["port"]))
            assert d["network"]["community_id"] == want
        rc, text, err = run("query", "--db", db, "--rule", "DROP", "--format", "jsonl")
        rows = [json.loads(line) for line in text.splitlines()]
        assert (rc, err) == (0, "") and len(rows) == 3 and {r["dport"] for r in rows} == {10}
        assert all(r["netns"] == ns.name and r["ts_source"] == "kernel" for r in rows)
        rc, text, _ = run("summary", "--db", db, "--format", "json")
        assert rc == 0 and json.loads(text)["records"] == 8
        assert run("verify", "--key", str(key), "--file", str(out / "ecs.json"))[0] == 0
        rc, text, _ = run("verify", "--key", str(key), "--db", db)
        assert rc == 0 and "8 records in 1 chain(s)" in text
        log = (out / "pyulogd.log").read_text()
        assert "chain ECS 'ecs1': last seq 8 tag" in log and "chain AUDITDB 'audit1': last seq 8" in log
    finally:
        if daemon is not None:
            daemon.stop()
        ns.delete()
