"""JSON: one JSON object per line (ulogd2 ``ulogd_output_JSON.so``), byte-compatible with 2.0.8.

The object is built as jansson builds it (spec 6.5): ``"@version": 1`` with ``eventv1``,
the time field, ``"dvc"``, then every valid upstream key in stack order, named by its CIM
alias (``src_ip``, ``dest_port``, ...) when it has one. A name set twice keeps the position
of its first valid key and takes the value of its last valid key. STRING keys are strings
(a string that is not valid UTF-8 drops the field, as jansson does), the integer types and
BOOL are numbers, a MAP (pyulogd's own type: IPFIXIN's ``ipfix.extra``) is a nested object,
everything else (IPADDR, RAW, INT64, ...) is left out. Separators are
jansson's ``", "`` and ``": "``; control characters are escaped as ``\\u001B`` (upper case).
The time is local, with 2.0.8's quirk of printing no UTC offset when the offset is zero.

Speed: the renderer is generated once per stack as straight-line Python (one ``if`` per
key, no loop, no dict), because a loop over ~90 keys costs more than the whole budget.
Numbers below 65536 come from a table instead of ``str()``.

Transport (``mode``), the sinks of ``pyulogd.io``: ``file`` appends whole-line batches like
LOGEMU (``io/filesink.py``); ``tcp``/``unix`` send each batch with one non-blocking ``send``
(``io/streamsink.py``); ``udp`` sends one datagram per record (``io/dgramsink.py``).
Unlike 2.0.8 a peer that is down at start does not stop the daemon, and a peer that is
down or slow never blocks the loop (pyulogd.io.sender): the connection is retried with
capped, jittered backoff (0.25 s doubling up to ``reconnect_max``, 1 s: back within a second
of the peer's return). While the peer is down or slow, records wait in a bounded queue
(``queue`` bytes, 1 MiB by default), then in the on-disk spool (``spool_dir``, ``spool_max``),
and go out in order after the reconnect. Only a full spool drops records (``spool_full``);
with ``spool_max=0`` records that do not fit in memory are counted in
``json.<id>.queue_overflow`` (``queue=0 spool_max=0`` drops them as 2.0.8 does); every lost
record in ``json.<id>.send_failures`` (one log line per burst). ``tls=1`` (mode tcp) sends
over TLS (pyulogd.io.tls). Over ``udp`` a peer that is gone is seen only from an ICMP error
on a later send; a host that is down or a network that drops is not seen at all, and what is
sent meanwhile is lost and counted as sent (docs/security.md): use tcp for a complete trail.

``split_by=neutron.project_id`` (pyulogd extra, file mode): one file per project, ``file``
being the template (``/var/log/pyulogd/{project}.json``); a record goes to its project's
file, a flow between two projects to both, an unresolved one to ``unresolved.json``
(pyulogd.io.tenants).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyulogd.core.errors import ConfigError, PluginError
from pyulogd.core.escape import escape_text
from pyulogd.core.options import Address, Bool, Choice, Path, Port, Str
from pyulogd.core.plugin import OK, DataType, Key, KeyType, Option
from pyulogd.io.chain import chain_options, line_chain
from pyulogd.io.dgramsink import DgramSink
from pyulogd.io.filesink import FileSink
from pyulogd.io.output import Output
from pyulogd.io.sender import Endpoint, sender_options, spool_settings
from pyulogd.io.sink import BufferedSink, LineSink
from pyulogd.io.streamsink import StreamSink
from pyulogd.io.tenants import SPLIT_KEYS, SplitSink, Splitter, chains, check_template
from pyulogd.io.tls import TlsSettings, tls_options, tls_settings

if TYPE_CHECKING:
    from pyulogd.core.context import Context

MODES = ("file", "tcp", "udp", "unix")
_UNIX_PATH_MAX = 108

_encode_basestring: Callable[[str], str] = json.encoder.encode_basestring  # C version when available
_JANSSON_NAMED = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def jansson_string(text: str) -> str | None:
    """``text`` as jansson's json_dumps writes it, quotes included; None if not valid UTF-8."""
    if not text.isascii():
        try:
            text.encode("utf-8")  # surrogateescape'd bytes: jansson refuses the string
        except UnicodeEncodeError:
            return None
    out = _encode_basestring(text)
    if "\\u" not in out:
        return out
    # Rare: a control character (jansson writes \u001B, json writes \u001b).
    return '"' + "".join(_JANSSON_NAMED.get(c) or (f"\\u{ord(c):04X}" if c < " " else c) for c in text) + '"'


