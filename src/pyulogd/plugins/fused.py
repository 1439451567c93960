"""Fused stacks: one function doing the work of a whole stack of well-known plugins.

A stack's generated ``run()`` calls each plugin's ``interp`` in turn, and each reads and
writes record slots. For the flow-logging stack of ulogd's example configuration,
``NFCT → IP2STR → PRINTFLOW → LOGEMU``, nearly every conntrack event is TCP or UDP with
every key valid, and for those the log line can be made in one place: address texts from
IP2STR's cache, PRINTFLOW's own format for the line, LOGEMU's head for the second, one
``add`` to LOGEMU's sink. That halves the user-space cost of the stack per event.

The contract is the unfused stack's output, byte for byte, and the same state left behind
(IP2STR's cache, LOGEMU's head and pending lines): a record the fused code is not sure of
(another protocol, an invalid key, an address not in the cache yet, a value of an odd type)
goes to the stack's own ``run()``. ``tests/unit/test_fused.py`` compares both on random
records; the golden flow cases run through it.

PRINTFLOW declares the fusion (``PrintflowFilter.fusions``); the daemon offers each stack
to it after wiring (``Stack.fuse``), unless ``[global] fusion=0`` or ``--no-fusion``. It
reads the plugins through what they make public for it: IP2STR's ``address_pairs()`` and
``texts``, LOGEMU's ``head``/``head_sec``/``new_second()`` and its sink ``out`` (the
``add`` every output's sink has, ``pyulogd.io.sink.LineSink``), the stack's ``on_exception()``.

Slots written by the plugins the fused path skips (the ``*.str`` texts, ``print``) stay
empty; in a linear stack nothing downstream of LOGEMU reads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyulogd.core.plugin import Fusion, Run

if TYPE_CHECKING:
    from pyulogd.core.stack import Stack


def flow_line(stack: Stack) -> Run | None:
    """NFCT → IP2STR → PRINTFLOW → LOGEMU for TCP/UDP events with every key valid."""
    from pyulogd.plugins.filters.ip2str import Ip2strFilter
    from pyulogd.plugins.filters.printflow import FAST_FORMATS, PrintflowFilter
    from pyulogd.plugins.outputs.logemu import LogemuOutput

    _src, ip2str, printflow, emu = stack.instances
    if not (isinstance(ip2str, Ip2strFilter) and isinstance(printflow, PrintflowFilter)
            and isinstance(emu, LogemuOutput)):  # fmt: skip
        return None
    # PRINTFLOW's address inputs are IP2STR outputs: find the address each one is made from.
    made_from = {dst: src for src, dst in ip2str.address_pairs()}
    slot = dict(zip((k.name for k in printflow.input_keys), printflow.in_slots, strict=True))
    raw: dict[str, int] = {}
    for side in ("orig.", "reply."):
        for name in ("ip.saddr.str", "ip.daddr.str"):
            src = made_from.get(slot[side + name])
            if not src:
                return None
            raw[side + name] = src
    s_print, s_sec, s_netns = emu.in_slots[:3]
    if s_print != printflow.out_base or emu.out is None or emu.config.get("split_by"):
        return None
    if not emu.config.get("netns_prefix"):
        s_netns = 0  # slot 0 always reads None, as in LOGEMU

    s_oproto, s_rproto, s_event = slot["orig.ip.protocol"], slot["reply.ip.protocol"], slot["ct.event"]
    s_osa, s_oda, s_rsa, s_rda = (
        raw[k] for k in ("orig.ip.saddr.str", "orig.ip.daddr.str", "reply.ip.saddr.str", "reply.ip.daddr.str")
    )
    s_osp, s_odp, s_opk, s_oby, s_rsp, s_rdp, s_rpk, s_rby = (
        slot[d + n] for d in ("orig.", "reply.") for n in ("l4.sport", "l4.dport", "raw.pktcount", "raw.pktlen")
    )
    general = stack.run
    raised = stack.on_exception
    texts = ip2str.texts
    formats = FAST_FORMATS
    ctx = stack.ctx
    add = emu.out.add  # LOGEMU keeps this sink for good (SIGHUP reopens its file)
    ns_text = emu.ns_text

    def run(rec: list[Any]) -> None:
        proto = rec[s_oproto]
        if (proto == 6 or proto == 17) and rec[s_rproto] == proto:
            try:
                osa = texts.get(rec[s_osa])
                oda = texts.get(rec[s_oda])
                rsa = texts.get(rec[s_rsa])
                rda = texts.get(rec[s_rda])
                if osa is not None and oda is not None and rsa is not None and rda is not None:
                    fmt = formats[proto]
                    try:
                        text = (fmt.get(rec[s_event]) or fmt[None]) % (
                            osa, oda, rec[s_osp], rec[s_odp], rec[s_opk], rec[s_oby],
                            rsa, rda, rec[s_rsp], rec[s_rdp], rec[s_rpk], rec[s_rby])  # fmt: skip
                    except TypeError:  # a port or counter is not valid: PRINTFLOW's own way
                        general(rec)
                        return
                    sec = rec[s_sec]
                    if sec is None:
                        sec = int(ctx.clock.wall())
                    if sec != emu.head_sec:
                        emu.new_second(sec)
                    ns = rec[s_netns]
                    add(emu.head + text if ns is None else f"{emu.head}[{ns_text(ns)}] {text}")
                    return
            except Exception as e:  # as the stack's own run: a bug must not take the daemon down
                raised(e)
                return
        general(rec)

    return run


FLOW_LINE = Fusion(("NFCT", "IP2STR", "PRINTFLOW", "LOGEMU"), flow_line)
