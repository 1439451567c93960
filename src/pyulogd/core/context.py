"""What every plugin instance is handed: the loop, the log, the counters. No globals."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyulogd.core.log import Logger
from pyulogd.core.stats import Stats
from pyulogd.io.loop import Loop


@dataclass
class Context:
    loop: Loop = field(default_factory=Loop)
    log: Logger = field(default_factory=Logger)
    stats: Stats = field(default_factory=Stats)
    # Wall clock, replaceable in tests.
    now: Callable[[], float] = time.time
    hostname: str = field(default_factory=lambda: socket.gethostname().split(".", 1)[0])
    # Network namespace the daemon works in (name, "" for its own); see issue 4.
    netns: str = ""
    # Interface-name cache shared by every IFINDEX instance (io/rtnl.py creates it).
    ifcache: Any = None