def _json_text(text: str) -> str:
    out = jansson_string(text)
    # Bytes that are not UTF-8 (kept with surrogateescape): escaped, as everywhere text is
    # written (core/escape.py), rather than dropping the value as jansson drops a string.
    return out if out is not None else _encode_basestring(escape_text(text))


def _json_value(v: Any) -> str:
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "null"
    if isinstance(v, str):
        return _json_text(v)
    if isinstance(v, dict):
        return json_map(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_json_value(x) for x in v) + "]"
    if isinstance(v, bytes | bytearray | memoryview):
        return '"' + bytes(v).hex() + '"'
    return _json_text(str(v))


_dump_map = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(", ", ": ")).encode


def json_map(value: Any) -> str:
    """A MAP key's value (IPFIXIN's ``ipfix.extra``: names to numbers, strings, booleans,
    lists) as a nested JSON object, with jansson's separators: :func:`json_map_plain`'s text.

    The fast path: the maps of one exporter's template have the same keys in the same order
    record after record, so a function made once per key sequence writes a map of integers
    and plain strings as one f-string (the keys written inline, integers below 65536 taken
    from a table instead of ``str()``: 41,000 instead of 53,000 instructions for an Open
    vSwitch map, bench/README.md "IPFIXIN"); a map with anything else
    (a float, a list, a string the plain path would write otherwise) goes the plain way.
    tests/unit/test_json.py holds the two to the same text."""
    if value.__class__ is dict:
        keys = tuple(value)
        form = _MAP_FORMS.get(keys, _UNSEEN)
        if form is _UNSEEN:
            form = _map_form(keys)
        if form is not None:
            out: str | None = form(value)
            if out is not None:
                return out
    return json_map_plain(value)


class _NotPlain(Exception):
    """A map value the fast path does not write."""


_UNSEEN: Any = object()
_MAP_FORMS: dict[tuple[Any, ...], Any] = {}  # key sequence -> its writer, None: none possible
_MAP_TEXTS: dict[str, str] = {}  # a string value -> its text in a map
_MAP_CACHE_MAX = 1024


def _map_text(text: str) -> str | None:
    """``text`` as :func:`json_map_plain` would write it inside a map written whole by the
    json module's encoder, or None when that path would not (it would write the map another
    way)."""
    out = _encode_basestring(text)
    if "\\u00" in out or not (out.isascii() or _utf8(out)):
        return None
    return out


def _map_value(v: Any) -> str:
    """A string value's text (cached), a list's (an element repeated in the record: Open
    vSwitch's egress templates have two interfaceDescription), or :class:`_NotPlain` for
    anything else."""
    if v.__class__ is not str:
        if v.__class__ is list:
            return "[" + ", ".join([str(x) if x.__class__ is int else _map_value_str(x) for x in v]) + "]"
        raise _NotPlain
    return _map_value_str(v)


def _map_value_str(v: Any) -> str:
    if v.__class__ is not str:
        raise _NotPlain
    out = _MAP_TEXTS.get(v)
    if out is None:
        out = _map_text(v)
        if out is None:
            raise _NotPlain
        if len(v) <= 256:
            if len(_MAP_TEXTS) >= 4096:
                _MAP_TEXTS.clear()
            _MAP_TEXTS[v] = out
    return out


