"""NATSIN: records from a JetStream stream, back with their original keys, acknowledged only
once every output of its stacks committed them (issue 18; docs/central.md).

A durable pull consumer (explicit ack) that any number of collectors share: each message,
a batch the NATS output published, is decoded (``io/recordfmt.py``) and its records emitted
with the keys they had on the node, plus ``pyulogd.node_id`` (from the ``Pyulogd-Node``
header), ``pyulogd.node_seq`` (the node's sequence number of the record), the key the central
database de-duplicates on, and ``pyulogd.received`` (when the node received it). So a
collector runs ordinary stacks (``NATSIN -> PGSQL``, ``NATSIN -> AUDITDB``, ``NATSIN -> ECS``).

At-least-once, end to end: a message is acked only when every output of the stacks it went
down says its records are committed (``Output.commit_mark``: for PGSQL and AUDITDB, the
transaction with the rows committed; an output's own spool is not a commit). A collector
killed at any point leaves its unacked messages to the consumer, which redelivers them after
``ack_wait``, to this collector or another; the database drops the rows it already has
(PGSQL's ``unique_key``). Messages that wait for a slow database are kept from redelivery with
in-progress acks. At most ``max_inflight`` messages are unacked at a time, which bounds the
collector's memory and what a restart re-reads.

The client runs in a thread of its own with its own asyncio loop (nats-py is asyncio; the
daemon's loop is not); messages reach the daemon's loop through a queue and a pipe the loop
reads, and acks go back with ``run_coroutine_threadsafe``.

Which keys: every output key of every plugin pyulogd has (``keys_from`` narrows it to some
plugins' keys), so whatever stack the nodes run, its keys exist here with their types; a key
of a record that none declares is dropped from it and counted (``unknown_keys``).

After the connection was away (the broker stopped), the messages stored since, up to the
consumer's position, are read again straight from the stream: JetStream can come back with its
consumer ahead of the stream after the whole cluster stopped, and would never deliver them
(``_catch_up``; docs/central.md). The database's unique key drops what was delivered anyway.

Counters (``natsin.<id>.``): ``messages``, ``records``, ``acked``, ``redelivered``,
``corrupt`` (messages that are not record batches: terminated, never redelivered),
``unknown_keys``, ``fetch_errors``, ``outages`` (the connection lost), ``reread`` (messages
read again after an outage).
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import types
from typing import TYPE_CHECKING, Any

from pyulogd.core import registry
from pyulogd.core.backoff import Backoff
from pyulogd.core.errors import ConfigError
from pyulogd.core.log import DEBUG
from pyulogd.core.options import Duration, Int, Str
from pyulogd.core.plugin import DataType, Key, KeyType, Option, Source
from pyulogd.io.natsmsg import HDR_MSG_ID, HDR_NODE
from pyulogd.io.output import Output
from pyulogd.io.recordfmt import FormatError, decode_batch
from pyulogd.plugins import natsconn

if TYPE_CHECKING:
    from pyulogd.core.context import Context, TimerHandle

NODE_KEY = Key("pyulogd.node_id", KeyType.STRING, help="the node that logged the record (its NATS output's node id)")
SEQ_KEY = Key("pyulogd.node_seq", KeyType.UINT64, help="the node's sequence number of the record")
RECEIVED_KEY = Key("pyulogd.received", KeyType.UINT64,
                   help="when the node received the record, µs since the epoch (its NATS output adds it)")
OWN_KEYS = (RECEIVED_KEY, NODE_KEY, SEQ_KEY)
CHECK_EVERY = 0.05
# After an outage (_catch_up): how far before it a stored message still counts as after it
# (the servers' clocks against ours), and how many messages are read again at most.
CATCH_UP_MARGIN = 2.0
CATCH_UP_MAX = 20_000


def all_keys(only: list[str] | None) -> list[Key]:
    """Output keys of every plugin (or of the plugins ``keys_from`` names), first declaration of
    a name wins. A name that is no plugin is a ConfigError saying so; ``build_stack`` adds the
    file and line of the stack."""
    seen: dict[str, Key] = {}
    for name in only if only is not None else registry.names():
        try:
            cls = registry.get(name)
        except ConfigError as e:
            raise ConfigError(f"keys_from: {e.reason}") from None
        if cls.name == "NATSIN":
            continue
        for key in cls.output_keys:
            if key.name not in seen and key.name not in {k.name for k in OWN_KEYS}:
                seen[key.name] = Key(key.name, key.type, cim=key.cim, help=key.help)
    return list(seen.values())


class _Reread:
    """A message read straight from the stream after an outage (``_catch_up``): fed as the
    consumer's are; nothing to acknowledge, the consumer does not hold it."""

    def __init__(self, raw: Any) -> None:
        self.data = raw.data or b""
        self.headers = raw.headers
        self.subject = raw.subject or ""
        self.metadata = types.SimpleNamespace(sequence=types.SimpleNamespace(stream=raw.seq), num_delivered=0)

    async def ack(self) -> None:
        pass

    async def term(self) -> None:
        pass

    async def in_progress(self) -> None:
        pass


