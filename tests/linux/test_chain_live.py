"""Tamper evidence from a real kernel: a daemon logs datagrams in a namespace of the test's own
to PCAP, OPRINT, XML and a ulogd SQLITE3 table, all with ``chain_key``; every trail verifies,
the capture stays readable as a capture, and the daemon logs each chain's last seal."""

from __future__ import annotations

import sqlite3
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.audit_helpers import chain_key_file, run
from tests.linux.lab import have_root_and_tools, lines, wait_for
from tests.linux.nsdaemon import Daemon, Namespace, unique
from tests.linux.test_audit_live import send

pytestmark = pytest.mark.linux
reason = have_root_and_tools()
if reason:
    pytest.skip(reason, allow_module_level=True)

N = 6


def pcap_count(path: Path) -> int:
    data = path.read_bytes() if path.exists() else b""
    n, off = 0, 24
    while off + 16 <= len(data):
        off += 16 + struct.unpack_from("=I", data, off + 8)[0]
        n += 1
    return n


def test_chained_outputs_from_the_kernel(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    key = chain_key_file(out)
    con = sqlite3.connect(out / "ulog.db")
    con.execute("CREATE TABLE t (oob_prefix text, oob_time_sec integer, ip_saddr integer, udp_dport integer, "
                "pyulogd_seq integer, pyulogd_chain varchar(32))")
    con.commit()
    con.close()
    ns = Namespace(unique("pya5c-"), group=29, prefix="pya5 ")
    daemon = None
    try:
        config = f"""[global]
logfile="{out}/pyulogd.log"
loglevel=3
stack=log1:NFLOG,base1:BASE,pcap1:PCAP
stack=log1:NFLOG,base2:BASE,op1:OPRINT
stack=log1:NFLOG,x1:XML
stack=log1:NFLOG,base3:BASE,sq1:SQLITE3
[log1]
group=29
network_namespace_path="{ns.path}"
[pcap1]
file="{out}/out.pcap"
chain_key="{key}"
[op1]
file="{out}/oprint.txt"
chain_key="{key}"
[x1]
directory="{out}/"
chain_key="{key}"
[sq1]
db="{out}/ulog.db"
table="t"
batch_timeout=0.1
chain_key="{key}"
"""
        daemon = Daemon(out, config, out / "pyulogd.log")
        wait_for(ns.nflog_bound, what="the NFLOG group bound")
        send(ns, 9, N)
        wait_for(lambda: pcap_count(out / "out.pcap") >= N and len(lines(out / "out.pcap.chain")) >= N,
                 what=f"{N} pcap records and their seals")  # fmt: skip
        assert daemon.stop() == 0
        daemon = None
        (xml_file,) = out.glob("ulogd-pkt-*.xml")
        assert len(ET.parse(xml_file).getroot()) == N  # well-formed, every packet in it
        for path, records in ((out / "out.pcap", N), (out / "oprint.txt", N), (xml_file, N + 2)):
            rc, text, err = run("verify", "--key", str(key), "--file", str(path))
            assert (rc, err) == (0, "") and f"{records} records in 1 chain(s)" in text, (path, text)
        rc, text, err = run("verify", "--key", str(key), "--db", f"sqlite://{out}/ulog.db", "--table", "t")
        assert (rc, err) == (0, "") and f"{N} records in 1 chain(s)" in text, text
        log = (out / "pyulogd.log").read_text()
        for label in ("PCAP 'pcap1'", "OPRINT 'op1'", "XML 'x1'", "SQLITE3 'sq1'"):
            assert f"chain {label}: last seq" in log, label
        # one byte of one packet changed in the capture: found, and where
        data = bytearray((out / "out.pcap").read_bytes())
        data[-1] ^= 0x01
        (out / "out.pcap").write_bytes(bytes(data))
        rc, text, _ = run("verify", "--key", str(key), "--file", str(out / "out.pcap"))
        assert rc == 1 and f"out.pcap record:{N}: changed: seq {N}" in text, text
    finally:
        if daemon is not None:
            daemon.stop()
        ns.delete()