def _map_form(keys: tuple[Any, ...]) -> Any:
    """The writer of maps with these keys in this order (None: keys the fast path cannot
    write), made and remembered."""
    texts = [_map_text(k) if k.__class__ is str else None for k in keys]
    form: Any = None
    if all(t is not None for t in texts):
        ns: dict[str, Any] = {"V": _map_value, "NotPlain": _NotPlain, "T": _SMALL}
        parts = []
        for i, t in enumerate(texts):
            # the key's text inline; an integer below 65536 from the table (str() costs about
            # twice as many instructions), any other integer by str(), anything else by V
            parts.append(_fstring_text(("{" if i == 0 else ", ") + str(t) + ": ")
                         + f"{{(T[v{i}] if v{i}.__class__ is int and -1 < v{i} < 65536 else str(v{i})"
                         f" if v{i}.__class__ is int else V(v{i}))}}")  # fmt: skip
        if keys:
            src = (f"def form(d):\n    {', '.join(f'v{i}' for i in range(len(keys)))}, = d.values()\n"
                   f"    try:\n        return f'{''.join(parts)}}}}}'\n    except NotPlain:\n"
                   "        return None\n")
        else:
            src = "def form(d):\n    return '{}'\n"
        exec(compile(src, "<json map writer>", "exec"), ns)  # noqa: S102 - our own text: names and numbers
        form = ns["form"]
    if len(_MAP_FORMS) >= _MAP_CACHE_MAX:
        _MAP_FORMS.clear()
    _MAP_FORMS[keys] = form
    return form


def json_map_plain(value: Any) -> str:
    """A MAP key's value as a nested JSON object, with jansson's separators. The json
    module's encoder writes the common case (a map of ~40 numbers and names for each Open
    vSwitch record); what it would write otherwise than the rest of the line (a control
    character: jansson's ``\\u001B``; bytes that are not UTF-8; NaN; raw bytes) is written
    here."""
    try:
        out: str = _dump_map(value)
    except (TypeError, ValueError):
        out = ""
    if out and (out.isascii() or _utf8(out)) and "\\u00" not in out:
        return out
    if not isinstance(value, dict):
        return _json_value(value)
    return "{" + ", ".join(f"{_json_text(str(k))}: {_json_value(v)}" for k, v in value.items()) + "}"


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def utc_offset(gmtoff: int) -> str:
    """2.0.8's ``%+03d%02d`` of the local offset, and nothing at all for a zero offset."""
    if gmtoff == 0:
        return ""
    hours = int(gmtoff / 3600)  # C division truncates toward zero: -00:30 prints +0030
    return f"{hours:+03d}{abs(gmtoff) // 60 % 60:02d}"


# How each key type is written; None: left out of the object.
_KINDS: dict[KeyType, str] = {
    KeyType.STRING: "str",
    KeyType.BOOL: "u8",
    KeyType.UINT8: "u8",
    KeyType.UINT16: "small",
    KeyType.UINT32: "u32",
    KeyType.UINT64: "u64",
    KeyType.INT8: "int",
    KeyType.INT16: "int",
    KeyType.INT32: "int",
    KeyType.MAP: "map",
}
_EXPR = {
    "small": "S[{v}]",
    "u32": "(S[{v}] if {v} < 65536 else str({v}))",
    # jansson's integers are signed 64-bit
    "u64": f"(S[{{v}}] if {{v}} < 65536 else str({{v}} if {{v}} < {2**63} else {{v}} - {2**64}))",
    "int": "str({v})",
    "label": "('\"allowed\"' if {v} else '\"blocked\"')",
    "map": "M({v})",
}
_SMALL = tuple(str(i) for i in range(65536))


def _fstring_text(text: str) -> str:
    """``text`` as the literal part of a generated single-quoted f-string."""
    return "".join(
        "{{" if c == "{" else "}}" if c == "}" else c if c.isprintable() and c not in "\\'\"" else f"\\U{ord(c):08x}"
        for c in text
    )


