"""Offline parity of XML, OPRINT and GPRINT: the netlink buffers real ulogd2 2.0.8 read, fed
through pyulogd with the case's own ulogd.conf, give its output.

As ``test_golden_offline.py`` does (its helpers are reused): outputs are compared after
goldentool's masking, and then unmasked, line by line, where only what each daemon takes from
its own clock may differ (the time of writing: XML ``<when>``, GPRINT ``timestamp=``; and
``oob.time.*`` of the ``gbOUT`` packets, which the kernel does not stamp). The corrections of
docs/compat.md are undone on pyulogd's side before comparing, and pinned on their own:
OPRINT's byte-reversed IPv4 and GPRINT's IPv6-as-IPv4 addresses, BASE's ``tcp.offset``, and
the two reassembled datagrams 2.0.8's XML drops.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from pyulogd.core.config import parse_text
from pyulogd.core.context import Context
from pyulogd.core.plugin import Source
from pyulogd.daemon.service import Service
from pyulogd.io.loop import Loop
from pyulogd.io.rtnl import LinkCache
from tests.compat.test_golden_offline import SET, goldentool, raw_buffers, utc  # noqa: F401 - utc is a fixture

pytestmark = pytest.mark.skipif(not (SET / "pkt-xml").is_dir(), reason="../shared/golden is not there")

# BASE's corrected TCP header fields (docs/compat.md): 2.0.8 prints 0.
TCP_CORRECTED = ("tcp.offset", "tcp.reserved")
WHEN = re.compile(r"<when>.*?</when>")


def replay(case: str, out: Path) -> Service:
    """The case's own ulogd.conf, outputs redirected into ``out``, on its captured buffers."""
    text = (SET / case / "ulogd.conf").read_text()
    text = re.sub(r'^logfile=".*"$', f'logfile="{out}/ulogd.log"', text, flags=re.M)
    text = re.sub(r'^file="[^"]*/([^/"]+)"$', lambda m: f'file="{out}/{m[1]}"', text, flags=re.M)
    text = re.sub(r'^directory="[^"]*"$', f'directory="{out}/xml/"', text, flags=re.M)
    (out / "xml").mkdir()
    ctx = Context(loop=Loop(), hostname="vm")
    cache = LinkCache(ctx, kernel=False)
    cache.names.update({1: "lo", 2: "gbb0"})  # the golden lab's gbB (README: ifindex 2 = gbb0)
    ctx.ifcache = cache
    svc = Service(str(out / "ulogd.conf"), ctx)
    svc.load_config(parse_text(text, str(out / "ulogd.conf")))
    for stack in svc.stacks:
        for inst in stack.instances[1:]:
            inst.start()
            svc.started.append(inst)
            if hasattr(inst, "flush"):
                svc.sinks.append(inst)  # type: ignore[arg-type]
    src = svc.stacks[0].source
    assert isinstance(src, Source)
    for buf in raw_buffers(case):
        src._handle(buf)  # type: ignore[attr-defined]
        svc.flush()
    svc.stop()
    return svc


def xml_file(d: Path) -> Path:
    files = sorted(d.iterdir())
    assert len(files) == 1, files
    return files[0]


# -- XML


def test_pkt_xml(tmp_path: Path, utc: None) -> None:  # noqa: F811
    svc = replay("pkt-xml", tmp_path)
    ref_file, cand_file = xml_file(SET / "pkt-xml" / "xml"), xml_file(tmp_path / "xml")
    # ulogd-pkt-DDMMYYYY-HHMMSS.xml, in the directory given (trailing '/' and all)
    assert re.fullmatch(r"ulogd-pkt-\d{8}-\d{6}\.xml", cand_file.name)
    ref_lines = ref_file.read_text().splitlines()
    cand_lines = cand_file.read_text().splitlines()
    # docs/compat.md: the two reassembled datagrams (3028 and 3048 bytes) do not fit 2.0.8's
    # 4096-byte buffer and are dropped there; pyulogd writes them.
    big = [x for x in cand_lines if len(x) >= 4096]
    assert len(big) == 2 and len(cand_lines) == len(ref_lines) + 2 == 3 + 44
    assert all("<prefix>gbACCEPT </prefix>" in x for x in big)
    kept = [x for x in cand_lines if len(x) < 4096]
    # Byte-identical apart from the time of writing (<when>).
    assert [WHEN.sub("", x) for x in kept] == [WHEN.sub("", x) for x in ref_lines]
    assert ref_lines[:2] == ['<?xml version="1.0" encoding="utf-8"?>', "<packet>"] and ref_lines[-1] == "</packet>"
    assert svc.ctx.stats.get("stack.xml1.errors") == 0
    # goldentool's own comparison, after the same two records are left out.
    gt = goldentool()
    ref = gt.masked("xml", str(SET / "pkt-xml" / "xml"))
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / cand_file.name).write_text("\n".join(kept) + "\n")
    assert gt.masked("xml", str(tmp_path / "kept")) == ref


