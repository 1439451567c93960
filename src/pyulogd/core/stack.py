"""Stacks: ``id:PLUGIN,...`` lines turned into wired plugin instances (ulogd2 ``ulogd.c``).

``build_stack`` reads a ``stack=`` line: parse it, find each plugin (core/registry.py),
check its role (input first, output last), read its options, instantiate; then
:func:`wire` follows ulogd: configure from the output back to the input, resolve input keys
to the nearest upstream producer, compile ``run``. Start is the daemon's, input onwards
(``Service.start``), after it offered the stack to fusion (``Stack.fuse``). Key names
become slot numbers here, once; the hot path only indexes lists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyulogd.core import registry
from pyulogd.core.config import ConfigFile, option_values
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.loss import AUDIT_INDEX, AUDIT_KEYS
from pyulogd.core.plugin import ERR, STOP, Filter, Fusion, Key, Plugin, Run, Sink, Source


class Stack:
    """Wired plugin instances, input first, and ``run``: one record through them all.

    Made by :func:`wire`; until then ``run`` is not set.
    """

    run: Run

    def __init__(self, ctx: Context, spec: str, instances: list[Plugin], line: int | None = None) -> None:
        self.ctx = ctx
        self.spec = spec
        self.line = line
        self.instances = instances
        self.source: Source = instances[0]  # type: ignore[assignment]
        self.sink: Sink = instances[-1]  # type: ignore[assignment]
        nslots = 1
        for inst in instances:
            inst.out_base = nslots  # the shared source is first everywhere, so always 1
            nslots += len(inst.output_keys)
        # The audit keys (loss records, heartbeats: core/loss.py) come last: ordinary records
        # leave them None, so outputs that name them as input keys read them like any key.
        self.audit_base = nslots
        nslots += len(AUDIT_KEYS)
        self.nslots = nslots
        head = 1 + len(self.source.output_keys) - self.source.trailer_keys
        # What a source appends to its own values to make a whole record for this stack.
        self.tail: list[Any] = [None] * (nslots - head)
        self.chain: list[Callable[[list[Any]], int]] = []
        self.errors = 0
        self._err_name = f"stack.{instances[-1].id}.errors"
        # The fusion whose run replaced the plugins' own (see fuse()), if any.
        self.fused_by: Fusion | None = None

    def finish(self) -> None:
        """Called once every instance is configured and resolved: ``run(rec)`` propagates one
        record (the source's values plus ``self.tail``) through the stack as straight-line code."""
        self.chain = [inst.interp for inst in self.instances[1:]]  # type: ignore[attr-defined]
        self.run = _compile_run(self.chain, self.on_return, self.on_exception)
        self.sink.audit_base = self.audit_base
        for inst in self.instances[1:]:
            if isinstance(inst, Filter):
                inst.stack = self
        for pos, inst in enumerate(self.instances):
            if inst.wildcard_inputs:
                inst.wildcard_sentinels = _sentinels(self.instances[:pos], inst.in_slots)

    def downstream(self, inst: Plugin) -> Run:
        """``run`` for the plugins after ``inst``: a filter that makes records of its own, in
        this stack's layout (``[None] * nslots`` and its values), hands them on with it, and
        they meet every later plugin as an input's record would, errors counted the same way."""
        for pos, member in enumerate(self.instances):
            if member is inst:
                return _compile_run(self.chain[pos:], self.on_return, self.on_exception)
        raise ValueError(f"{inst.name} '{inst.id}' is not in stack {self.spec!r}")

    def fuse(self) -> Fusion | None:
        """Replace ``run`` by the first fusion one of the plugins declares for a stack of
        exactly these plugins that accepts it (:class:`~pyulogd.core.plugin.Fusion`).
        The daemon calls this after wiring unless fusion is turned off."""
        names = tuple(inst.name for inst in self.instances)
        for inst in self.instances:
            for fusion in inst.fusions:
                if fusion.plugins != names:
                    continue
                run = fusion.make(self)
                if run is not None:
                    self.run = run
                    self.fused_by = fusion
                    how = f"{fusion.make.__module__}.{fusion.make.__qualname__}"
                    self.ctx.log.info(f"stack {self.spec!r} fused ({how})")
                    return fusion
        return None

    def on_return(self, r: int) -> None:
        """A plugin returned ``r`` (non-zero): STOP ends the record quietly, anything else is
        an error, counted for this stack."""
        if r == STOP:
            return
        self._fail("error during propagate_results" if r == ERR else f"unknown return value {r}")

    def on_exception(self, e: Exception) -> None:
        """A plugin raised ``e`` while ``run`` propagated a record: counted for this stack,
        the record dropped for it, the daemon goes on."""
        self._fail(f"error during propagate_results: {type(e).__name__}: {e}")

    def _fail(self, msg: str) -> None:
        self.errors += 1
        self.ctx.stats.incr(self._err_name)
        # The record is lost for this stack: reported once, here, for the loss record.
        self.ctx.losses.report(self, 1, "plugin_error", self.ctx.clock.wall())
        # Log the first failure of a burst and then every 1000th, never each one.
        if self.errors == 1 or self.errors % 1000 == 0:
            self.ctx.log.notice(f"{msg} (stack {self.spec!r}, {self.errors} so far)")


def _sentinels(upstream: list[Plugin], slots: list[int]) -> list[int]:
    """For each slot: the slot of the first key of the ``key_blocks`` group it is in, or 0."""
    first: dict[int, int] = {}
    for up in upstream:
        index: dict[str, int] = {}
        for i, key in enumerate(up.output_keys):
            index.setdefault(key.name, i)
        for block in up.key_blocks:
            head = up.out_base + index[block[0]]
            for name in block:
                first[up.out_base + index[name]] = head
    return [first.get(slot, 0) if slot else 0 for slot in slots]


def _compile_run(
    chain: list[Callable[[list[Any]], int]],
    returned: Callable[[int], None],
    raised: Callable[[Exception], None],
) -> Run:
    """``run(rec)`` for a fixed chain of interps, as straight-line code: no loop, no attribute
    lookups per record (the bound interps are globals of the generated function)."""
    ns: dict[str, Any] = {"RET": returned, "RAISED": raised, "Exception": Exception}
    src = ["def run(rec):", "    try:"]
    for i, interp in enumerate(chain):
        ns[f"f{i}"] = interp
        src += [f"        r = f{i}(rec)", "        if r:", "            RET(r)", "            return"]
    src += [
        "        pass",
        "    except Exception as e:  # a plugin bug must not take the daemon or other events down",
        "        RAISED(e)",
    ]
    exec(compile("\n".join(src), "<stack run>", "exec"), ns)  # noqa: S102 - our own text
    run: Run = ns["run"]
    return run


def parse_stack_spec(spec: str, path: str, line: int | None) -> list[tuple[str, str]]:
    """``id:PLUGIN,...`` as (id, plugin name) pairs. Refused: an empty element (``a:X,,b:Y``, a
    comma at either end: a plugin left out by mistake) and an id twice in one stack (each id
    names its instance's ``[section]``; two instances of one stack cannot share one)."""
    tokens: list[tuple[str, str]] = []
    seen: set[str] = set()
    for n, tok in enumerate(spec.replace("\n", ",").split(","), start=1):
        if not tok:
            raise ConfigError(f"stack element {n} is empty (a comma too many, or a plugin left out)",
                              path, line)
        if ":" not in tok:
            raise ConfigError(f"syntax error in stack element '{tok}': expected 'id:PLUGIN'", path, line)
        inst_id, name = tok.split(":", 1)
        if not inst_id or len(inst_id) >= 31:
            raise ConfigError(f"bad instance id '{inst_id}' in stack element '{tok}'", path, line)
        if inst_id in seen:
            raise ConfigError(f"instance id '{inst_id}' appears twice in the stack (stack element {n}); "
                              "each instance of a stack needs an id of its own", path, line)
        seen.add(inst_id)
        tokens.append((inst_id, name))
    if len(tokens) < 2:
        raise ConfigError("a stack needs an input and an output plugin", path, line)
    return tokens


def build_stack(
    ctx: Context,
    cfg: ConfigFile,
    spec: str,
    line: int | None,
    sources: dict[str, Source],
    allowed: set[str] | None = None,
) -> Stack:
    """Build one stack from a ``stack=`` line: parse it, find each plugin and check its
    role, read its options, instantiate, :func:`wire`. ``sources`` maps input ids already
    built (shared between stacks); ``allowed``, the plugins of the plugin= lines, if any."""
    path = cfg.path
    tokens = parse_stack_spec(spec, path, line)
    instances: list[Plugin] = []
    for pos, (inst_id, name) in enumerate(tokens):
        if allowed is not None and name not in allowed:
            raise ConfigError(
                f"plugin {name} is not loaded: add a plugin= line for it or remove all plugin= lines",
                path,
                line,
            )
        try:
            cls = registry.get(name)
        except ConfigError as e:
            raise ConfigError(e.reason, path, line) from None
        if pos == 0:
            if not issubclass(cls, Source):
                raise ConfigError(f"first plugin in stack has to be source plugin, not {name}", path, line)
            shared = sources.get(inst_id)
            if shared is not None:
                if type(shared) is not cls:
                    raise ConfigError(
                        f"input id '{inst_id}' is already a {shared.name}, not {name}", path, line
                    )
                ctx.log.info(f"{inst_id} instance already loaded")
                instances.append(shared)
                continue
        elif issubclass(cls, Source):
            raise ConfigError(f"input plugin {name} can only be first in a stack", path, line)
        if pos == len(tokens) - 1 and not issubclass(cls, Sink):
            raise ConfigError(f"last plugin in stack has to be output plugin, not {name}", path, line)
        if 0 < pos < len(tokens) - 1 and not issubclass(cls, Filter):
            raise ConfigError(f"plugin {name} cannot be in the middle of a stack", path, line)
        values = option_values(
            cls.options, cfg.section(inst_id), cfg, inst_id, name, warn=ctx.log.notice
        )
        try:
            instances.append(cls(ctx, inst_id, values))
        except ConfigError as e:  # what a plugin refuses when it is made is located at its stack
            if e.file is not None:
                raise
            raise ConfigError(e.reason, path, line) from None

    new_source = tokens[0][0] not in sources
    stack = wire(ctx, instances, spec=spec, path=path, line=line)
    if new_source:
        sources[stack.source.id] = stack.source
    return stack


def wire(
    ctx: Context,
    instances: list[Plugin],
    *,
    spec: str = "",
    path: str | None = None,
    line: int | None = None,
) -> Stack:
    """Wire plugin instances (an input, filters, an output) into a working stack, as ulogd
    does once its plugins are loaded: configure from the output back to the input, bind
    every input key to the nearest upstream producer, compile ``run``, and make the input
    feed the stack. An input that already feeds a stack is shared: it is not configured
    again. ``build_stack`` does this after reading a ``stack=`` line; tests call it on
    instances of their own. Errors are ConfigErrors with ``path`` and ``line`` (the
    ``stack=`` line, or the line a plugin names)."""
    for prev, cur in zip(instances, instances[1:], strict=False):
        if not (cur.input_type & prev.output_type) and not cur.wildcard_inputs:
            ctx.log.debug(f"type mismatch between {cur.name} and {prev.name} in stack")
    stack = Stack(ctx, spec, instances, line)
    new_source = not stack.source.stacks
    # Configure from the output back to the input (outputs with wildcard keys list them here).
    for pos in range(len(instances) - 1, -1, -1):
        inst = instances[pos]
        if pos == 0 and not new_source:
            continue
        if inst.wildcard_inputs:
            inst.wildcard_keys = [k for up in instances[:pos] for k in up.output_keys]
        try:
            inst.configure()
        except ConfigError as e:
            raise ConfigError(e.reason, path, e.line if e.line is not None else line) from None
    for pos in range(len(instances) - 1, 0, -1):
        inst = instances[pos]
        keys: list[Key] = inst.wildcard_keys if inst.wildcard_inputs else list(inst.input_keys)
        inst.in_slots = [_resolve(k, instances[:pos], path, line, inst, stack.audit_base) for k in keys]
    stack.finish()
    stack.source.stacks.append(stack)
    return stack


def _resolve(key: Key, upstream: list[Plugin], path: str | None, line: int | None, inst: Plugin,
             audit_base: int = 0) -> int:
    """The slot of the nearest upstream producer of ``key`` (0: none, and the key may be unbound);
    the audit keys (core/loss.py), which no plugin produces, are the stack's own last slots."""
    if key.inactive:
        return 0
    for up in reversed(upstream):
        for i, out in enumerate(up.output_keys):
            if out.name == key.name:
                return up.out_base + i
    if audit_base and key.name in AUDIT_INDEX:
        return audit_base + AUDIT_INDEX[key.name]
    if key.optional:
        return 0
    raise ConfigError(f"cannot find key '{key.name}' in stack (needed by {inst.name} '{inst.id}')", path, line)