@dataclass
class _Field:
    prefix: str  # ', "name": '
    # (position in the key list, slot, kind) of each distinct key carrying the name, in order
    members: list[tuple[int, int, str]] = field(default_factory=list)


def plan_fields(keys: list[Key], slots: list[int], boolean_label: bool) -> list[_Field]:
    """Object fields in jansson's order, from the wildcard keys and the slots they resolved to."""
    # Keys of one name all resolve to the nearest producer: its declaration is the last one.
    source: dict[int, Key] = {}
    for key, slot in zip(keys, slots, strict=True):
        if slot:
            source[slot] = key
    fields: dict[str, _Field] = {}
    seen: set[int] = set()
    for pos, slot in enumerate(slots):
        if not slot or slot in seen:
            continue  # unbound, or the same value again at a later position
        seen.add(slot)
        key = source[slot]
        kind = _KINDS.get(key.type)
        if kind is None:
            continue
        name = key.cim or key.name
        if boolean_label and key.name == "raw.label" and key.type == KeyType.UINT8:
            name, kind = "action", "label"
        f = fields.get(name)
        if f is None:
            f = fields[name] = _Field(f", {jansson_string(name) or json.dumps(name)}: ")
        f.members.append((pos, slot, kind))
    return list(fields.values())


def _emit(out: list[str], ind: str, prefix: str, var: str, kind: str, ns: dict[str, Any]) -> None:
    if kind == "u8":
        # prefix and value in one piece, from a table per field
        table = f"P{len(ns)}"
        ns[table] = tuple(prefix + str(i) for i in range(256))
        out.append(f"{ind}p.append({table}[{var}])")
        return
    if kind == "str":
        # prefix and escaped value in one piece, cached per field (prefixes, interface names,
        # addresses and ids repeat): one lookup and one append per string; a string jansson
        # drops (not UTF-8) is the piece "", which joins to nothing
        n = len(ns)
        pieces: dict[str, str] = {}
        ns[f"F{n}"] = pieces
        ns[f"M{n}"] = _piece_maker(prefix, pieces, ns)
        out.append(f"{ind}x = F{n}.get({var})")
        out.append(f"{ind}p.append(x if x is not None else M{n}({var}))")
    else:
        out.append(f"{ind}p.append({prefix!r})")
        out.append(f"{ind}p.append({_EXPR[kind].format(v=var)})")


_PIECES_MAX = 1024  # pieces kept per field; the cache of a field starts over when full


def _piece_maker(prefix: str, pieces: dict[str, str], ns: dict[str, Any]) -> Callable[[str], str]:
    """The miss function of one string field's cache: ``prefix`` + the value as jansson writes
    it, through the renderer's shared escape cache (``JD``/``J`` in ``ns``, set after the code
    is generated)."""

    def miss(text: str) -> str:
        escaped = ns["JD"].get(text) or ns["J"](text)
        piece = "" if escaped is None else prefix + escaped
        if len(pieces) >= _PIECES_MAX:
            pieces.clear()
        pieces[text] = piece
        return piece

    return miss


def _choose(out: list[str], ind: str, f: _Field, j: int, k: int, ns: dict[str, Any]) -> None:
    """Emit the last valid member among j..k (member j is known valid, in ``v``)."""
    if k == j:
        _emit(out, ind, f.prefix, "v", f.members[j][2], ns)
        return
    _pos, slot, kind = f.members[k]
    out.append(f"{ind}w = rec[{slot}]")
    out.append(f"{ind}if w is not None:")
    _emit(out, ind + "    ", f.prefix, "w", kind, ns)
    out.append(f"{ind}else:")
    _choose(out, ind + "    ", f, j, k - 1, ns)


class StringCache:
    """Escaped form of recent strings (prefixes, interface names, addresses repeat a lot)."""

    def __init__(self, size: int = 4096) -> None:
        self.known: dict[str, str] = {}
        self.size = size

    def miss(self, text: str) -> str | None:
        out = jansson_string(text)
        if out is not None:
            if len(self.known) >= self.size:
                self.known.clear()
            self.known[text] = out
        return out


