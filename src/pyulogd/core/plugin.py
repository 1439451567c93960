"""What a plugin declares (options, keys, data types) and the base classes it derives from.

A record travelling through a stack is a plain ``list``. Every plugin instance owns a
contiguous block of slots for its output keys, in declaration order, starting at
``instance.out_base``; so a plugin writes output key number ``i`` to ``rec[out_base + i]``.
``None`` means "not valid for this event". Input keys are resolved once, when the stack
is built, to absolute slot numbers in ``instance.in_slots`` (parallel to ``input_keys``,
or to ``wildcard_keys`` for outputs that take every upstream key). An optional input key
that nothing upstream produces points at slot 0, which is never written and so always
reads ``None``.

Value representation by key type: integers and booleans are ``int``; ``IPADDR`` is the
address as ``bytes`` (4 bytes IPv4, 16 bytes IPv6, network order); ``STRING`` is ``str``
(bytes that are not UTF-8 are kept with the ``surrogateescape`` error handler, so text
outputs can write them back unchanged); ``RAW`` is ``bytes`` or ``memoryview``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

# Defined in core/keys.py (the codecs declare their keys with them, see there); re-exported so
# that a plugin finds every declaration here.
from pyulogd.core.keys import Key as Key
from pyulogd.core.keys import KeyType as KeyType
from pyulogd.core.options import Int, OptionKind, Str

if TYPE_CHECKING:
    from pyulogd.core.context import Context
    from pyulogd.core.stack import Stack


# Words ``ulogd -i`` prints for each type.
TYPE_WORDS: dict[KeyType, str] = {
    KeyType.INT8: "int 8",
    KeyType.INT16: "int 16",
    KeyType.INT32: "int 32",
    KeyType.INT64: "int 64",
    KeyType.UINT8: "unsigned int 8",
    KeyType.UINT16: "unsigned int 16",
    KeyType.UINT32: "unsigned int 32",
    KeyType.UINT64: "unsigned int 64",
    KeyType.BOOL: "boolean",
    KeyType.IPADDR: "IP addr",
    KeyType.STRING: "string",
    KeyType.RAW: "raw data",
    KeyType.MAP: "map",
}

INTEGER_TYPES = frozenset(
    {
        KeyType.INT8,
        KeyType.INT16,
        KeyType.INT32,
        KeyType.INT64,
        KeyType.UINT8,
        KeyType.UINT16,
        KeyType.UINT32,
        KeyType.UINT64,
        KeyType.BOOL,
    }
)


class DataType(enum.IntFlag):
    """ulogd's stack data types, used for the "first/last plugin" and mismatch checks."""

    NONE = 0
    SOURCE = 0x01
    RAW = 0x02
    PACKET = 0x04
    FLOW = 0x08
    SUM = 0x10
    SINK = 0x20


# interp() results, as in ulogd.
OK = 0
ERR = -1
STOP = -2


class OptionType:
    """ulogd2's two option types, as kinds: declarations that need no more than ulogd2's
    ``Integer`` or ``String`` may still name them so."""

    INT: ClassVar[OptionKind[Any]] = Int()
    STRING: ClassVar[OptionKind[Any]] = Str()


@dataclass(frozen=True, slots=True)
class Option:
    """A config option of a plugin's ``[instance]`` section.

    ``default`` is declared once, as the typed value or as the text one would write in
    ulogd.conf (``"1G"``, ``"250ms"``); either way the plugin finds the typed value in its
    config when the option is not given, and ``-i`` shows :attr:`default_text`. ``None``
    means "not set" (shown empty). A default is not held to the kind's bounds: 0 often
    stands for "not set" where a given value must be positive.
    """

    name: str
    type: OptionKind[Any]
    default: Any
    required: bool = False
    help: str = ""
    # Extra validation of the typed value beyond its kind: returns an error text or None.
    check: Callable[[Any], str | None] | None = None
    # pyulogd's own option (not ulogd2's): ``-i`` shows its kind's name instead of ulogd2's word.
    extra: bool = False
    default_text: str = field(init=False, default="")

    def __post_init__(self) -> None:
        text = self.default if isinstance(self.default, str) else ("" if self.default is None else
                                                                   self.type.show(self.default))
        object.__setattr__(self, "default_text", text)
        if self.default is not None:
            object.__setattr__(self, "default", self.type.convert(text))

    def parse(self, text: str) -> Any:
        """The typed value of ``text`` given for this option; ValueError with the reason."""
        value = self.type.parse(text)
        if self.check is not None:
            why = self.check(value)
            if why:
                raise ValueError(why)
        return value

    def info_word(self) -> str:
        """The type ``-i`` prints: ulogd2's word for ulogd2's options, the kind's name for ours."""
        return self.type.name if self.extra else self.type.ulogd_word


