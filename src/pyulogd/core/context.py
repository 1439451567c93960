"""What every plugin instance is handed: the loop, the log, the counters. No globals."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyulogd.core.log import Logger
from pyulogd.core.stats import Stats
from pyulogd.io.loop import Loop

if TYPE_CHECKING:
    from pyulogd.netns.registry import Namespaces


@dataclass
class Context:
    loop: Loop = field(default_factory=Loop)
    log: Logger = field(default_factory=Logger)
    stats: Stats = field(default_factory=Stats)
    # Wall clock, replaceable in tests.
    now: Callable[[], float] = time.time
    hostname: str = field(default_factory=lambda: socket.gethostname().split(".", 1)[0])
    # Interface-name cache shared by every IFINDEX instance (io/rtnl.py creates it).
    ifcache: Any = None
    # The same for other network namespaces, by namespace inode (io/rtnl.py).
    ns_ifcaches: dict[int, Any] = field(default_factory=dict)
    # Namespaces inputs work in and the directories they follow (netns/registry.py).
    namespaces: Namespaces | None = None

    def __post_init__(self) -> None:
        if self.log.stats is None:
            self.log.stats = self.stats  # lines the log loses are counted with everything else