def compile_renderer(
    fields: list[_Field],
    head: Callable[[Any, Any], str],
    sec_slot: int,
    usec_slot: int,
    bare: bool,
    strings: StringCache | None = None,
    sentinels: dict[int, int] | None = None,
) -> Callable[[list[Any]], str]:
    """Generate ``render(rec) -> line``. ``bare``: nothing precedes the keys (no leading ", ").

    ``sentinels`` maps a slot to the slot of the first key of its producer's ``key_blocks``
    group: consecutive keys of one group are checked under one ``if rec[first] is not None``,
    so a UDP packet skips the TCP, ICMP, ICMPv6, ARP, SCTP and IPv6 keys with one test each.
    """
    order: list[tuple[int, int]] = []  # (field number, member number) in key order
    for n, f in enumerate(fields):
        order.extend((n, j) for j in range(len(f.members)))
    order.sort(key=lambda nj: fields[nj[0]].members[nj[1]][0])  # by position in the key list
    sentinels = sentinels or {}
    namespace: dict[str, Any] = {}
    src = ["def render(rec):", "    p = []"]
    src += [f"    g{n} = True" for n, f in enumerate(fields) if len(f.members) > 1]
    guard = 0  # the sentinel slot of the open "if", 0: none
    for n, j in order:
        f = fields[n]
        _pos, slot, kind = f.members[j]
        want = sentinels.get(slot, 0)
        if want != guard:
            guard = want
            if guard:
                src.append(f"    if rec[{guard}] is not None:")
        ind = "        " if guard else "    "
        if len(f.members) == 1:
            src.append(f"{ind}v = rec[{slot}]")
            src.append(f"{ind}if v is not None:")
            _emit(src, ind + "    ", f.prefix, "v", kind, namespace)
            continue
        # Skipping this under a false guard changes nothing: the member is None then, and an
        # invalid member leaves the field to later ones.
        src.append(f"{ind}if g{n}:")
        src.append(f"{ind}    v = rec[{slot}]")
        src.append(f"{ind}    if v is not None:")
        src.append(f"{ind}        g{n} = False")
        _choose(src, ind + "        ", f, j, len(f.members) - 1, namespace)
    body = "''.join(p)[2:]" if bare else "''.join(p)"
    src.append(f"    return H(rec[{sec_slot}], rec[{usec_slot}]) + {body} + '}}\\n'")
    strings = strings if strings is not None else StringCache()
    namespace.update({"S": _SMALL, "J": strings.miss, "JD": strings.known, "H": head, "M": json_map})
    exec(compile("\n".join(src), "<json renderer>", "exec"), namespace)  # noqa: S102 - our own text
    render: Callable[[list[Any]], str] = namespace["render"]
    return render


def _check_split(value: str) -> str | None:
    if value and value not in SPLIT_KEYS:
        return f"can only split by {', '.join(SPLIT_KEYS)} (or empty: one destination)"
    return None


