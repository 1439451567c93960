"""The mapping file: what the Neutron API knows about ports, exported by the operator, read
by the NEUTRON filter at start and on SIGHUP (pyulogd never calls Neutron at run time).

Two formats, told apart by the first character that is not white space:

* **JSON**: what the API returns, as it returns it: ``{"ports": [...], "floatingips": [...]}``
  (``GET /v2.0/ports`` and ``GET /v2.0/floatingips`` merged into one object; ``routers`` and
  any other member are ignored), or a bare list of ports. ``openstack port list --long -f
  json`` column names (``ID``, ``Network ID``, ``Fixed IP Addresses``, ...) are read too.
* **CSV**: a header row naming the columns (the same names), one port per row; a list in a
  cell (fixed IPs, floating IPs, security groups) is separated by ``;``, ``,`` or blanks, or
  is the CLI's ``ip_address='10.0.0.5', subnet_id='...'`` text.

Per port: ``id`` (required, a UUID), ``network_id``, ``project_id`` (``tenant_id``),
``device_owner``, ``device_id``, ``mac_address``, ``fixed_ips``, ``security_groups`` and
``floating_ips`` (pyulogd's own column: the floating IPs associated with the port, for
exports without the floatingips list). A floating IP object gives ``floating_ip_address``,
``port_id`` and (optional) ``fixed_ip_address``. Unknown members are ignored (API dumps
have dozens).

Anything wrong is a :class:`~pyulogd.core.errors.ConfigError` naming the file and the line
of the offending port (JSON: where its object starts). Messages never quote the file's
values beyond the field names: the daemon reads it as root, and a file that is not what it
should be must not leak into the log.
"""

from __future__ import annotations

import bisect
import csv
import io
import ipaddress
import json
import json.decoder
import json.scanner
import os
import re
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyulogd.core.errors import ConfigError
from pyulogd.netns.devices import OWNER_ROLES, UUID

MAX_SIZE = 256 << 20  # a bigger file is refused rather than read into memory
_ALIASES = {
    "id": "id", "port_id": "id",
    "network_id": "network_id", "network": "network_id",
    "project_id": "project_id", "tenant_id": "project_id", "project": "project_id",
    "device_owner": "device_owner",
    "device_id": "device_id",
    "mac_address": "mac_address", "mac": "mac_address",
    "fixed_ips": "fixed_ips", "fixed_ip_addresses": "fixed_ips", "fixed_ip": "fixed_ips",
    "security_groups": "security_groups", "security_group_ids": "security_groups",
    "floating_ips": "floating_ips", "floating_ip_addresses": "floating_ips",
    "name": "name",
}  # fmt: skip
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}\Z")
# An id that is not a UUID (keystone project ids are 32 hex digits; LDAP-backed ones may be
# anything): printable, no blanks, not too long.
_ID = re.compile(r"[\x21-\x7e]{1,64}\Z")
_CLI_IP = re.compile(r"ip_address'?\s*[:=]\s*'([^']*)'")
_SPLIT = re.compile(r"[;,\s]+")


@dataclass(frozen=True, slots=True)
class PortInfo:
    """One port as the mapping file has it."""

    id: str
    network_id: str | None = None
    project_id: str | None = None
    device_owner: str | None = None
    device_id: str | None = None
    mac: bytes | None = None
    fixed_ips: tuple[bytes, ...] = ()
    floating_ips: tuple[bytes, ...] = ()
    security_groups: tuple[str, ...] = ()
    line: int = 0

    @property
    def role(self) -> str | None:
        """The device role its device_owner stands for (``compute:*``: a VM port), or None."""
        owner = self.device_owner or ""
        if owner.startswith("compute:"):
            return "vm_port"
        return OWNER_ROLES.get(owner)

    @property
    def router_id(self) -> str | None:
        """The router a router-owned port belongs to (its device_id)."""
        return self.device_id if self.device_owner in OWNER_ROLES and self.device_owner != "network:dhcp" else None


