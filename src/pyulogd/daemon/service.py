"""The daemon's life: read the config, build every stack, start, run the loop, stop cleanly."""

from __future__ import annotations

import gc
import signal
from typing import Any

from pyulogd.core import registry, safefile
from pyulogd.core.config import ConfigFile, Entry, parse_file, parse_int
from pyulogd.core.context import Context
from pyulogd.core.errors import ConfigError
from pyulogd.core.loss import LOSS_MODES, AuditTrail
from pyulogd.core.options import Choice, Duration, OptionKind
from pyulogd.core.plugin import Plugin, Sink, Source
from pyulogd.core.stack import Stack, build_stack
from pyulogd.daemon.ops import OPS_KEYS, OpsSettings, check_log_destination
from pyulogd.io.loop import Loop
from pyulogd.io.output import Output
from pyulogd.io.wal import WAL_KEYS, WAL_OPTIONS, Journal, WalSettings, config_stem

# The audit trail's keys (core/loss.py): which outputs get loss records, and the heartbeat.
AUDIT_OPTIONS: dict[str, OptionKind[Any]] = {
    "loss_records": Choice(*LOSS_MODES, what="loss_records value (auto: pyulogd's own formats, 1: every "
                           "output with a form for them, 0: none)"),
    "heartbeat": Duration(0.0, 86400.0),
}
GLOBAL_KEYS = ("logfile", "loglevel", "plugin", "stack", "fusion", "recvmmsg", *AUDIT_OPTIONS, *OPS_KEYS,
               *WAL_KEYS)
# pyulogd's switches in [global]: 1 (the default) or 0, which turns the speed-up off as the
# command line's --no-<key> does (either one turning it off is enough).
SWITCHES = ("fusion", "recvmmsg")
# Keys that may appear once (plugin= and stack= lines repeat).
SINGLE_KEYS = ("logfile", "loglevel", *SWITCHES, *AUDIT_OPTIONS, *OPS_KEYS, *WAL_KEYS)