def _matches(pattern: str, subject: str) -> bool:
    """``subject`` is one of NATS subject filter ``pattern``'s (``*`` a token, ``>`` the rest);
    an empty pattern takes every subject."""
    if not pattern:
        return True
    want, have = pattern.split("."), subject.split(".")
    for i, tok in enumerate(want):
        if tok == ">":
            return len(have) > i
        if i >= len(have) or (tok != "*" and tok != have[i]):
            return False
    return len(have) == len(want)


def _where(meta: Any) -> str:
    """A message's stream sequence and delivery count, for the debug log."""
    seq = getattr(getattr(meta, "sequence", None), "stream", "?")
    return f"{seq}/{getattr(meta, 'num_delivered', '?')}"


class NatsInput(Source):
    name = "NATSIN"
    description = "Records from a NATS JetStream stream (durable pull consumer), acked once every output committed them"
    output_type = DataType.PACKET | DataType.FLOW | DataType.SUM
    options = (
        *natsconn.CONNECTION,
        Option("durable", Str(), "pyulogd-collector", extra=True,
               help="durable consumer name (collectors sharing it share the work)"),
        Option("filter_subject", Str(), "", extra=True, help="only these subjects of the stream (empty: all)"),
        Option("fetch_batch", Int(1, 10000), 64, extra=True, help="messages asked for per fetch"),
        Option("max_inflight", Int(1, 100000), 256, extra=True, help="messages delivered and not yet acked, at most"),
        Option("ack_wait", Duration(positive=True), "30", extra=True,
               help="seconds before the server redelivers an unacked message (in-progress acks extend it)"),
        Option("keys_from", Str(), "", extra=True,
               help="plugins whose output keys the records may have, comma-separated (empty: every plugin)"),
    )
    # The class declares the two keys of its own; an instance adds the keys of every plugin.
    output_keys = OWN_KEYS

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        only = [n.strip().upper() for n in (config.get("keys_from") or "").split(",") if n.strip()] or None
        self.__dict__["output_keys"] = (*all_keys(only), *OWN_KEYS)
        self.label = f"NATSIN '{instance_id}'"
        self._index = {k.name: i + 1 for i, k in enumerate(self.output_keys)}
        self._builders: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()
        self._inbox: collections.deque[Any] = collections.deque()
        self._waiting: collections.deque[tuple[Any, int, float]] = collections.deque()  # (msg, seq, since)
        self.inflight = 0
        self._outputs: list[Output[Any]] = []
        self._pipe_r = self._pipe_w = -1
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._timer: TimerHandle | None = None
        self._room: asyncio.Event | None = None

    def configure(self) -> None:
        self.conn = natsconn.connect_options(self.config, self.label)
        natsconn.nats_modules()

    def start(self) -> None:
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ctx.loop.add_reader(self._pipe_r, self._read)

    def running(self) -> None:
        """Every output has started: ask them for commits, then begin fetching."""
        seen: set[int] = set()
        for stack in self.stacks:
            for inst in stack.instances[1:]:
                if isinstance(inst, Output) and id(inst) not in seen:
                    seen.add(id(inst))
                    inst.track_commits()
                    self._outputs.append(inst)
        self._timer = self.ctx.loop.call_later(CHECK_EVERY, self._check, repeat=True)
        self.ctx.loop.after_batch.append(self._check)
        self._thread = threading.Thread(target=self._run, name=f"pyulogd-{self.label}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._check in self.ctx.loop.after_batch:
            self._check()  # acks for what is committed now
            self.ctx.loop.after_batch.remove(self._check)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(lambda: None)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(10.0)
        if self._pipe_r >= 0:
            self.ctx.loop.remove_reader(self._pipe_r)
            os.close(self._pipe_r)
            os.close(self._pipe_w)
            self._pipe_r = self._pipe_w = -1

    # ------------------------------------------------------------------ the daemon's loop
    def _read(self) -> None:
        try:
            os.read(self._pipe_r, 4096)
        except BlockingIOError:
            pass
        with self._lock:
            msgs = list(self._inbox)
            self._inbox.clear()
        stats = self.ctx.stats
        p = f"natsin.{self.id}"
        now = self.ctx.clock.monotonic()
        debug = self.ctx.log.level <= DEBUG
        for msg in msgs:
            stats.incr(f"{p}.messages")
            meta = getattr(msg, "metadata", None)
            if getattr(meta, "num_delivered", 1) > 1:
                stats.incr(f"{p}.redelivered")
            first = self.ctx.seq + 1
            if not self.feed(msg.data, (msg.headers or {}).get(HDR_NODE, ""), msg.subject):
                self._post(msg, "term")
                continue
            if debug:  # where a message went: its stream sequence, the records it became here
                self.ctx.log.debug(f"{self.label}: message {_where(meta)} {(msg.headers or {}).get(HDR_MSG_ID)}: "
                                   f"records {first}..{self.ctx.seq}")
            self._waiting.append((msg, self.ctx.seq, now))

    def feed(self, body: bytes, node: str = "", subject: str = "") -> bool:
        """One message body (a record batch): its records down the stacks, with ``node`` as
        their ``pyulogd.node_id``. False (counted, logged) when it is not a record batch."""
        try:
            batch = decode_batch(body)
        except FormatError as e:
            self.ctx.stats.incr(f"natsin.{self.id}.corrupt")
            self.ctx.log.error(f"{self.label}: a message on {subject or '?'} is not a record batch ({e}); "
                               "terminated")
            return False
        build = self._builders.get(batch.names)
        if build is None:
            build = self._builders[batch.names] = self._compile(batch.names)
        seqs = batch.seqs or [0] * len(batch.rows)
        records = [build(row, node, seq) for row, seq in zip(batch.rows, seqs, strict=True)]
        self.ctx.stats.incr(f"natsin.{self.id}.records", len(records))
        self.emit_all(records)
        return True

    def _compile(self, names: tuple[str, ...]) -> Any:
        """``build(row, node, seq)``: the record's value list, slot 0 first."""
        index = self._index
        unknown = [n for n in names if n not in index]
        if unknown:
            self.ctx.stats.incr(f"natsin.{self.id}.unknown_keys", len(unknown))
            self.ctx.log.error(f"{self.label}: records with keys no plugin declares ({', '.join(unknown[:5])}"
                               f"{', ...' if len(unknown) > 5 else ''}): dropped from them")
        lines = ["def build(row, node, seq):", "    v = T[:]"]
        for j, name in enumerate(names):
            if name in index:
                lines.append(f"    v[{index[name]}] = row[{j}]")
        lines += [f"    v[{index[NODE_KEY.name]}] = node", f"    v[{index[SEQ_KEY.name]}] = seq", "    return v"]
        ns: dict[str, Any] = {"T": [None] * (len(self.output_keys) + 1)}
        exec(compile("\n".join(lines) + "\n", f"<{self.label} record>", "exec"), ns)  # noqa: S102 - slots only
        return ns["build"]

    def _check(self) -> None:
        """Ack, in order, the messages whose records every output has committed."""
        waiting = self._waiting
        if not waiting:
            return
        for out in self._outputs:
            out.flush()  # idempotent: what this round produced is handed on before the marks
        mark = min((out.commit_mark() for out in self._outputs), default=self.ctx.seq)
        done: list[Any] = []
        while waiting and waiting[0][1] <= mark:
            done.append(waiting.popleft()[0])
        if done:
            self.ctx.stats.incr(f"natsin.{self.id}.acked", len(done))
            if self.ctx.log.level <= DEBUG:
                self.ctx.log.debug(f"{self.label}: acking {len(done)} messages (records up to {mark} committed): "
                                   f"{' '.join(_where(getattr(m, 'metadata', None)) for m in done)}")
            self._post_all(done, "ack")
        # Messages that wait long for their commit (a database outage): keep them ours.
        now = self.ctx.clock.monotonic()
        half = self.config["ack_wait"] / 2
        if waiting and waiting[0][2] + half <= now:
            old = []
            for i, (msg, seq, since) in enumerate(waiting):
                if since + half > now:
                    break
                waiting[i] = (msg, seq, now)
                old.append(msg)
            self._post_all(old, "in_progress")

    def _post(self, msg: Any, what: str) -> None:
        self._post_all([msg], what)

    def _post_all(self, msgs: list[Any], what: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._answer(msgs, what), loop)
        except RuntimeError:  # the thread's loop is closing: the server redelivers
            pass

    # ------------------------------------------------------------------ the client's thread
    async def _answer(self, msgs: list[Any], what: str) -> None:
        for msg in msgs:
            try:
                await getattr(msg, what)()
            except Exception:  # noqa: BLE001 - a lost ack means a redelivery, which the database absorbs
                pass
        if what != "in_progress":
            self.inflight -= len(msgs)
            if self._room is not None:
                self._room.set()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except Exception as e:  # noqa: BLE001 - logged; the consumer redelivers what was not acked
            self.ctx.log.error(f"{self.label}: consumer failed: {type(e).__name__}: {e}")
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def _hand_over(self, msgs: list[Any]) -> None:
        """Messages to the daemon's loop (they count as in flight until acked)."""
        self.inflight += len(msgs)
        with self._lock:
            self._inbox.extend(msgs)
        try:
            os.write(self._pipe_w, b"m")
        except BlockingIOError:
            pass  # the loop has a wake-up waiting already

    async def _catch_up(self, js: Any, since: float) -> None:
        """After the connection was away: read again, straight from the stream, the messages
        stored since the outage up to what the consumer says it delivered.

        Why: when the whole cluster stops, JetStream (seen with nats-server 2.9) can come back
        with the consumer's delivered sequence ahead of the stream's last one (the consumer had
        delivered messages whose storing was lost with the stop: none of our nodes had their
        ack, so they publish them again). The stream then gives new messages the sequence
        numbers the consumer believes it delivered, and the consumer never delivers them: the
        five-node failure test lost a node's records so (docs/central.md). Those messages were
        all stored after the outage and lie at or below the consumer's delivered sequence, so
        that range, from the top down to the first message older than the outage, is read
        again here, and once more ``ack_wait`` later (the cluster's leaders can still change in
        its first seconds back, and the consumer go past a message stored meanwhile). What was
        delivered anyway is written twice, and the database's unique key keeps one. Waits
        (bounded by ``ack_wait``) until the stream has grown to the consumer's sequence: the
        nodes' spools fill it within moments of the broker's return."""
        cfg = self.config
        stream, clock = cfg["stream"], self.ctx.clock
        info = await js.consumer_info(stream, cfg["durable"])
        last = (await js.stream_info(stream)).state.last_seq
        # The consumer's position: its last delivered, or where its pending count puts it (the
        # two disagree once it skipped, and either may be the higher).
        top = max(info.delivered.stream_seq, last - info.num_pending)
        deadline = clock.monotonic() + cfg["ack_wait"]
        while last < top and clock.monotonic() < deadline:
            await asyncio.sleep(0.1)  # noqa: ASYNC110 - bounded: the stream grows as the nodes drain
            last = (await js.stream_info(stream)).state.last_seq
        _nats, _api, errors = natsconn.nats_modules()
        floor = since - CATCH_UP_MARGIN
        found: list[Any] = []
        seq = min(last, top + cfg["fetch_batch"])  # and a fetch's worth above: in flight when it went
        while seq > 0 and len(found) < CATCH_UP_MAX:
            try:
                m = await js.get_msg(stream, seq)
            except errors.NotFoundError:  # deleted, or not stored (yet)
                seq -= 1
                continue
            if m.time is not None and m.time.timestamp() < floor:
                break  # stored before the outage: delivered in order before it
            if _matches(cfg["filter_subject"], m.subject or ""):
                found.append(_Reread(m))
            seq -= 1
        if len(found) >= CATCH_UP_MAX:
            self.ctx.log.error(f"{self.label}: after the outage, read again only the last {CATCH_UP_MAX} messages "
                               f"up to stream sequence {top}")
        if found:
            found.reverse()
            self.ctx.stats.incr(f"natsin.{self.id}.reread", len(found))
            self.ctx.log.notice(f"{self.label}: the broker was away: read again {len(found)} messages stored since, "
                                f"up to stream sequence {top} (the consumer may skip them)")
            self._hand_over(found)

    async def _main(self) -> None:
        _nats, api, errors = natsconn.nats_modules()
        self._room = asyncio.Event()
        backoff = Backoff(0.5, 5.0, jitter=0.2)
        nc: Any = None
        sub: Any = None
        js: Any = None
        logged = False
        cfg = self.config
        clock = self.ctx.clock
        outage: float | None = None  # wall time the connection went away, until caught up
        # The second reading after an outage: (monotonic time it is due, the outage's time).
        again: tuple[float, float] | None = None
        last_pass = False  # the reading under way is that second one
        try:
            while not self._stopping:
                if nc is not None and not nc.is_connected and outage is None:
                    outage = clock.wall()
                    self.ctx.stats.incr(f"natsin.{self.id}.outages")
                if sub is None:
                    left = backoff.remaining(clock.monotonic())
                    if left > 0:
                        await asyncio.sleep(min(left, 0.5))  # noqa: ASYNC110 - bounded, re-checks stop
                        continue
                    backoff.begin(clock.monotonic())
                    try:
                        if nc is None:
                            nc = await natsconn.connect(self.conn)
                        js = nc.jetstream()
                        config = api.ConsumerConfig(
                            durable_name=cfg["durable"], ack_policy=api.AckPolicy.EXPLICIT,
                            ack_wait=cfg["ack_wait"], max_ack_pending=cfg["max_inflight"],
                            deliver_policy=api.DeliverPolicy.ALL,
                            filter_subject=cfg["filter_subject"] or None,
                        )
                        sub = await js.pull_subscribe(cfg["filter_subject"] or "", durable=cfg["durable"],
                                                      stream=cfg["stream"], config=config)
                    except Exception as e:  # noqa: BLE001 - retried with back-off
                        backoff.failed()
                        if not logged:
                            logged = True
                            self.ctx.log.error(f"{self.label}: cannot consume from stream {cfg['stream']}: "
                                               f"{type(e).__name__}: {e}; retrying")
                        continue
                    if logged:
                        self.ctx.log.notice(f"{self.label}: consuming from stream {cfg['stream']}")
                    logged = False
                    backoff.reset()
                room = cfg["max_inflight"] - self.inflight
                if room <= 0:
                    self._room.clear()
                    try:
                        await asyncio.wait_for(self._room.wait(), 0.5)
                    except TimeoutError:
                        pass
                    continue
                if again is not None and outage is None and clock.monotonic() >= again[0]:
                    outage, again, last_pass = again[1], None, True  # once more, as after an outage
                if outage is not None and nc.is_connected:
                    try:
                        await self._catch_up(js, outage)
                        # Once more when the cluster has settled (``ack_wait`` later): its leaders
                        # can change again in the first seconds, and the consumer go past a
                        # message stored since. From the earliest outage not read twice yet.
                        if not last_pass:
                            since = outage if again is None else min(outage, again[1])
                            again = (clock.monotonic() + cfg["ack_wait"], since)
                        last_pass = False
                        outage = None
                    except Exception as e:  # noqa: BLE001 - JetStream not back yet: again next round
                        self.ctx.log.debug(f"{self.label}: reading again after the outage: "
                                           f"{type(e).__name__}: {e}")
                        await asyncio.sleep(0.2)  # noqa: ASYNC110 - bounded pause before trying again
                        continue
                try:
                    msgs = await sub.fetch(min(cfg["fetch_batch"], room), timeout=0.5)
                except TimeoutError:  # nothing to fetch now (nats-py raises a subclass)
                    continue
                except Exception as e:  # noqa: BLE001 - the client reconnects; fetch again later
                    if outage is None:
                        outage = clock.wall()
                        self.ctx.stats.incr(f"natsin.{self.id}.outages")
                    self.ctx.stats.incr(f"natsin.{self.id}.fetch_errors")
                    if not logged:
                        logged = True
                        self.ctx.log.error(f"{self.label}: fetching failed: {type(e).__name__}: {e}; retrying")
                    await asyncio.sleep(0.2)  # noqa: ASYNC110 - bounded pause before the next fetch
                    continue
                if logged:
                    logged = False
                    self.ctx.log.notice(f"{self.label}: fetching again")
                if not msgs:
                    continue
                self._hand_over(msgs)
        finally:
            if nc is not None:
                try:
                    await nc.close()
                except Exception:  # noqa: BLE001
                    pass
