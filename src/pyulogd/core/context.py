"""What every plugin instance is handed: the loop, the log, the counters. No globals.

The loop is passed in (the daemon gives an ``io.loop.Loop``, tests may give their own):
core sits below io (the layer table in docs/design.md), so it declares what it needs of a
loop as protocols instead of importing one. The clock comes with the loop (``ctx.clock``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyulogd.core.clock import Clock
from pyulogd.core.log import Logger
from pyulogd.core.loss import LossLedger
from pyulogd.core.safefile import RunAs
from pyulogd.core.stats import Stats


class TimerHandle(Protocol):
    """A timer :meth:`EventLoop.call_later` started (``io.loop.Timer``)."""

    cancelled: bool

    def cancel(self) -> None: ...


class EventLoop(Protocol):
    """What plugins and the daemon use of the event loop (``io.loop.Loop`` implements it)."""

    # The clock its timers run on, and the one the whole daemon reads (Context.clock): one
    # clock per loop, as trio.run(clock=...) has it.
    clock: Clock

    # Called once after each round of ready file descriptors (outputs flush here).
    after_batch: list[Callable[[], None]]

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None: ...

    def remove_reader(self, fd: int) -> None: ...

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None: ...

    def remove_writer(self, fd: int) -> None: ...

    def call_later(self, delay: float, callback: Callable[[], None], repeat: bool = False) -> TimerHandle: ...

    def add_signal_handler(self, signum: int, callback: Callable[[int], None]) -> None: ...

    def linger(self, seconds: float) -> None: ...

    def stop(self) -> None: ...

    def run(self) -> None: ...


@dataclass
class Context:
    loop: EventLoop
    log: Logger = field(default_factory=Logger)
    stats: Stats = field(default_factory=Stats)
    hostname: str = field(default_factory=lambda: socket.gethostname().split(".", 1)[0])
    # Interface-name cache shared by every IFINDEX instance (io/rtnl.py creates it).
    ifcache: Any = None
    # The same for other network namespaces, by namespace inode (io/rtnl.py).
    ns_ifcaches: dict[int, Any] = field(default_factory=dict)
    # Namespaces inputs work in and the directories they follow: a netns.registry.Namespaces,
    # made on first use and read only through that module (get_namespaces, find_namespaces),
    # which checks its type; core cannot name it.
    namespaces: object = None
    # Speed-ups that can be turned off, to measure them or to rule them out when chasing a
    # bug ([global] fusion=0 / recvmmsg=0, --no-fusion / --no-recvmmsg): stacks fused into
    # one function (Stack.fuse), conntrack and trace events and IPFIX datagrams read with
    # recvmmsg (io/mmsg.py).
    fusion: bool = True
    recvmmsg: bool = True
    # The user -u switches to once every plugin has started (None: no -u). Files that user
    # must write later are created for it, and checked at start (core/safefile.py).
    run_as: RunAs | None = None
    # --check-config: build and check every stack but open nothing (no socket, no file, no
    # database connection); plugins whose configure() would connect or create skip that.
    checking: bool = False
    # The sequence number of the record being run through the stacks: set by Source.emit
    # before a record's stacks run, so an output reads it at interp time (a NATS message id,
    # a commit cursor). One counter per daemon (node), strictly increasing; the write-ahead
    # log (issue 12) makes it persistent across restarts and sets it when it replays.
    seq: int = 0
    # This daemon's name in a fleet (records from many nodes meet in one store, told apart by
    # (node_id, seq)); "" until the daemon sets it from its configuration.
    node_id: str = ""
    # This daemon's name among those on the host: its config file's name without ``.conf``
    # ("" outside a daemon). It names the daemon's own state directories, the write-ahead
    # log's and the default spools (``/var/spool/pyulogd/<name>/<id>``), so daemons with
    # config files of their own (the netns wrapper's, one per namespace) never share one.
    state_name: str = ""
    # Losses reported by whoever counts them (inputs, stacks), waiting for the daemon's audit
    # trail to write them into the outputs as loss records (core/loss.py).
    losses: LossLedger = field(default_factory=LossLedger)

    @property
    def clock(self) -> Clock:
        """The only clock the daemon reads (core/clock.py): the loop's, so that timers,
        timestamps and every deadline agree. A test passes ``Loop(FakeClock())``."""
        return self.loop.clock

    def __post_init__(self) -> None:
        if self.log.stats is None:
            self.log.stats = self.stats  # lines the log loses are counted with everything else
