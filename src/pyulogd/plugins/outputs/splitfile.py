"""One whole-line file per destination (per project): the file outputs' ``split_by``.

Which destinations a record goes to is :class:`pyulogd.io.tenants.Splitter`'s decision;
this keeps a :class:`~pyulogd.plugins.outputs.linefile.LineFile` per destination, opened on
first use by the same safe rules as any output file (core/safefile.py) and written the same
way (whole lines, one write per batch). At most :data:`MAX_OPEN` files are open at once:
the least recently written is flushed and closed to make room, and opened again (append)
when its project writes again, so no record is ever put into another project's file for
want of a descriptor. The ``unresolved`` file is opened at start, so a directory that
cannot be written is refused then, not at the first record. With ``chain_key`` every file has
a chain of its own (io/chain.py), resumed from its last sealed line when it is opened again:
``pyulogd-audit verify`` checks each project's file alone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyulogd.core.errors import PluginError
from pyulogd.io.chain import LineChain, load_key
from pyulogd.io.tenants import UNRESOLVED, path_for
from pyulogd.plugins.outputs.linefile import LineFile

if TYPE_CHECKING:
    from pyulogd.core.context import Context

ChainMaker = Callable[[], LineChain]


def chains(config: dict[str, Any], style: str, label: str) -> ChainMaker | None:
    """A new chain for each destination's file (``chain_key``, io/chain.py), or None: the key
    is read once, at configure time (ConfigError naming its file)."""
    key = load_key(config, label)
    if key is None:
        return None
    return lambda: LineChain(key, style, label)

MAX_OPEN = 512


class SplitFiles:
    def __init__(self, ctx: Context, template: str, sync: bool, stat_prefix: str, label: str,
                 chain: ChainMaker | None = None) -> None:  # fmt: skip
        self.ctx = ctx
        self.chain = chain
        self.template = template
        self.sync = sync
        self.stat_prefix = stat_prefix
        self.label = label
        self.files: OrderedDict[str, LineFile] = OrderedDict()
        self.max_open = MAX_OPEN
        self._opens = f"{stat_prefix}.split_opens"
        self._failed: set[str] = set()  # destinations whose file could not be opened (logged once)

    def open(self) -> None:
        self._file(UNRESOLVED, fatal=True)

    def _file(self, name: str, fatal: bool = False) -> LineFile:
        f = LineFile(self.ctx, path_for(self.template, name), self.sync, self.stat_prefix, self.label)
        if self.chain is not None:
            f.chain = self.chain()  # resumed from the file's last sealed line when it opens
        try:
            f.open()
        except PluginError as e:
            if fatal:
                raise
            if name not in self._failed:
                self._failed.add(name)
                self.ctx.log.error(f"{e}; records of that project are counted as lost until it opens")
        else:
            self._failed.discard(name)
        self.ctx.stats.incr(self._opens)
        if len(self.files) >= self.max_open:
            _old, victim = self.files.popitem(last=False)
            victim.close()
        self.files[name] = f
        return f

    def add(self, names: tuple[str, ...], line: str) -> None:
        files = self.files
        for name in names:
            f = files.get(name)
            if f is None:
                f = self._file(name)
            else:
                files.move_to_end(name)
            f.pending.append(line)
            f.size += len(line)
            if f.size >= f.limit:
                f.flush()

    def flush(self) -> None:
        for f in self.files.values():
            f.flush()

    def reopen(self) -> None:
        """SIGHUP: every open destination is reopened (a file that failed gets another try)."""
        for name, f in self.files.items():
            if f.fd < 0:
                f.flush()  # counts what waited for it
                try:
                    f.open()
                except PluginError:
                    continue
                self._failed.discard(name)
            else:
                f.reopen()

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()