# A stack's ``run(rec)``: one record through every plugin after the input.
Run = Callable[[list[Any]], None]


@dataclass(frozen=True, slots=True)
class Fusion:
    """One function doing the work of a whole stack of known plugins, declared by a plugin
    that takes part (``Plugin.fusions``) so that the core needs to know none of them.

    After a stack is wired, the daemon (``Stack.fuse``, unless fusion is turned off) offers
    the stack to every fusion its plugins declare whose ``plugins`` are the stack's plugin
    names, input first; ``make(stack)`` returns the replacement ``run`` or None (the stack
    is not what it can handle after all). ``stack.run`` is still the plugins' own run then:
    a fused run hands it every record it is not sure of, and must write what it writes,
    byte for byte. It reads the plugins through their public attributes only.
    """

    plugins: tuple[str, ...]
    make: Callable[[Stack], Run | None]


class Plugin:
    """Base of every plugin. Subclasses declare everything below as class attributes."""

    # The name stacks use (``id:NAME``); declaring it makes the class a plugin the registry
    # finds (core/registry.py).
    name: ClassVar[str] = ""
    # File name of the ulogd2 shared object this plugin replaces (what ``plugin=`` lines
    # name); empty for a plugin ulogd2 does not have.
    so_name: ClassVar[str] = ""
    input_type: ClassVar[DataType] = DataType.NONE
    output_type: ClassVar[DataType] = DataType.NONE
    options: ClassVar[tuple[Option, ...]] = ()
    input_keys: ClassVar[tuple[Key, ...]] = ()
    output_keys: ClassVar[tuple[Key, ...]] = ()
    # Outputs such as JSON take every key produced upstream instead of a fixed list.
    wildcard_inputs: ClassVar[bool] = False
    # Groups of output keys that are never valid without the group's first key: whenever the
    # first is None in a record, so is every other key of the group (e.g. BASE's TCP keys).
    # Outputs may then skip a whole group by checking its first key (see ``wildcard_sentinels``).
    key_blocks: ClassVar[tuple[tuple[str, ...], ...]] = ()
    description: ClassVar[str] = ""
    # Capabilities the plugin still needs after -u drops root (e.g. CAP_NET_ADMIN for
    # netlink requests the kernel checks per message); see docs/security.md.
    capabilities: ClassVar[tuple[str, ...]] = ()
    # Why, as the daemon logs it at start ("keeping CAP_NET_ADMIN: NFACCT 'acct1' <reason>").
    capability_reason: ClassVar[str] = "sends netlink requests after start"
    # Whole-stack fast paths this plugin takes part in (see :class:`Fusion`).
    fusions: ClassVar[tuple[Fusion, ...]] = ()

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        self.ctx = ctx
        self.id = instance_id
        self.config = config
        self.out_base = 0
        self.in_slots: list[int] = []
        # For wildcard outputs: the upstream keys this instance consumes, parallel to in_slots.
        self.wildcard_keys: list[Key] = []
        # For wildcard outputs, parallel to in_slots (set by Stack.finish): the slot of the first
        # key of the producer's ``key_blocks`` group the key belongs to, 0 when in none.
        self.wildcard_sentinels: list[int] = []

    # Life cycle, in ulogd's order: configure (outputs first), resolve keys, start (input first).
    def configure(self) -> None:
        """Check options and prepare; may raise ConfigError or PluginError."""

    def start(self) -> None:
        """Open files and sockets."""

    def running(self) -> None:
        """Every instance has started and ``-u`` has dropped root (the daemon calls it; tests
        that start instances themselves need not). Threads that open files belong here:
        started earlier, whether they opened a file as root or as the user would be a race."""

    def stop(self) -> None:
        """Flush and close. Must be safe to call when start() failed or never ran."""

    def signal(self, signum: int) -> None:
        """SIGHUP, SIGUSR1, SIGUSR2 are delivered here."""

    def needed_capabilities(self) -> dict[str, str]:
        """The capabilities this instance needs after -u drops root, each with the reason
        the daemon logs at start. The default is the class's ``capabilities``."""
        return {cap: f"{self.name} '{self.id}' {self.capability_reason}" for cap in self.capabilities}

    def slot(self, name: str) -> int:
        """The slot an input key named ``name`` was bound to (0 when unbound)."""
        for key, slot in zip(self.input_keys, self.in_slots, strict=False):
            if key.name == name:
                return slot
        raise KeyError(name)


