"""What every plugin instance is handed: the loop, the log, the counters. No globals."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyulogd.core.clock import Clock, SystemClock
from pyulogd.core.log import Logger
from pyulogd.core.stats import Stats
from pyulogd.io.loop import Loop

if TYPE_CHECKING:
    from pyulogd.netns.registry import Namespaces


@dataclass
class Context:
    # The only clock the daemon reads (core/clock.py); a FakeClock in tests. The loop's
    # timers run on it, so the loop is made here rather than passed in.
    clock: Clock = field(default_factory=SystemClock)
    loop: Loop = field(init=False)
    log: Logger = field(default_factory=Logger)
    stats: Stats = field(default_factory=Stats)
    hostname: str = field(default_factory=lambda: socket.gethostname().split(".", 1)[0])
    # Interface-name cache shared by every IFINDEX instance (io/rtnl.py creates it).
    ifcache: Any = None
    # The same for other network namespaces, by namespace inode (io/rtnl.py).
    ns_ifcaches: dict[int, Any] = field(default_factory=dict)
    # Namespaces inputs work in and the directories they follow (netns/registry.py).
    namespaces: Namespaces | None = None

    def __post_init__(self) -> None:
        self.loop = Loop(self.clock)
