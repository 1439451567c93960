"""Which namespaces an input follows (``netns=`` globs) and what Neutron ids their names hold.

Neutron names its namespaces ``<prefix>-<id>`` and parses them by splitting at the first
``-`` (``neutron/agent/l3/namespaces.py``: ``get_prefix_from_ns_name``,
``get_id_from_ns_name``). The id after ``qrouter-`` and ``snat-`` is the router's; after
``qdhcp-``, ``fip-`` and ``ovnmeta-`` it is a network's (``fip-`` the external network).
As in Neutron, the id is not checked to be a UUID.
"""

from __future__ import annotations

import fnmatch
import re

ROUTER_PREFIXES = frozenset({"qrouter", "snat"})
NETWORK_PREFIXES = frozenset({"qdhcp", "fip", "ovnmeta"})


class NameMatcher:
    """A comma list of names and globs (``*``, ``?``, ``[...]``), e.g. ``qrouter-*,snat-*``."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.patterns = tuple(p.strip() for p in spec.split(",") if p.strip())
        if not self.patterns:
            raise ValueError("no namespace name or glob given")
        for p in self.patterns:
            if "/" in p or p in (".", ".."):
                raise ValueError(f"'{p}' is not a namespace name (names have no '/')")
        # One compiled alternation: a name is matched once per event, not per packet.
        self._re = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.patterns))

    def __call__(self, name: str) -> bool:
        # Hidden files are not namespaces ``ip netns`` makes; a glob must name them on purpose.
        if name.startswith(".") and not any(p.startswith(".") for p in self.patterns):
            return False
        return self._re.match(name) is not None

    def __repr__(self) -> str:
        return f"NameMatcher({self.spec!r})"


def neutron_ids(name: str) -> tuple[str | None, str | None]:
    """(router id, network id) a namespace name carries by Neutron's conventions."""
    prefix, sep, rest = name.partition("-")
    if not sep or not rest:
        return None, None
    if prefix in ROUTER_PREFIXES:
        return rest, None
    if prefix in NETWORK_PREFIXES:
        return None, rest
    return None, None


def tag_values(name: str | None) -> list[str | None]:
    """The values of the keys ``oob.netns``, ``neutron.router_id``, ``neutron.network_id``."""
    if name is None:
        return [None, None, None]
    router, network = neutron_ids(name)
    return [name, router, network]