class JsonOutput(Output[str]):
    name = "JSON"
    so_name = "ulogd_output_JSON.so"
    description = "One JSON object per line, to a file or a tcp/udp/unix socket"
    input_type = DataType.PACKET | DataType.FLOW | DataType.SUM
    wildcard_inputs = True
    _buffer: BufferedSink[str]  # the sink, from configure() on
    options = (
        Option("file", Path(), "/var/log/ulogd.json", help="output file, or socket path (mode unix)"),
        Option("sync", Bool(), 0, help="accepted; records are written before the daemon waits"),
        Option("timestamp", Bool(), 1, help="add the time field"),
        Option("eventv1", Bool(), 0, help='Logstash event v1: "@version": 1 and "@timestamp"'),
        Option("device", Str(), "Netfilter", help='value of the "dvc" field'),
        Option("boolean_label", Bool(), 0, help='raw.label as "action": "allowed"/"blocked"'),
        Option("mode", Choice(*MODES, what="mode"), "file", help="file, tcp, udp or unix"),
        Option("host", Address(), "127.0.0.1", help="tcp/udp peer"),
        Option("port", Port(services=True), "12345", help="tcp/udp port or service name"),
        *sender_options(1 << 20),
        *tls_options(),
        *chain_options(),
        Option("split_by", Str(), "", extra=True, check=_check_split,
               help="pyulogd extra: neutron.project_id writes one file per project (mode file; 'file' is the "
               "template, e.g. /var/log/pyulogd/{project}.json): a flow between two projects goes to both, "
               "a record without a project to {project}=unresolved"),
    )

    def __init__(self, ctx: Context, instance_id: str, config: dict[str, Any]) -> None:
        super().__init__(ctx, instance_id, config)
        self.mode = "file"
        self._ts_sec = -1
        self._ts_head = self._ts_zone = ""
        self._strings = StringCache()
        # The generated renderer (prepare); before start, one that generates it first.
        self._line: Callable[[list[Any]], str] = self._first_line
        self._audit_line: Callable[[list[Any]], str] = self._first_line
        # split_by: the sink of the per-project files (None: one destination)
        self.split: SplitSink | None = None

    # -- set-up
    def configure(self) -> None:
        self.mode = mode = self.config["mode"]
        path = self.config["file"]
        if mode == "unix":
            if not path:
                raise ConfigError("missing unix socket path (option 'file')")
            if len(path.encode("utf-8", "surrogateescape")) >= _UNIX_PATH_MAX:
                raise ConfigError(f"unix socket path '{path}' is longer than {_UNIX_PATH_MAX - 1} bytes")
        if mode != "file" and self.config["chain_key"]:
            raise ConfigError("chain_key (tamper evidence) needs mode=file: a peer cannot be asked what it kept")
        if self.config["split_by"]:
            if mode != "file":
                raise ConfigError("split_by needs mode file (one file per project)")
            why = check_template(path)
            if why:
                raise ConfigError(f"option 'file' with split_by: {why}")
        self.reopen_notice = "JSON: reopening logfile" if mode == "file" else "JSON: reopening socket"
        self._tls: TlsSettings | None = tls_settings(self.config, self.config["host"], stream=mode == "tcp")
        super().configure()
        eventv1 = self.config["eventv1"]
        dvc = jansson_string(self.config["device"])
        self._ts_open = ('{"@version": 1, ' if eventv1 else "{") + (
            '"@timestamp": "' if eventv1 else '"timestamp": "'
        )
        self._ts_close = '"' + ("" if dvc is None else f', "dvc": {dvc}')
        if self.config["timestamp"]:
            self._head_fixed: str | None = None
        else:
            parts = (['"@version": 1'] if eventv1 else []) + ([f'"dvc": {dvc}'] if dvc is not None else [])
            self._head_fixed = "{" + ", ".join(parts)

    def make_sink(self) -> LineSink[str]:
        c = self.config
        prefix = f"json.{self.id}"
        if c["split_by"]:
            # one file per project, each with a chain of its own (io/chain.py) when chain_key is set
            self.split = SplitSink(self.ctx, c["file"], prefix, "JSON", Splitter(()),
                                   chains(self.config, "json", f"JSON '{self.id}'"))  # fmt: skip
            return self.split
        buffer: BufferedSink[str]
        if self.mode == "file":
            # tamper evidence (io/chain.py): each object ends in "pyulogd.chain": "<seq>:<tag>"
            chain = line_chain(self.ctx, self.config, "json", f"JSON '{self.id}'")
            buffer = FileSink(self.ctx, c["file"], prefix, "JSON", chain=chain)
        else:
            kw: dict[str, Any] = {"queue_bytes": c["queue"], "backoff_max": c["reconnect_max"], "sync": c["sync"],
                                  "spool": spool_settings(self.ctx, c, self.id)}
            if self.mode == "udp":
                buffer = DgramSink(self.ctx, "JSON", Endpoint(c["host"], c["port"]), prefix, **kw)
            else:
                where = Endpoint(path=c["file"]) if self.mode == "unix" else Endpoint(c["host"], c["port"])
                buffer = StreamSink(self.ctx, "JSON", where, prefix, tls=self._tls, **kw)
        self._buffer = buffer
        return buffer

    def prepare(self) -> None:
        keys, slots = self.wildcard_keys, self.in_slots
        sec = usec = 0
        for key, slot in zip(keys, slots, strict=True):
            if key.name == "oob.time.sec":
                sec = slot
            elif key.name == "oob.time.usec":
                usec = slot
        fields = plan_fields(keys, slots, self.config["boolean_label"])
        sentinels = None
        if len(self.wildcard_sentinels) == len(slots):
            sentinels = {slot: first for slot, first in zip(slots, self.wildcard_sentinels, strict=True) if first}
        if self.split is not None:
            project = [max((s for k, s in zip(keys, slots, strict=True) if k.name == name), default=0)
                       for name in SPLIT_KEYS[self.config["split_by"]]]  # fmt: skip
            if not project[0]:
                raise PluginError(f"JSON '{self.id}': split_by={self.config['split_by']} but nothing before it in "
                                  "the stack produces that key (add NEUTRON to the stack)")  # fmt: skip
            self.split.splitter = Splitter(project)
        fixed = self._head_fixed
        akeys, aslots = self.audit_keys()
        afields = plan_fields(akeys, aslots, self.config["boolean_label"])
        if fixed is None:
            self._line = compile_renderer(fields, self._stamp, sec, usec, False, self._strings, sentinels)
            self._audit_line = compile_renderer(afields, self._stamp, sec, usec, False)
        else:
            self._line = compile_renderer(fields, lambda _s, _u: fixed, 0, 0, fixed == "{", self._strings, sentinels)
            self._audit_line = compile_renderer(afields, lambda _s, _u: fixed, 0, 0, fixed == "{")
        self.renderer = self._line

    def render_audit(self, rec: list[Any]) -> str | None:
        """The object of every record (time field, dvc), with the audit keys (docs/loss.md)."""
        return self._audit_line(rec)

    def audit(self, rec: list[Any]) -> bool:
        line = self._audit_line(rec)
        if self.split is not None:
            self.split.put(rec, line)
        else:
            self._add(line)
        return True

    def render(self, rec: list[Any]) -> str:
        return self._line(rec)

    def _first_line(self, rec: list[Any]) -> str:
        """Before start (the renderer is generated there): generate it now."""
        self.prepare()
        return self._line(rec)

    def interp(self, rec: list[Any]) -> int:
        """The generated renderer and the sink's buffered ``add`` written out (every JSON
        sink is a BufferedSink): the call is 1 % of a record."""
        line = self._line(rec)
        if self.split is not None:
            self.split.put(rec, line)
            return OK
        out = self._buffer
        out.pending.append(line)
        out.size += len(line)
        if out.size >= out.limit:
            out.flush()
        return OK

    def _stamp(self, sec: Any, usec: Any) -> str:
        """``{"timestamp": "<local time>[.usec][offset]", "dvc": "..."``, cached per second."""
        if sec is None:
            sec = int(self.ctx.clock.wall())
        if sec != self._ts_sec:
            tm = time.localtime(sec)
            self._ts_head = (
                f"{self._ts_open}{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}T"
                f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
            )
            self._ts_zone = utc_offset(int(tm.tm_gmtoff or 0)) + self._ts_close
            self._ts_sec = sec
        if usec is None:
            return self._ts_head + self._ts_zone
        if 0 <= usec < 1000000:
            return f"{self._ts_head}.{str(usec + 1000000)[1:]}{self._ts_zone}"
        return f"{self._ts_head}.{usec:06d}{self._ts_zone}"
