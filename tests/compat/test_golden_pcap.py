"""PCAP parity with ulogd2 2.0.8: the golden pkt-pcap case's netlink buffers, replayed through
its own ulogd.conf (NFLOG, BASE, PCAP), give a file that tshark reads exactly as it reads
ulogd2's file: same header, same records, same packet bytes; same times wherever the kernel
stamped the packet (``gbOUT`` packets carry no timestamp: both daemons use their own clock).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.compat.test_golden_offline import SET, masked, replay, utc  # noqa: F401 - utc is a fixture

pytestmark = pytest.mark.skipif(not SET.is_dir(), reason="../shared/golden is not there")

CASE = SET / "pkt-pcap"


def records(path: Path) -> tuple[bytes, list[tuple[int, int, int, int, bytes]]]:
    data = path.read_bytes()
    out, off = [], 24
    while off < len(data):
        sec, usec, caplen, length = struct.unpack_from("<IIII", data, off)
        out.append((sec, usec, caplen, length, data[off + 16 : off + 16 + caplen]))
        off += 16 + caplen
    return data[:24], out


def test_pkt_pcap_bytes(tmp_path: Path, utc: None) -> None:  # noqa: F811
    replay("pkt-pcap", tmp_path)
    ref_head, ref = records(CASE / "out.pcap")
    cand_head, cand = records(tmp_path / "out.pcap")
    assert cand_head == ref_head  # TZ=UTC: thiszone 0, as the golden run
    assert len(cand) == len(ref) == 44
    assert masked("pcap", tmp_path / "out.pcap") == masked("pcap", CASE / "out.pcap")
    stamped = 0
    for (rs, ru, rc, rl, rd), (cs, cu, cc, cl, cd) in zip(ref, cand, strict=True):
        assert (cc, cl, cd) == (rc, rl, rd)  # the packet bytes are the kernel's, byte for byte
        if (rs, ru) == (cs, cu):
            stamped += 1
    # every packet with a kernel timestamp: all but the 15 gbOUT ones (golden README)
    assert stamped == 44 - 15


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark (Debian package tshark)")
def test_pkt_pcap_reads_the_same_in_tshark(tmp_path: Path, utc: None) -> None:  # noqa: F811
    replay("pkt-pcap", tmp_path)

    def tshark(path: Path) -> list[str]:
        r = subprocess.run(["tshark", "-n", "-t", "e", "-r", str(path)], capture_output=True, text=True,
                           timeout=60, check=True)
        return r.stdout.splitlines()

    ref_lines = (CASE / "out.pcap.txt").read_text().splitlines()
    assert tshark(CASE / "out.pcap") == ref_lines  # the stored text is this tshark's reading
    cand_lines = tshark(tmp_path / "out.pcap")
    assert len(cand_lines) == len(ref_lines) == 44
    _, ref = records(CASE / "out.pcap")
    _, cand = records(tmp_path / "out.pcap")
    time_col = re.compile(r"^(\s*\d+) \d+\.\d+ ")
    for r_line, c_line, r_rec, c_rec in zip(ref_lines, cand_lines, ref, cand, strict=True):
        if r_rec[:2] == c_rec[:2]:
            assert c_line == r_line
        else:  # a packet without kernel timestamp: each daemon's own clock
            assert time_col.sub(r"\1 T ", c_line) == time_col.sub(r"\1 T ", r_line)
