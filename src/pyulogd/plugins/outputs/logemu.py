"""LOGEMU: syslog-style text file (ulogd2 ``ulogd_output_LOGEMU.so``).

Each record is ``"%.15s %s %s"``: ``Mmm dd HH:MM:SS`` (``ctime()`` columns 5-19, local
time, packet time from ``oob.time.sec`` when valid, else now), the short host name, and
the ``print`` string from PRINTPKT/PRINTFLOW (which ends in ``\\n``).

Writing is the file sink's (``pyulogd.io.filesink``): lines are collected and written with one
``os.write`` on an ``O_APPEND`` file descriptor per batch (the loop calls ``flush()`` after
each round of ready sockets, before it waits for the next event), or as soon as 64 KiB are
pending. That already gives what ``sync=1`` promises in ulogd2 (every record is in the file
before the daemon waits for more), so ``sync=1`` does not add a ``write()`` per record: at
high rates that syscall costs more than the rest of the record. Every write holds whole
lines, so several stacks appending to one file never interleave inside a line. SIGHUP
reopens the file (``syslogemu: reopening logfile``, as ulogd2).

``netns_prefix=1`` (pyulogd extra) writes the record's network namespace (``oob.netns``,
from an input with ``netns=`` or ``network_namespace_path=``) as ``[<name>] `` between the
host name and the print string: ``Nov 27 09:14:05 host [qrouter-<id>] IN=qr-1 OUT=...``.
Records without a namespace, and every record with the default 0, keep ulogd2's format.
The name is escaped as every outside string is (pyulogd.core.escape), and so is the host
name: the ``print`` string comes escaped from PRINTPKT, so no name can start a line.

``split_by=neutron.project_id`` (pyulogd extra): one file per project, ``file`` being the
template (``/var/log/pyulogd/{project}.log``); a record goes to its project's file, a flow
between two projects to both, an unresolved one to ``unresolved.log`` (pyulogd.io.tenants).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.core.escape import EscapeCache, escape_text
from pyulogd.core.loss import audit_text
from pyulogd.core.options import Bool, Path, Str
from pyulogd.core.plugin import OK, DataType, Key, KeyType, Option
from pyulogd.io.chain import chain_options, line_chain
from pyulogd.io.filesink import FileSink
from pyulogd.io.output import Output
from pyulogd.io.sink import BufferedSink, LineSink
from pyulogd.io.tenants import SPLIT_KEYS, SplitSink, Splitter, chains, check_template

if TYPE_CHECKING:
    from pyulogd.core.context import Context


def _check_split(value: str) -> str | None:
    if value and value not in SPLIT_KEYS:
        return f"can only split by {', '.join(SPLIT_KEYS)} (or empty: one file)"
    return None


class LogemuOutput(Output[str]):
    name = "LOGEMU"
    so_name = "ulogd_output_LOGEMU.so"
    description = "Syslog-style text file, like the kernel's LOG target"
    reopen_notice = "syslogemu: reopening logfile"
    _file: BufferedSink[str]  # the sink, from configure() on
    input_type = DataType.PACKET | DataType.FLOW
    options = (
        Option("file", Path(), "/var/log/ulogd_syslogemu.log", help="file to append to"),
        Option("sync", Bool(), 0, help="accepted; lines are written before the daemon waits"),
        Option("netns_prefix", Bool(), 0, extra=True, help="pyulogd extra: 1 puts '[<namespace>] ' before the "
               "print string of records from another network namespace (oob.netns)"),
        *chain_options(),
        Option("split_by", Str(), "", extra=True, check=_check_split,
               help="pyulogd extra: neutron.project_id writes one file per project ('file' is the template, "
               "e.g. /var/log/pyulogd/{project}.log): a flow between two projects goes to both, a record "
               "without a project to {project}=unresolved"),
    )
    input_keys = (
        Key("print", KeyType.STRING),
        Key("oob.time.sec", KeyType.UINT32, optional=True),
        Key("oob.netns", KeyType.STRING, optional=True),
        Key("neutron.project_id", KeyType.STRING, optional=True),
        Key("neutron.peer_project_id", KeyType.STRING, optional=True),
    )

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        # The line head (``Mmm dd hh:mm:ss hostname ``) of second ``head_sec``, made once per
        # second (new_second); public, read only, for a fused stack (plugins/fused.py).
        self.head_sec = -1
        self.head = ""
        # Namespace names are outside strings: escaped (pyulogd.core.escape), cached by name.
        self.ns_text = EscapeCache(256)
        # split_by: the sink of the per-project files (None: one file)
        self.split: SplitSink | None = None

    def make_sink(self) -> LineSink[str]:
        label = f"LOGEMU '{self.id}'"
        if self.config["split_by"]:
            why = check_template(self.config["file"])
            if why:
                raise ConfigError(f"option 'file' with split_by: {why}")
            # one file per project, each with a chain of its own (io/chain.py) when chain_key is set
            self.split = SplitSink(self.ctx, self.config["file"], f"logemu.{self.id}", "LOGEMU", Splitter(()),
                                   chains(self.config, "text", label))  # fmt: skip
            return self.split
        # tamper evidence (io/chain.py): each line ends in " chain=<seq>:<tag>"
        chain = line_chain(self.ctx, self.config, "text", label)
        self._file = FileSink(self.ctx, self.config["file"], f"logemu.{self.id}", "LOGEMU", chain=chain)
        return self._file

    def prepare(self) -> None:
        self._s_print, self._s_sec, s_netns, s_project, s_peer = self.in_slots
        # Slot 0 always reads None: without the option the namespace is never looked at.
        self._s_netns = s_netns if self.config["netns_prefix"] else 0
        if self.split is not None:
            if not s_project:
                raise PluginError(f"LOGEMU '{self.id}': split_by={self.config['split_by']} but nothing before it "
                                  "in the stack produces that key (add NEUTRON to the stack)")  # fmt: skip
            self.split.splitter = Splitter((s_project, s_peer))

    def new_second(self, sec: int) -> None:
        """The line head for a new second: ``Mmm dd hh:mm:ss hostname ``."""
        # ctime() is English whatever the locale, as in C; cached for the second.
        self.head = f"{time.ctime(sec)[4:19]} {escape_text(self.ctx.hostname)} "
        self.head_sec = sec

    def render(self, rec: list[Any]) -> str | None:
        text = rec[self._s_print]
        if text is None:
            return None
        sec = rec[self._s_sec]
        if sec is None:
            sec = int(self.ctx.clock.wall())
        if sec != self.head_sec:
            self.new_second(sec)
        ns = rec[self._s_netns]
        return self.head + text if ns is None else f"{self.head}[{self.ns_text(ns)}] {text}"

    def render_audit(self, rec: list[Any]) -> str | None:
        """``Mmm dd hh:mm:ss host [ns] pyulogd: audit.status=SKIPDATA audit.loss.count=N ...``
        (docs/loss.md): the line head of every LOGEMU line, then the audit keys as key=value."""
        sec = int(self.ctx.clock.wall())
        if sec != self.head_sec:
            self.new_second(sec)
        text = f"pyulogd: {audit_text(rec, self.audit_base)}\n"
        ns = rec[self._s_netns]
        return self.head + text if ns is None else f"{self.head}[{self.ns_text(ns)}] {text}"

    def audit(self, rec: list[Any]) -> bool:
        line = self.render_audit(rec)
        if line is None:
            return False
        if self.split is not None:
            self.split.put(rec, line)
        else:
            self._add(line)
        return True

    def interp(self, rec: list[Any]) -> int:
        """``render`` and the file sink's buffered ``add``, written out: LOGEMU is the output
        of ulogd's packet-logging example, and two calls are 2 % of its record (BufferedSink)."""
        text = rec[self._s_print]
        if text is None:
            return OK
        sec = rec[self._s_sec]
        if sec is None:
            sec = int(self.ctx.clock.wall())
        if sec != self.head_sec:
            self.new_second(sec)
        ns = rec[self._s_netns]
        line = self.head + text if ns is None else f"{self.head}[{self.ns_text(ns)}] {text}"
        if self.split is not None:
            self.split.put(rec, line)
            return OK
        out = self._file
        out.pending.append(line)
        out.size += len(line)
        if out.size >= out.limit:
            out.flush()
        return OK