@dataclass
class Mapping:
    """Ports by id and by what records carry: id prefixes of device names, addresses."""

    path: str = ""
    ports: dict[str, PortInfo] = field(default_factory=dict)
    # 10 and 11 first characters of port ids (device and chain names); None: two ports share it.
    by_prefix: dict[str, PortInfo | None] = field(default_factory=dict)
    # 10 first characters of router ids (rfp-/fpr- devices) -> router id; None: ambiguous.
    router_prefix: dict[str, str | None] = field(default_factory=dict)
    # Addresses (packed) seen from a router: its networks' fixed IPs and its floating IPs.
    router_ips: dict[str, dict[bytes, PortInfo | None]] = field(default_factory=dict)
    # Every fixed IP and floating IP of the file (None: the address is on two ports).
    ips: dict[bytes, PortInfo | None] = field(default_factory=dict)
    # Floating IP -> the port it is associated with.
    floating: dict[bytes, PortInfo] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ports)

    def port(self, ident: str) -> PortInfo | None:
        """A port by its full id, or by the 10 or 11 characters a device or chain name has."""
        p = self.ports.get(ident)
        return p if p is not None else self.by_prefix.get(ident)

    def by_ip(self, addr: bytes, router: str | None) -> PortInfo | None:
        """The port that holds ``addr`` (fixed or floating), seen from ``router`` when known
        (fixed IPs of different networks may be the same), else only when unique in the file."""
        if router is not None:
            table = self.router_ips.get(router)
            if table is not None:
                return table.get(addr)
        return self.ips.get(addr)


def load(path: str) -> Mapping:
    """Read and check the mapping file at ``path``; ConfigError with file and line."""
    text = _read(path)
    first = text.lstrip()[:1]
    if first in ("[", "{"):
        ports, fips = _from_json(text, path)
    else:
        ports, fips = _from_csv(text, path)
    return build(path, ports, fips)