class Service:
    def __init__(self, config_path: str, ctx: Context | None = None) -> None:
        self.config_path = config_path
        self.ctx = ctx or Context(loop=Loop())
        self.stacks: list[Stack] = []
        self.sources: dict[str, Source] = {}
        self.started: list[Plugin] = []
        self.sinks: list[Sink] = []
        self.exit_code = 0
        # [global] metrics=, control_socket= (daemon/ops.py)
        self.ops = OpsSettings()
        self.config: ConfigFile | None = None
        # [global] loss_records= and heartbeat= (core/loss.py), and the trail once started.
        self.loss_records = "auto"
        self.heartbeat = 0.0
        self.trail: AuditTrail | None = None
        # [global] wal=, wal_dir=, ... node_id= (io/wal.py), typed; the journal once started.
        self.wal_values: dict[str, Any] = {o.name: o.default for o in WAL_OPTIONS}
        self.wal = WalSettings()
        self.journal: Journal | None = None

    # -- configuration
    def load(self, errors: list[ConfigError] | None = None) -> None:
        """Read the config and build every stack; raises ConfigError with file and line.

        With ``errors`` (``--check-config``), errors are collected there instead, and the
        rest of the file is checked on: every [global] line, every stack."""
        cfg = parse_file(self.config_path)
        self.load_config(cfg, errors)

    def load_config(self, cfg: ConfigFile, errors: list[ConfigError] | None = None) -> None:
        self.config = cfg
        log = self.ctx.log

        def fail(err: ConfigError) -> None:
            if errors is None:
                raise err
            if not any(str(e) == str(err) for e in errors):  # a shared input fails in each stack
                errors.append(err)

        for warning in cfg.warnings:
            log.notice(warning)
        for dup in cfg.duplicates:
            log.notice(f"{cfg.path}:{dup.line}: section [{dup.name}] appears again; only the first is read")
        glob = cfg.section("global")
        if glob is None:
            fail(ConfigError("no [global] section", cfg.path))
            return
        loaded: set[str] = set()
        stack_lines: list[tuple[str, int]] = []
        seen_single: dict[str, int] = {}
        for e in glob.entries:
            try:
                self._global_entry(cfg, e, seen_single, loaded, stack_lines)
            except ConfigError as err:
                fail(err)
        try:
            self.ops.check(cfg.path)
        except ConfigError as err:
            fail(err)
        self.wal = WalSettings.from_config(self.wal_values, cfg.path)
        self.ctx.node_id = self.wal.node_id
        # Before any output is configured: it names their default spools (io/spool.py).
        self.ctx.state_name = config_stem(cfg.path)
        # As in ulogd: without any plugin= line every plugin is available.
        allowed = loaded or None
        for spec, line in stack_lines:
            log.notice(f"building new pluginstance stack: '{spec}'")
            try:
                stack = build_stack(self.ctx, cfg, spec, line, self.sources, allowed)
            except ConfigError as err:
                fail(err)
                continue
            if self.ctx.fusion:
                stack.fuse()
            self.stacks.append(stack)
        if not stack_lines:
            fail(ConfigError("not even a single working plugin stack (no stack= line in [global])", cfg.path))

    def _global_entry(
        self, cfg: ConfigFile, e: Entry, seen_single: dict[str, int], loaded: set[str],
        stack_lines: list[tuple[str, int]],
    ) -> None:  # fmt: skip
        """One line of [global]; raises ConfigError."""
        log = self.ctx.log
        if e.key not in GLOBAL_KEYS:
            raise ConfigError(
                f"unknown config key '{e.key}' in [global] (valid: {', '.join(GLOBAL_KEYS)})",
                cfg.path,
                e.line,
            )
        if e.value is None:
            log.notice(f"{cfg.path}:{e.line}: ignoring malformed config directive '{e.key}'")
            return
        if e.key in SINGLE_KEYS:
            if e.key in seen_single:
                raise ConfigError(f"option '{e.key}' occurred more than once", cfg.path, e.line)
            seen_single[e.key] = e.line
        if e.key == "logfile":
            if self.ctx.checking:
                # --check-config opens nothing: the rules the open would apply, without it.
                problem = check_log_destination(e.value, self.ctx.run_as)
                if problem:
                    raise ConfigError(f"can't open logfile '{e.value}': {problem}", cfg.path, e.line)
                return
            try:
                log.set_destination(e.value)
            except OSError as err:
                raise ConfigError(f"can't open logfile '{e.value}': {err.strerror}", cfg.path, e.line) from err
        elif e.key == "loglevel":
            try:
                level = parse_int(e.value)
            except ValueError:
                raise ConfigError(f"loglevel needs an integer, not '{e.value}'", cfg.path, e.line) from None
            if not log.level_forced:
                log.level = level
        elif e.key in SWITCHES:
            if e.value not in ("0", "1"):
                raise ConfigError(f"{e.key} needs 0 or 1, not '{e.value}'", cfg.path, e.line)
            if e.value == "0" and e.key == "fusion":
                self.ctx.fusion = False
            elif e.value == "0":
                self.ctx.recvmmsg = False
        elif e.key in AUDIT_OPTIONS:
            try:
                value = AUDIT_OPTIONS[e.key].parse(e.value)
            except ValueError as err:
                raise ConfigError(f"{e.key}: {err}", cfg.path, e.line) from None
            if e.key == "heartbeat":
                self.heartbeat = float(value)
            else:
                self.loss_records = str(value)
        elif e.key in WAL_KEYS:
            option = next(o for o in WAL_OPTIONS if o.name == e.key)
            try:
                self.wal_values[e.key] = option.parse(e.value)
            except ValueError as err:
                raise ConfigError(f"{e.key}: {err}", cfg.path, e.line) from None
        elif e.key in OPS_KEYS:
            try:
                self.ops.set(e.key, e.value, e.line)
            except ValueError as err:
                raise ConfigError(f"{e.key}: {err}", cfg.path, e.line) from None
        elif e.key == "plugin":
            try:
                name = registry.plugin_for_so(e.value)
            except ConfigError as err:
                raise ConfigError(err.reason, cfg.path, e.line) from None
            log.notice(f"registering plugin `{name}'")
            loaded.add(name)
        else:
            stack_lines.append((e.value, e.line))

    # -- running
    def start(self) -> None:
        """Start every instance, inputs first within a stack; shared inputs once. With the
        write-ahead log: open it first (the sequence numbers go on from the last run's), and
        once every output is open, replay to each what it had not committed (io/wal.py)."""
        if self.wal.enabled and not self.ctx.checking:
            journal = Journal(self.ctx, self.wal)
            # As the -u user: the log is written from the loop, which runs as the user.
            try:
                safefile.make_dir(self.wal.path, self.ctx.run_as, 0o700)
            except OSError as e:
                raise ConfigError(f"wal_dir: cannot use '{self.wal.path}': {e.strerror or e}") from None
            with safefile.as_user(self.ctx.run_as):
                journal.open()
            self.journal = journal
            journal.register_sources(list(self.sources.values()))
        seen: set[int] = set()
        for stack in self.stacks:
            for inst in stack.instances:
                if id(inst) in seen:
                    continue
                seen.add(id(inst))
                self.started.append(inst)
                inst.start()
                if isinstance(inst, Sink):
                    self.sinks.append(inst)
        if self.journal is not None:
            self.journal.register_outputs(self.sinks)
            self.journal.register_stacks(self.stacks)
            self.journal.replay()
            self.flush()
        self.ctx.loop.after_batch.append(self.flush)
        self.trail = AuditTrail(self.ctx, self.stacks, mode=self.loss_records, heartbeat=self.heartbeat)
        self.trail.start()
        # Everything built so far (modules, plugins, caches) lives as long as the daemon: out of
        # the cyclic collector's sight, a full collection no longer walks it (a pause of several
        # milliseconds at high rates, when the socket buffer has little room to spare).
        gc.collect()
        gc.freeze()

    def running(self) -> None:
        """Every instance started and -u dropped root: tell them (``Plugin.running``)."""
        for inst in self.started:
            inst.running()

    def flush(self) -> None:
        """After each loop round: the round's records to the write-ahead log first, then every
        output flushes, then the outputs' cursors (and counters) are saved."""
        journal = self.journal
        if journal is not None:
            journal.write_round()
        for sink in self.sinks:
            try:
                sink.flush()
            except Exception as e:  # an output failure is counted, never fatal
                self.ctx.stats.incr(f"output.{sink.id}.flush_errors")
                self.ctx.log.error(f"flushing {sink.name} '{sink.id}' failed: {e}")
        if journal is not None:
            journal.after_flush()

    def install_signals(self) -> None:
        loop = self.ctx.loop
        loop.add_signal_handler(signal.SIGTERM, self._terminate)
        loop.add_signal_handler(signal.SIGINT, self._terminate)
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
            loop.add_signal_handler(sig, self._deliver)

    def _terminate(self, signum: int) -> None:
        self.ctx.log.notice("Terminal signal received, exiting")
        self.ctx.loop.stop()

    def _deliver(self, signum: int) -> None:
        self.ctx.log.notice("signal received, calling pluginstances")
        if signum == signal.SIGHUP:
            try:
                self.ctx.log.reopen()
            except OSError as e:
                self.ctx.log.error(f"cannot reopen the log file: {e}")
        for inst in reversed(self.started):
            try:
                inst.signal(signum)
            except Exception as e:
                self.ctx.log.error(f"{inst.name} '{inst.id}' failed handling signal {signum}: {e}")

    def run(self) -> None:
        self.ctx.log.info("initialization finished, entering main loop")
        self.ctx.loop.run()

    def stop(self) -> None:
        """Flush and stop every started instance, outputs last so queued records get out."""
        pending = self.trail
        journal = self.journal
        for inst in sorted(self.started, key=lambda i: isinstance(i, Sink)):
            if journal is not None and isinstance(inst, Sink):
                journal.write_round()  # what the inputs read while stopping, before outputs get it
            if pending is not None and isinstance(inst, Sink):
                # Inputs are stopped: the last losses go into the outputs before they close.
                try:
                    pending.stop()
                except Exception as e:
                    self.ctx.log.error(f"writing the last loss records failed: {e}")
                pending = None
            try:
                inst.stop()
            except Exception as e:
                self.ctx.log.error(f"stopping {inst.name} '{inst.id}' failed: {e}")
        if journal is not None:
            try:
                journal.close()
            except Exception as e:
                self.ctx.log.error(f"closing the write-ahead log failed: {e}")
            self.journal = None
        for sink in self.sinks:
            if isinstance(sink, Output):
                # What each output did with its records (received = written + spooled + dropped
                # + what is still on its way), one line per output, before the counters' line
                # (which stays the last: tools read it to the end of the log): the fault matrix.
                counts = sink.counters.snapshot()
                if self.trail is not None:
                    counts["audit"] = self.trail.taken(sink)
                self.ctx.log.notice(f"output {sink.name} '{sink.id}' at exit: "
                                    + ", ".join(f"{k}={v}" for k, v in counts.items()))
        stats: dict[str, Any] = self.ctx.stats.snapshot()
        if stats:
            self.ctx.log.notice("counters at exit: " + ", ".join(f"{k}={v}" for k, v in stats.items()))
