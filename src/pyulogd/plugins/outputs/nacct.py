"""NACCT: nacct-compatible flow accounting lines (ulogd2 ``ulogd_output_NACCT.so``).

One TAB-separated line per flow, as 2.0.8's ``"%u\\t%u\\t%s\\t%u\\t%s\\t%u\\t%lu\\t%lu"``::

    flow.end.sec  orig.ip.protocol  orig.ip.saddr.str  sport  orig.ip.daddr.str  dport
    reply.raw.pktcount  reply.raw.pktlen

For ICMP (protocol 1) the port columns carry ``icmp.type`` and ``icmp.code``. Invalid
numbers print as 0 and invalid strings as nothing; a line is cut at 255 characters
(2.0.8's buffer). Written in whole-line batches like LOGEMU (``pyulogd.io.filesink``); SIGHUP
reopens the file (``NACCT: reopening logfile``). ``chain_key`` (tamper evidence,
``io/chain.py``): each line ends in `` chain=<seq>:<tag>`` (after the 255-character cut).
"""

from __future__ import annotations

from typing import Any

from pyulogd.core.options import Bool, Path
from pyulogd.core.plugin import DataType, Key, KeyType, Option
from pyulogd.io.chain import chain_options, line_chain
from pyulogd.io.filesink import FileSink
from pyulogd.io.output import Output

IPPROTO_ICMP = 1
_MAX_LINE = 255

T = KeyType
INPUT_KEYS = (
    Key("orig.ip.saddr.str", T.STRING),
    Key("orig.ip.daddr.str", T.STRING),
    Key("orig.ip.protocol", T.UINT8),
    Key("orig.l4.sport", T.UINT16),
    Key("orig.l4.dport", T.UINT16),
    Key("reply.raw.pktlen", T.UINT64),
    Key("reply.raw.pktcount", T.UINT64),
    Key("icmp.code", T.UINT8),
    Key("icmp.type", T.UINT8),
    Key("flow.start.sec", T.UINT32),
    Key("flow.end.sec", T.UINT32),
)


class NacctOutput(Output[str]):
    name = "NACCT"
    so_name = "ulogd_output_NACCT.so"
    description = "nacct-style accounting lines per flow (NFCT + IP2STR)"
    input_type = DataType.PACKET | DataType.FLOW
    options = (
        Option("file", Path(), "/var/log/ulogd_nacct.log", help="file to append to"),
        Option("sync", Bool(), 0, help="accepted; lines are written before the daemon waits"),
        *chain_options(),
    )
    input_keys = INPUT_KEYS
    reopen_notice = "NACCT: reopening logfile"

    def make_sink(self) -> FileSink[str]:
        # tamper evidence (io/chain.py): each line ends in " chain=<seq>:<tag>"
        chain = line_chain(self.ctx, self.config, "text", f"NACCT '{self.id}'")
        return FileSink(self.ctx, self.config["file"], f"nacct.{self.id}", "NACCT", chain=chain)

    def prepare(self) -> None:
        (self._s_saddr, self._s_daddr, self._s_proto, self._s_sport, self._s_dport, self._s_bytes,
         self._s_pkts, self._s_code, self._s_type, _start, self._s_end) = self.in_slots

    def render(self, rec: list[Any]) -> str:
        proto = rec[self._s_proto] or 0
        if proto == IPPROTO_ICMP:
            sport, dport = rec[self._s_type], rec[self._s_code]
        else:
            sport, dport = rec[self._s_sport], rec[self._s_dport]
        text = (
            f"{rec[self._s_end] or 0}\t{proto}\t{rec[self._s_saddr] or ''}\t{sport or 0}\t"
            f"{rec[self._s_daddr] or ''}\t{dport or 0}\t{rec[self._s_pkts] or 0}\t{rec[self._s_bytes] or 0}"
        )
        if len(text) > _MAX_LINE:
            text = text.encode("utf-8", "surrogateescape")[:_MAX_LINE].decode("utf-8", "surrogateescape")
        return text + "\n"