def _read(path: str) -> str:
    """The file's text, opened without following a link and refusing what is not a regular
    file (a FIFO would hang the daemon; a device could be endless)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        why = "is a symbolic link (refused)" if e.errno == 40 else e.strerror
        raise ConfigError(f"mapping file: cannot open: {why}", path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("mapping file: not a regular file", path)
        if st.st_size > MAX_SIZE:
            raise ConfigError(f"mapping file: larger than {MAX_SIZE >> 20} MiB", path)
        chunks = []
        size = 0
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            size += len(b)
            if size > MAX_SIZE:
                raise ConfigError(f"mapping file: larger than {MAX_SIZE >> 20} MiB", path)
            chunks.append(b)
    except OSError as e:
        raise ConfigError(f"mapping file: cannot read: {e.strerror}", path) from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        data = b"".join(chunks)
        raise ConfigError("mapping file: not UTF-8 text", path, data.count(b"\n", 0, e.start) + 1) from None


# -- JSON, with the line each object starts on


class _Obj(dict[str, Any]):
    """A JSON object that knows where it started in the text."""

    pos = 0


def _decoder() -> json.JSONDecoder:
    """A decoder whose objects are :class:`_Obj` with their position (the pure-Python
    scanner, which lets the object parser be wrapped; a mapping file is read rarely)."""
    dec = json.JSONDecoder()
    parse = json.decoder.JSONObject  # type: ignore[attr-defined]

    def parse_object(s_and_end: tuple[str, int], *args: Any) -> tuple[Any, int]:
        obj, end = parse(s_and_end, *args)
        o = _Obj(obj)
        o.pos = s_and_end[1] - 1
        return o, end

    dec.parse_object = parse_object  # type: ignore[attr-defined]
    dec.scan_once = json.scanner.py_make_scanner(dec)  # type: ignore[attr-defined]
    return dec


def _from_json(text: str, path: str) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, dict[str, Any]]]]:
    try:
        doc = _decoder().decode(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"mapping file: not valid JSON: {e.msg} (column {e.colno})", path, e.lineno) from None
    except RecursionError:
        raise ConfigError("mapping file: JSON nested too deeply", path) from None
    newlines = [i for i, c in enumerate(text) if c == "\n"]

    def line(o: Any) -> int:
        return bisect.bisect_right(newlines, o.pos) + 1 if isinstance(o, _Obj) else 1

    if isinstance(doc, list):
        ports, fips = doc, []
    elif isinstance(doc, dict):
        ports = doc.get("ports", [])
        fips = doc.get("floatingips", [])
        if "ports" not in doc and "floatingips" not in doc:
            raise ConfigError("mapping file: a JSON object needs a 'ports' list (and may have 'floatingips')",
                              path, line(doc))  # fmt: skip
        if not isinstance(ports, list) or not isinstance(fips, list):
            raise ConfigError("mapping file: 'ports' and 'floatingips' must be lists", path, line(doc))
    else:
        raise ConfigError("mapping file: JSON must be a list of ports or an object with 'ports'", path, 1)
    for what, items in (("port", ports), ("floating IP", fips)):
        for o in items:
            if not isinstance(o, dict):
                raise ConfigError(f"mapping file: a {what} must be a JSON object", path, line(doc))
    return [(line(o), o) for o in ports], [(line(o), o) for o in fips]


def _from_csv(text: str, path: str) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, dict[str, Any]]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return [], []
        names = [_norm(h) for h in header]
        if "id" not in {_ALIASES.get(n) for n in names}:
            raise ConfigError("mapping file: CSV needs a header row with an 'id' column "
                              "(or a JSON document: it must start with '[' or '{')", path, 1)  # fmt: skip
        rows = []
        for row in reader:
            n = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if len(row) > len(names):
                raise ConfigError(f"mapping file: {len(row)} columns, the header has {len(names)}", path, n)
            rows.append((n, dict(zip(names, row, strict=False))))
    except csv.Error as e:
        raise ConfigError(f"mapping file: bad CSV: {e}", path, reader.line_num) from None
    return rows, []


def _norm(name: Any) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


# -- checking and indexing


def build(path: str, ports: Iterable[tuple[int, dict[str, Any]]],
          fips: Iterable[tuple[int, dict[str, Any]]] = ()) -> Mapping:  # fmt: skip
    """The mapping of already parsed port and floating IP objects (line, object)."""
    m = Mapping(path)
    for line, obj in ports:
        p = _port(obj, path, line)
        if p.id in m.ports:
            raise ConfigError(f"mapping file: port {p.id} is listed twice (first on line {m.ports[p.id].line})",
                              path, line)  # fmt: skip
        m.ports[p.id] = p
    extra: dict[str, list[bytes]] = {}
    for line, obj in fips:
        f = {_norm(k): v for k, v in obj.items()}
        addr = _ip(f.get("floating_ip_address"), path, line, "floating_ip_address", required=True)
        port_id = f.get("port_id")
        if port_id is None:
            continue  # not associated with a port
        if not isinstance(port_id, str) or not UUID.match(port_id):
            raise ConfigError("mapping file: a floating IP's port_id must be a port UUID", path, line)
        assert addr is not None
        extra.setdefault(port_id, []).append(addr)
    for port_id, addrs in extra.items():
        p = m.ports.get(port_id) or PortInfo(port_id)
        m.ports[port_id] = PortInfo(p.id, p.network_id, p.project_id, p.device_owner, p.device_id, p.mac,
                                    p.fixed_ips, tuple(dict.fromkeys(p.floating_ips + tuple(addrs))),
                                    p.security_groups, p.line)  # fmt: skip
    _index(m)
    return m


def _port(obj: dict[str, Any], path: str, line: int) -> PortInfo:
    f: dict[str, Any] = {}
    for k, v in obj.items():
        name = _ALIASES.get(_norm(k))
        if name is not None and v not in (None, ""):
            f[name] = v
    pid = f.get("id")
    if not isinstance(pid, str) or not UUID.match(pid.strip().lower()):
        raise ConfigError("mapping file: a port needs an 'id' that is a UUID", path, line)
    pid = pid.strip().lower()
    ids = {}
    for name in ("network_id", "device_id", "project_id"):
        v = f.get(name)
        if v is None:
            continue
        if not isinstance(v, str) or not _ID.match(v.strip()):
            raise ConfigError(f"mapping file: port {pid}: '{name}' is not an id", path, line)
        ids[name] = v.strip()
    owner = f.get("device_owner")
    if owner is not None and (not isinstance(owner, str) or not _ID.match(owner.strip())):
        raise ConfigError(f"mapping file: port {pid}: 'device_owner' is not a Neutron device owner", path, line)
    mac = f.get("mac_address")
    mac_b = None
    if mac is not None:
        if not isinstance(mac, str) or not _MAC.match(mac.strip().lower()):
            raise ConfigError(f"mapping file: port {pid}: 'mac_address' is not a MAC address", path, line)
        mac_b = bytes.fromhex(mac.strip().replace(":", ""))
    fixed = tuple(_ip(a, path, line, "fixed_ips") for a in _ip_list(f.get("fixed_ips"), path, line, pid))
    floating = tuple(_ip(a, path, line, "floating_ips") for a in _ip_list(f.get("floating_ips"), path, line, pid))
    sgs = _str_list(f.get("security_groups"), path, line, pid)
    return PortInfo(pid, ids.get("network_id"), ids.get("project_id"), owner.strip() if owner else None,
                    ids.get("device_id"), mac_b, tuple(a for a in fixed if a), tuple(a for a in floating if a),
                    sgs, line)  # fmt: skip


def _ip_list(v: Any, path: str, line: int, pid: str) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, str):
        found = _CLI_IP.findall(v)
        return found if found or "ip_address" in v else [s for s in _SPLIT.split(v.strip(" []")) if s]
    if isinstance(v, list):
        out = []
        for item in v:
            if isinstance(item, dict):
                if "ip_address" in item:
                    out.append(item["ip_address"])
            else:
                out.append(item)
        return out
    raise ConfigError(f"mapping file: port {pid}: addresses must be a list or a text", path, line)


def _str_list(v: Any, path: str, line: int, pid: str) -> tuple[str, ...]:
    if v is None:
        return ()
    items = [s for s in _SPLIT.split(v.strip(" []")) if s] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) and _ID.match(s.strip("'\"")) for s in items):
        raise ConfigError(f"mapping file: port {pid}: 'security_groups' must be a list of ids", path, line)
    return tuple(s.strip("'\"") for s in items)


def _ip(v: Any, path: str, line: int, what: str, required: bool = False) -> bytes | None:
    if v is None or v == "":
        if required:
            raise ConfigError(f"mapping file: '{what}' is missing", path, line)
        return None
    if not isinstance(v, str):
        raise ConfigError(f"mapping file: '{what}' holds something that is not an IP address", path, line)
    try:
        a = ipaddress.ip_address(v.strip())
    except ValueError:
        raise ConfigError(f"mapping file: '{what}' holds something that is not an IP address", path, line) from None
    return socket.inet_pton(socket.AF_INET if a.version == 4 else socket.AF_INET6, str(a))


def _index(m: Mapping) -> None:
    for p in m.ports.values():
        for n in (10, 11):
            k = p.id[:n]
            m.by_prefix[k] = p if k not in m.by_prefix else None
    # A router sees the networks of its interface and gateway ports (with their fixed IPs)
    # and every floating IP it holds.
    nets: dict[str, set[str]] = {}
    for p in m.ports.values():
        r = p.router_id
        if r is not None:
            if UUID.match(r):
                k = r[:10]
                if m.router_prefix.get(k, r) != r:
                    m.router_prefix[k] = None
                elif k not in m.router_prefix:
                    m.router_prefix[k] = r
            if p.network_id is not None:
                nets.setdefault(r, set()).add(p.network_id)
    by_net: dict[str, list[PortInfo]] = {}
    for p in m.ports.values():
        if p.network_id is not None:
            by_net.setdefault(p.network_id, []).append(p)
        for a in p.fixed_ips + p.floating_ips:
            m.ips[a] = p if a not in m.ips or m.ips[a] is p else None
        for a in p.floating_ips:
            m.floating[a] = p
    for r, networks in nets.items():
        table: dict[bytes, PortInfo | None] = {}
        for net in networks:
            for p in by_net.get(net, ()):
                for a in p.fixed_ips:
                    # The gateway port's own address is the router's, on the external network.
                    table[a] = p if a not in table or table[a] is p else None
        for a, p in m.floating.items():
            table.setdefault(a, p)
        m.router_ips[r] = table