class Source(Plugin):
    """An input plugin: produces events and hands them to its stacks."""

    input_type = DataType.SOURCE
    # The last ``trailer_keys`` output keys are not in the values the source emits: they
    # are the same for every event of an instance (e.g. ``oob.netns``), so they travel in
    # the tail each stack appends. A stack's own ``tail`` leaves them invalid (None); an
    # instance with values for them sets ``tails``, one per stack, that start with them.
    trailer_keys: ClassVar[int] = 0

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        # Every stack this instance feeds (several when stacks share the input id).
        self.stacks: list[Any] = []
        # Per-stack tails replacing ``stack.tail`` (parallel to ``stacks``), or None.
        self.tails: list[list[Any]] | None = None
        # The write-ahead log's (io/wal.py), when it is on: every record this source emits
        # and its sequence number, until the log writes them after the loop round.
        self.wal_rows: list[list[Any]] | None = None
        self.wal_seqs: list[int] = []
        # The same for a source that logs what it read instead (``wal_decode``): per read,
        # ``(now, first sequence number, records, bytes)``.
        self.wal_raw: list[tuple[float, int, int, bytes]] | None = None
        # Records waiting for the log's write (hold/release): (first sequence number, records).
        self.held: list[tuple[int, list[list[Any]]]] | None = None
        # The log's write of everything pending, when the log is on.
        self.wal_write: Callable[[], None] | None = None
        # The log's, for a source that makes sources at run time (a ``netns=`` input's one per
        # namespace): ``wal_adopt(child)`` before the child starts and ``wal_let_go(child)``
        # once it stopped, so that what they emit is logged like the source's own records.
        self.wal_adopt: Callable[[Source], None] | None = None
        self.wal_let_go: Callable[[Source], None] | None = None

    def set_trailer(self, values: list[Any]) -> None:
        """Give the trailer keys these values in every event from now on."""
        n = self.trailer_keys
        assert len(values) == n
        self.tails = [list(values) + list(stack.tail[n:]) for stack in self.stacks]

    def emit(self, values: list[Any]) -> None:
        """Hand one event to every stack. ``values`` is slot 0 (None) then the output keys
        (without the trailer keys). The event gets the next sequence number (``ctx.seq``), and
        goes to the write-ahead log when it is on (held until the log has it, see :meth:`hold`)."""
        ctx = self.ctx
        seq = ctx.seq = ctx.seq + 1
        rows = self.wal_rows
        if rows is not None:
            rows.append(values)
            self.wal_seqs.append(seq)
        held = self.held
        if held is not None:
            held.append((seq, [values]))
            return
        self._run_one(values)

    def _run_one(self, values: list[Any]) -> None:
        stacks = self.stacks
        tails = self.tails
        if len(stacks) == 1:  # the usual case
            stack = stacks[0]
            values.extend(stack.tail if tails is None else tails[0])
            stack.run(values)
            return
        if not stacks:
            return
        if tails is None:
            for stack in stacks[:-1]:
                stack.run(values + stack.tail)
            # The last stack gets the source's own list, saving a copy.
            last = stacks[-1]
            values.extend(last.tail)
            last.run(values)
            return
        for stack, tail in zip(stacks[:-1], tails, strict=False):
            stack.run(values + tail)
        values.extend(tails[-1])
        stacks[-1].run(values)

    def emit_all(self, records: list[list[Any]]) -> None:
        """:meth:`emit` each of ``records`` in turn (the per-event lookups done once)."""
        ctx = self.ctx
        seq = ctx.seq
        rows = self.wal_rows
        if rows is not None:
            rows.extend(records)
            self.wal_seqs.extend(range(seq + 1, seq + 1 + len(records)))
        held = self.held
        if held is not None:
            held.append((seq + 1, records))
            ctx.seq = seq + len(records)
            return
        self._run_all(records)

    def _run_all(self, records: list[list[Any]]) -> None:
        """Every record through the stacks, numbered from ``ctx.seq + 1`` on."""
        stacks = self.stacks
        ctx = self.ctx
        if len(stacks) != 1:
            run_one = self._run_one
            for values in records:
                ctx.seq += 1
                run_one(values)
            return
        stack = stacks[0]
        tail = stack.tail if self.tails is None else self.tails[0]
        run = stack.run
        seq = ctx.seq
        for values in records:
            seq += 1
            ctx.seq = seq
            values.extend(tail)
            run(values)

    # -- the write-ahead log's side (io/wal.py)
    def hold(self) -> None:
        """From now until :meth:`release`, what this source emits waits: the input is reading
        a batch from the kernel, which the write-ahead log writes (one ``write()``) before
        any of it goes down the stacks. Nothing happens without the log."""
        if self.wal_write is not None:
            self.held = []

    def release(self) -> None:
        """The batch read since :meth:`hold` to the log, then through the stacks, each
        record with its own sequence number."""
        held = self.held
        self.held = None
        if not held:
            return
        if self.wal_write is not None:
            self.wal_write()
        ctx = self.ctx
        end = ctx.seq
        try:
            for first, records in held:
                ctx.seq = first - 1
                self._run_all(records)
        finally:
            ctx.seq = end

    def wal_source_for(self, source_id: str) -> Source | None:
        """For a source that makes sources at run time: the one that replays what one of them
        (``source_id``) logged, with its stacks, trailer values and decoder, even when it is
        gone (a namespace deleted while the daemon was down). None: not one of its own."""
        return None

    def wal_decode(self, data: bytes, now: float) -> list[list[Any]] | None:
        """For a source whose records are a function of what it read and ``now`` alone (NFLOG):
        the records of ``data`` as :meth:`emit_all` got them (the log then keeps the bytes read,
        which costs less than the records; replay decodes them again). None: not such a source
        (the log keeps its records)."""
        return None