def test_flow_xml(tmp_path: Path, utc: None) -> None:  # noqa: F811
    replay("flow-xml", tmp_path)
    ref_file, cand_file = xml_file(SET / "flow-xml" / "xml"), xml_file(tmp_path / "xml")
    assert re.fullmatch(r"ulogd-flow-\d{8}-\d{6}\.xml", cand_file.name)
    ref_lines, cand_lines = ref_file.read_text().splitlines(), cand_file.read_text().splitlines()
    assert len(cand_lines) == len(ref_lines) == 21  # header, <conntrack>, 18 flows, </conntrack>
    # Same records in the same order, byte for byte (ids, timeouts, counters, deltatime) apart
    # from the time of writing.
    assert [WHEN.sub("", x) for x in cand_lines] == [WHEN.sub("", x) for x in ref_lines]
    gt = goldentool()
    assert gt.masked("xml", str(tmp_path / "xml")) == gt.masked("xml", str(SET / "flow-xml" / "xml"))


# -- OPRINT and GPRINT


def _v4_2_0_8(addr: str, reverse: bool) -> str:
    """How 2.0.8 prints an address: the first 4 bytes as a dotted quad (OPRINT reversed)."""
    first = list(ipaddress.ip_address(addr).packed[:4])
    return ".".join(map(str, reversed(first) if reverse else first))


def records(text: str, oprint: bool) -> list[list[str]]:
    """Each record as its list of ``key=value`` items."""
    if oprint:
        return [r.split("\n")[:-1] for r in text.split("===>PACKET BOUNDARY\n")[1:]]
    # GPRINT: one line per record, and PRINTPKT's print value ends in "\n", so an empty line follows.
    out = []
    for line in text.split("\n\n")[:-1]:
        out.append(line.split(","))
    return out


def as_2_0_8(items: list[str], oprint: bool) -> list[str]:
    """A pyulogd record with the corrections of docs/compat.md undone (only these)."""
    out = []
    for it in items:
        k, eq, v = it.partition("=")
        if not eq:  # the empty line after PRINTPKT's print value
            out.append(it)
            continue
        if k in ("ip.saddr", "ip.daddr"):
            # docs/compat.md: OPRINT printed every address byte-reversed, GPRINT IPv6 as IPv4
            if oprint or ":" in v:
                v = _v4_2_0_8(v, oprint)
        elif k in TCP_CORRECTED:
            v = "*"
        out.append(f"{k}={v}")
    return out


def mask_clock(items: list[str], gbout: bool) -> list[str]:
    """What each daemon takes from its own clock: the time of writing, and a gbOUT packet's time."""
    clock = {"timestamp"} | ({"oob.time.sec", "oob.time.usec"} if gbout else set())
    return [f"{it.partition('=')[0]}=*" if it.partition("=")[0] in clock | set(TCP_CORRECTED) else it
            for it in items]


@pytest.mark.parametrize("case,name,oprint", [("pkt-oprint", "oprint.txt", True),
                                              ("pkt-gprint", "gprint.txt", False)])
def test_oprint_gprint(tmp_path: Path, utc: None, case: str, name: str, oprint: bool) -> None:  # noqa: F811
    replay(case, tmp_path)
    ref_text = (SET / case / name).read_text()
    cand_text = (tmp_path / name).read_text()
    ref, cand = records(ref_text, oprint), records(cand_text, oprint)
    assert len(cand) == len(ref) == 44
    for r, c in zip(ref, cand, strict=True):
        gbout = "oob.prefix=gbOUT " in r
        assert mask_clock(as_2_0_8(c, oprint), gbout) == mask_clock(r, gbout)
    if not oprint:
        assert all(line.startswith("timestamp=") for line in cand_text.split("\n\n")[:-1])
        assert re.match(r"timestamp=\d{4}/\d\d/\d\d-\d\d:\d\d:\d\d,raw.pktlen=", cand_text)
    # goldentool's own masked comparison, after the same undoing.
    gt = goldentool()
    if oprint:
        undone = "".join("===>PACKET BOUNDARY\n" + "".join(x + "\n" for x in as_2_0_8(c, True)) for c in cand)
    else:
        undone = "".join(",".join(as_2_0_8(c, False)) + "\n\n" for c in cand)
    ref_masked = gt.mask_kv_text(ref_text)

    def no_tcp(lines: list[str]) -> list[str]:
        return [re.sub(r"\b(tcp\.offset|tcp\.reserved)=[^,\n]*", r"\1=*", x) for x in lines]

    assert no_tcp(gt.mask_kv_text(undone)) == no_tcp(ref_masked)


def test_corrected_addresses(tmp_path: Path, utc: None) -> None:  # noqa: F811
    """OPRINT: IPv4 in the right order and IPv6 in full; GPRINT: IPv6 in full."""
    (tmp_path / "o").mkdir()
    (tmp_path / "g").mkdir()
    replay("pkt-oprint", tmp_path / "o")
    replay("pkt-gprint", tmp_path / "g")
    o = (tmp_path / "o" / "oprint.txt").read_text()
    g = (tmp_path / "g" / "gprint.txt").read_text()
    assert "\nip.saddr=10.201.0.1\nip.daddr=10.201.0.2\n" in o
    assert "\nip.saddr=fd00:201::1\nip.daddr=fd00:201::2\n" in o
    assert ",ip.saddr=fd00:201::1,ip.daddr=fd00:201::2," in g
    assert ",ip.saddr=10.201.0.1,ip.daddr=10.201.0.2," in g
    ref_o = (SET / "pkt-oprint" / "oprint.txt").read_text()
    ref_g = (SET / "pkt-gprint" / "gprint.txt").read_text()
    assert "\nip.saddr=1.0.201.10\n" in ref_o and ",ip.saddr=253.0.2.1," in ref_g  # what 2.0.8 printed
