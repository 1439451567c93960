"""GPRINT: one ``key=value,`` line per event (ulogd2 ``ulogd_output_GPRINT.so``).

The line: with ``timestamp=1``, ``timestamp=YYYY/MM/DD-HH:MM:SS,`` (local time of writing),
then ``name=value,`` for each valid upstream key in stack order (spec 2.8; a name produced
twice appears twice, with its nearest producer's value) of a type GPRINT knows: STRING
(escaped as every outside string, pyulogd.core.escape; PRINTPKT's ``print`` as it is),
BOOL and the integer types up to 32 bits signed / 64 bits unsigned, IPADDR. Other types
(RAW, INT64, ...) are left out. The last character (the final comma) is removed and
``\\n`` added; a record ending in PRINTPKT's ``print`` (which ends in ``\\n``) is
therefore followed by an empty line, as in 2.0.8.

Corrections (docs/compat.md): 2.0.8 prints an IPv6 address as a bogus IPv4 one (its first
4 bytes: ``253.0.2.1`` for fd00:201::1); pyulogd prints ``fd00:201::1``. 2.0.8 writes into
a fixed 4096-byte buffer and overruns it for longer records; pyulogd writes the whole line.

Writing is LOGEMU's (``pyulogd.io.filesink``): whole lines batched on an ``O_APPEND``
descriptor, SIGHUP reopens.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pyulogd.core.options import Bool, Path
from pyulogd.core.plugin import DataType, Option
from pyulogd.io.chain import chain_options, line_chain
from pyulogd.io.filesink import FileSink
from pyulogd.io.output import Output
from pyulogd.plugins.outputs.keytext import fields, kind_of, producers

if TYPE_CHECKING:
    from pyulogd.core.context import Context


def plan(keys: Any, slots: Any) -> list[tuple[int, str, str]]:
    """``(slot, "name=", kind)`` per bound wildcard key of a type GPRINT writes."""
    out = []
    for key, slot in producers(keys, slots):
        kind = kind_of(key)
        if kind is not None:
            out.append((slot, key.name + "=", kind))
    return out


def render(entries: list[tuple[int, str, str]], rec: list[Any], head: str = "") -> str:
    # Every field ends in ","; the last one's (or, with none, the head's last character) goes.
    return (head + "".join(f + "," for f in fields(entries, rec)))[:-1] + "\n"


def stamp(sec: float) -> str:
    tm = time.localtime(sec)
    return (
        f"timestamp={tm.tm_year:04d}/{tm.tm_mon:02d}/{tm.tm_mday:02d}-"
        f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d},"
    )


class GprintOutput(Output[str]):
    name = "GPRINT"
    so_name = "ulogd_output_GPRINT.so"
    description = "One line of comma-separated key=value pairs per event"
    input_type = DataType.PACKET | DataType.FLOW | DataType.SUM
    wildcard_inputs = True
    reopen_notice = "GPRINT: reopening logfile"
    options = (
        Option("file", Path(), "/var/log/ulogd_gprint.log", help="file to append to"),
        Option("sync", Bool(), 0, help="accepted; records are written before the daemon waits"),
        Option("timestamp", Bool(), 0, help="begin each line with timestamp=YYYY/MM/DD-HH:MM:SS "
               "(local time of writing)"),
        *chain_options(),
    )

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self._entries: list[tuple[int, str, str]] = []
        self._audit_entries: list[tuple[int, str, str]] = []
        self._timestamp: bool = config["timestamp"]
        self._sec = -1
        self._head = ""

    def make_sink(self) -> FileSink[str]:
        # tamper evidence (io/chain.py): each line ends in " chain=<seq>:<tag>"
        chain = line_chain(self.ctx, self.config, "text", f"GPRINT '{self.id}'")
        return FileSink(self.ctx, self.config["file"], f"gprint.{self.id}", "GPRINT", chain=chain)

    def prepare(self) -> None:
        self._entries = plan(self.wildcard_keys, self.in_slots)
        self._audit_entries = plan(*self.audit_keys())

    def render_audit(self, rec: list[Any]) -> str | None:
        """The same line of key=value pairs, over the upstream keys and the audit keys."""
        entries = self._entries
        self._entries = self._audit_entries
        try:
            return self.render(rec)
        finally:
            self._entries = entries

    def render(self, rec: list[Any]) -> str:
        head = ""
        if self._timestamp:
            sec = int(self.ctx.clock.wall())
            if sec != self._sec:
                self._head = stamp(sec)
                self._sec = sec
            head = self._head
        return render(self._entries, rec, head)