class Filter(Plugin):
    """A filter: reads its input slots, writes its output slots."""

    # The stack this filter is in, set when the stack is wired (a filter, unlike an input, is
    # in one stack only): a filter that makes records of its own (RATELIMIT's summaries) hands
    # them to the plugins after it with ``stack.downstream(self)``.
    stack: Stack | None = None

    def interp(self, rec: list[Any]) -> int:
        raise NotImplementedError

    def held_since(self) -> int:
        """For a filter that holds records back and later hands their account on (RATELIMIT:
        what it suppressed goes on as a summary at the end of the window): the sequence number
        of the oldest record held whose account has not gone on yet, 0 when none. With the
        write-ahead log on, the commit cursors of the outputs after it stay below it, so a
        crash replays those records instead of losing them with the summary (io/wal.py)."""
        return 0


class Sink(Plugin):
    """An output plugin: writes records somewhere."""

    output_type = DataType.SINK
    # Whether this output takes loss records under ``[global] loss_records=auto`` (the
    # default): pyulogd's own formats do; ulogd2's keep their output ulogd2's, byte for byte,
    # unless loss_records=1 (core/loss.py).
    audit_default: ClassVar[bool] = False

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        # Set by the daemon's audit trail (core/loss.py) from loss_records= and audit_default.
        self.audit_records = False
        # The first slot of the audit keys in this output's stack (Stack.audit_base).
        self.audit_base = 0

    def audit(self, rec: list[Any]) -> bool:
        """An audit record (a loss record or a heartbeat, core/loss.py) for this output: write
        it in the output's own form, through its sink like any record. False: this output
        has no form for it (the default)."""
        return False

    def received(self) -> int:
        """Records this output's sink took on (for the heartbeat's count)."""
        return 0

    def drops(self) -> dict[str, int]:
        """Records this output's sink dropped so far, by cause (the trail writes a loss record
        for new ones)."""
        return {}

    def loss_reported(self) -> dict[str, int]:
        """Of :meth:`drops`, what loss records already took, by cause: a dict the trail updates
        in place (an output keeps it with counters that survive a restart)."""
        mine: dict[str, int] = self.__dict__.setdefault("_loss_reported", {})
        return mine

    def interp(self, rec: list[Any]) -> int:
        raise NotImplementedError

    def flush(self) -> None:
        """Push out buffered records; called after each batch of events and at exit."""
