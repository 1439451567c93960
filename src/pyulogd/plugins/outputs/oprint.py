"""OPRINT: a debugging dump of every key (ulogd2 ``ulogd_output_OPRINT.so``).

Per event: ``===>PACKET BOUNDARY``, then one ``name=value`` line for each valid upstream key
in stack order (spec 2.8: a name produced twice appears twice, both times with its nearest
producer's value). Values by the producer's key type (spec 3): strings escaped
(pyulogd.core.escape; PRINTPKT's ``print`` line as it is), BOOL and
signed integers with ``%d``, unsigned ones with ``%u``, ``NONE`` as ``<none>``, everything
else (RAW, INT64, ...) as ``default``.

Correction: 2.0.8 prints IPv4 addresses byte-reversed (``ip.saddr=1.0.201.10`` for
10.201.0.1) and IPv6 addresses as their first 4 bytes reversed; pyulogd prints
``10.201.0.1`` and ``fd00:201::1`` (as 2.0.9 does). See docs/compat.md.

Writing is LOGEMU's (``pyulogd.io.filesink``): whole records batched on an ``O_APPEND``
descriptor, SIGHUP reopens. ``chain_key`` (tamper evidence, ``io/chain.py``): the last line of
each record ends in `` chain=<seq>/<lines>:<tag>``, an HMAC of the record's lines chained to
the record before (``pyulogd-audit verify``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyulogd.core.options import Bool, Path
from pyulogd.core.plugin import DataType, KeyType, Option
from pyulogd.io.chain import chain_options, line_chain
from pyulogd.io.filesink import FileSink
from pyulogd.io.output import Output
from pyulogd.plugins.outputs.keytext import fields, kind_of, producers

if TYPE_CHECKING:
    from pyulogd.core.context import Context

BOUNDARY = "===>PACKET BOUNDARY\n"

# Key types without a text of their own: a fixed text instead.
_FIXED = {KeyType.NONE: "<none>"}


def plan(keys: Any, slots: Any) -> list[tuple[int, str, str]]:
    """``(slot, "name=", kind)`` per bound wildcard key; kind ``=text`` means a fixed value."""
    out = []
    for key, slot in producers(keys, slots):
        kind = kind_of(key)
        if kind is None:
            kind = "=" + _FIXED.get(key.type, "default")
        out.append((slot, key.name + "=", kind))
    return out


def render(entries: list[tuple[int, str, str]], rec: list[Any]) -> str:
    return BOUNDARY + "".join(f + "\n" for f in fields(entries, rec))


class OprintOutput(Output[str]):
    name = "OPRINT"
    so_name = "ulogd_output_OPRINT.so"
    description = "Debugging dump: every key of every event as name=value lines"
    input_type = DataType.PACKET | DataType.FLOW
    wildcard_inputs = True
    reopen_notice = "OPRINT: reopening logfile"
    options = (
        Option("file", Path(), "/var/log/ulogd_oprint.log", help="file to append to"),
        Option("sync", Bool(), 0, help="accepted; records are written before the daemon waits"),
        *chain_options(),
    )

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self._entries: list[tuple[int, str, str]] = []
        self._audit_entries: list[tuple[int, str, str]] = []

    def make_sink(self) -> FileSink[str]:
        # tamper evidence (io/chain.py): a record's last line ends in " chain=<seq>/<lines>:<tag>"
        chain = line_chain(self.ctx, self.config, "text", f"OPRINT '{self.id}'")
        return FileSink(self.ctx, self.config["file"], f"oprint.{self.id}", "OPRINT", chain=chain)

    def prepare(self) -> None:
        self._entries = plan(self.wildcard_keys, self.in_slots)
        self._audit_entries = plan(*self.audit_keys())

    def render_audit(self, rec: list[Any]) -> str | None:
        """A packet boundary and name=value lines, over the upstream keys and the audit keys."""
        return render(self._audit_entries, rec)

    def render(self, rec: list[Any]) -> str:
        return render(self._entries, rec)
