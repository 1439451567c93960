"""Tenant separation: which destination(s) a record goes to, by the project(s) it belongs to.

An output with ``split_by=neutron.project_id`` writes each record to the destination of its
project, never to another project's: ``file="/var/log/pyulogd/{project}.json"`` becomes one
file per project. A record belongs to the project of the port it was logged at
(``neutron.project_id``, from the NEUTRON filter); a flow between two projects also names the
other side's (``neutron.peer_project_id``) and goes to both. A record whose project is not
known goes to a destination of its own, ``unresolved``; so does one whose project id is not
one that can name a file: a project id is an outside string (it comes from the mapping
file), and only ``[0-9a-f-]`` (keystone's hex ids, UUIDs) is put into a file name.

:class:`Splitter` decides; :class:`SplitSink` is the output's sink when it splits into files:
one :class:`~pyulogd.io.filesink.FileSink` per destination, so each file is written, rotated,
counted and chained (``chain_key``: a chain of its own per file) as any output file is. An
output hands it each line with its record (:meth:`SplitSink.put`); tables or subjects would
take the same :class:`Splitter`.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pyulogd.core.errors import PluginError
from pyulogd.io.chain import LineChain, load_key
from pyulogd.io.filesink import FileSink
from pyulogd.io.sink import SinkCounters

if TYPE_CHECKING:
    from pyulogd.core.context import Context

SPLIT_KEYS = {"neutron.project_id": ("neutron.project_id", "neutron.peer_project_id")}
PLACEHOLDER = "{project}"
UNRESOLVED = "unresolved"
_NAME = re.compile(r"[0-9a-f][0-9a-f-]{0,63}\Z")
_CACHE_MAX = 4096


def destination_name(value: Any) -> str:
    """The destination a project id stands for: the id itself when it may be part of a file
    name, :data:`UNRESOLVED` otherwise (and when there is none)."""
    if isinstance(value, str) and _NAME.match(value):
        return value
    return UNRESOLVED


def check_template(path: str) -> str | None:
    """Why ``path`` cannot be a per-project file name template (None: it can). The
    placeholder must be in the file name, once, so every destination is in one directory
    that is checked like any output's."""
    if path.count(PLACEHOLDER) != 1:
        return f"must contain {PLACEHOLDER} exactly once (e.g. /var/log/pyulogd/{PLACEHOLDER}.json)"
    if PLACEHOLDER in os.path.dirname(path):
        return f"{PLACEHOLDER} must be in the file name, not in a directory"
    rest = path.replace(PLACEHOLDER, "")
    if "{" in rest or "}" in rest:
        return f"has braces other than {PLACEHOLDER}"
    return None


def path_for(template: str, name: str) -> str:
    """The file of destination ``name`` (a :func:`destination_name` result)."""
    return template.replace(PLACEHOLDER, name)


class Splitter:
    """``destinations(rec)``: the destination names of a record, from the slots of the project
    key and the peer project key (slot 0: never valid). Results are cached by value."""

    def __init__(self, slots: Sequence[int]) -> None:
        self.own, self.peer = (tuple(slots) + (0, 0))[:2]
        self._one: dict[Any, tuple[str, ...]] = {}
        self._two: dict[tuple[Any, Any], tuple[str, ...]] = {}

    def destinations(self, rec: list[Any]) -> tuple[str, ...]:
        p = rec[self.own]
        q = rec[self.peer]
        if q is None or q == p:
            d = self._one.get(p)
            if d is None:
                if len(self._one) >= _CACHE_MAX:
                    self._one.clear()
                d = self._one[p] = (destination_name(p),)
            return d
        key = (p, q)
        d = self._two.get(key)
        if d is None:
            if len(self._two) >= _CACHE_MAX:
                self._two.clear()
            d = self._two[key] = tuple(dict.fromkeys((destination_name(p), destination_name(q))))
        return d


ChainMaker = Callable[[], LineChain]
MAX_OPEN = 512  # files open at once; the least recently written is closed to make room


def chains(config: dict[str, Any], style: str, label: str) -> ChainMaker | None:
    """A new chain for each destination's file (``chain_key``, io/chain.py), or None: the key
    is read once, at configure time (ConfigError naming its file)."""
    key = load_key(config, label)
    if key is None:
        return None
    return lambda: LineChain(key, style, label)


class SplitSink:
    """A :class:`~pyulogd.io.sink.LineSink` of one file per destination, named by
    :func:`path_for` from ``template``.

    Files open on first use, by the rules of any output file (core/safefile.py, through
    FileSink); ``unresolved`` opens at start, so a directory that cannot be written refuses the
    start, not the first record. At most :data:`MAX_OPEN` are open: the least recently written
    is flushed and closed to make room and opened again (append; its chain resumed from its
    last sealed line) when its project writes again, so no record ever goes into another
    project's file for want of a descriptor. A destination whose file cannot be opened loses
    its records, counted as a file output's losses (``<output>.<id>.lines_lost``) and logged
    once, never written elsewhere. Counters are the sum over every file (:attr:`counters`).
    """

    def __init__(self, ctx: Context, template: str, stat_prefix: str, label: str, splitter: Splitter,
                 chain: ChainMaker | None = None) -> None:  # fmt: skip
        self.ctx = ctx
        self.template = template
        self.stat_prefix = stat_prefix
        self.label = label
        self.splitter = splitter
        self.chain = chain
        self.counters = SinkCounters()
        self.files: OrderedDict[str, FileSink[str]] = OrderedDict()
        self.max_open = MAX_OPEN
        self._opens = f"{stat_prefix}.split_opens"
        self._failed: set[str] = set()  # destinations whose file could not be opened (logged once)

    # -- LineSink
    def open(self) -> None:
        self._file(UNRESOLVED, fatal=True)

    def add(self, line: str) -> None:
        """A line without its record has no project: it goes to ``unresolved``."""
        self._put((UNRESOLVED,), line)

    def flush(self) -> None:
        for f in self.files.values():
            f.flush()

    def reopen(self) -> None:
        """SIGHUP: every open file is reopened (one that failed gets another try)."""
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

    # -- records
    def put(self, rec: list[Any], line: str) -> None:
        """``line``, the rendering of ``rec``, to the destination(s) of ``rec``."""
        self._put(self.splitter.destinations(rec), line)

    def _put(self, names: tuple[str, ...], line: str) -> None:
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

    def _file(self, name: str, fatal: bool = False) -> FileSink[str]:
        f: FileSink[str] = FileSink(self.ctx, path_for(self.template, name), self.stat_prefix, self.label,
                                    chain=self.chain() if self.chain is not None else None)  # fmt: skip
        f.counters = self.counters  # one sum for the output
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
