"""The daemon's counters as Prometheus metric families (text exposition format 0.0.4).

Nothing here runs on the packet path. The counters are the ones the daemon already keeps
(``ctx.stats``: flat names such as ``nflog.log1.enobufs`` or
``logemu.emu1.lines_lost``); gauges (queue depths, spool size, connection state, the age
of the last write) are read from the outputs when someone asks. This module turns both
into families with labels, through declared tables:

* :data:`FAMILIES`: every family, its type and its help text (docs/metrics.md lists them;
  ``tests/unit/test_metrics.py`` checks the doc against this table).
* A counter of a plugin instance is ``<scope>.<id>[.<namespace>].<name>``. The scopes and
  ids are not parsed out of the name (ids and namespace names may hold dots): they come
  from the running instances (:func:`prefixes`). What follows is looked up in
  :data:`PLUGIN_COUNTERS` for the few plugins whose counter means something of its own
  (NFTRACE's ``events``), else in :data:`INSTANCE_COUNTERS` by the instance's role.
* Counters of the daemon itself (the log, IFINDEX's shared link cache, the namespace
  watcher, the endpoints) are looked up by name in :data:`DAEMON_COUNTERS`.
* A counter found in neither is still exported, as ``pyulogd_other_total`` with the
  labels known for it and the rest of its name in ``counter``: never dropped.

Label values come from outside (instance ids from the config, namespace names from
whoever created the namespace): they are escaped with the daemon's one rule first
(core/escape.py: no control character, no undecodable byte survives, so nothing can end a
line), then with the exposition format's own (``\\\\``, ``\\"``).

Known counters of every running instance are exported at 0 before they first move, so
that ``increase()`` sees the first loss too (a series that appears at 1 has not increased).
"""

from __future__ import annotations

import os
import platform
import resource
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyulogd import __version__
from pyulogd.core.escape import escape_text
from pyulogd.core.plugin import Filter, Plugin, Sink, Source
from pyulogd.db.output import SqlOutput
from pyulogd.db.writer import Writer
from pyulogd.io.filesink import FileSink
from pyulogd.io.sender import ReliableSender
from pyulogd.io.sink import SinkCounters
from pyulogd.netns.source import NetnsSource

if TYPE_CHECKING:
    from pyulogd.core.context import Context, TimerHandle
    from pyulogd.io.wal import Journal

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Family:
    name: str
    type: str  # "counter" or "gauge"
    help: str
    labels: tuple[str, ...] = ()
    # Records (or log lines) lost: summed into the "lost" of systemd's STATUS= line.
    loss: bool = False


_I = ("plugin", "id", "namespace")  # an instance's labels (namespace: only for a netns child)
_O = ("plugin", "id")

FAMILIES: dict[str, Family] = {f.name: f for f in (
    # -- inputs
    Family("pyulogd_input_records_total", "counter",
           "Events an input read from the kernel (or a client) and handed to its stacks.", _I),
    Family("pyulogd_kernel_overruns_total", "counter",
           "Times the kernel reported that a socket buffer overran (ENOBUFS): events were lost, how many "
           "is not known (NFLOG's sequence numbers tell, see pyulogd_sequence_lost_total).", _I, loss=True),
    Family("pyulogd_sequence_gaps_total", "counter",
           "Gaps in NFLOG sequence numbers (scope=group: the instance's own, scope=global: "
           "nflog_global_seq shared by every group).", (*_I, "scope")),
    Family("pyulogd_sequence_lost_total", "counter",
           "Packets missing between NFLOG sequence numbers: logged by the kernel, never received.",
           _I, loss=True),
    Family("pyulogd_input_errors_total", "counter",
           "Messages an input could not use, or kernel requests that failed, by cause; the event is "
           "skipped and the daemon goes on.", (*_I, "cause"), loss=True),
    Family("pyulogd_input_skipped_total", "counter",
           "Events an input left out on purpose, by cause (a filter option, an update of a flow "
           "that only reports its end).", (*_I, "cause")),
    Family("pyulogd_conntrack_resyncs_total", "counter",
           "Times NFCT re-read the whole conntrack table (after an overrun, or at start).", _I),
    Family("pyulogd_conntrack_purged_total", "counter",
           "Flows NFCT dropped from its table because the kernel no longer had them.", _I),
    Family("pyulogd_nfacct_dumps_total", "counter", "Dumps of the nfacct counters NFACCT asked for.", _I),
    Family("pyulogd_unixsock_clients_total", "counter", "Connections UNIXSOCK accepted.", _I),
    Family("pyulogd_nftrace_events_total", "counter",
           "nf_tables trace events NFTRACE read (several per traced packet; its records are "
           "pyulogd_input_records_total).", _I),
    Family("pyulogd_nftrace_rule_records_total", "counter",
           "Extra NFTRACE records, one per verdict-giving rule on a packet's way (rule_records=1).", _I),
    Family("pyulogd_ipfixin_events_total", "counter",
           "What IPFIXIN's collector did besides its records, by event: messages, templates learned, "
           "replaced, expired; withdrawals; data sets that came before their template and were decoded "
           "later; options records; sessions expired; malformed messages by cause (malformed_<cause>); "
           "... (docs/flows.md).", (*_I, "event")),
    Family("pyulogd_nftrace_partial_total", "counter",
           "Traced packets whose record NFTRACE made with what it had, by cause: evicted (too many open "
           "traces), timed_out, reused_id, unjudged (no rule gave a verdict), incomplete (trace events "
           "lost), rule_unknown (a rule missing from the ruleset it read).", (*_I, "cause")),
    Family("pyulogd_nftrace_ruleset_reads_total", "counter", "Times NFTRACE read the nftables ruleset.", _I),
    Family("pyulogd_nftrace_table_reasserted_total", "counter",
           "Times NFTRACE added its trace table again after someone removed or flushed it.", _I),
    Family("pyulogd_neutron_cache_misses_total", "counter",
           "Answers NEUTRON worked out (a namespace, device pair and prefix, or a connection, not seen "
           "since its sources last changed); every other record was a dictionary lookup.", _O),
    Family("pyulogd_neutron_unresolved_total", "counter",
           "NEUTRON answers that left a Neutron device without its port id (neither OVSDB nor the "
           "mapping file knows it; the records say neutron.resolved=0).", _O),
    Family("pyulogd_neutron_verdict_problems_total", "counter",
           "NFLOG prefixes whose verdict NEUTRON could not tell exactly, by cause: ambiguous (the prefix "
           "is in rules that end differently: FWaaS's DROP and REJECT, reported as DROP), unknown_prefix "
           "(in no rule of the namespace's ruleset; it is read again).", (*_O, "cause")),
    Family("pyulogd_neutron_reads_total", "counter",
           "Times NEUTRON read a source whole, by source: ruleset, mapping (SIGHUP), ovsdb (a monitor's "
           "first answer).", (*_O, "source")),
    Family("pyulogd_neutron_updates_total", "counter",
           "Changes NEUTRON was told of, by source: ovsdb (update notifications), ha (HA states that "
           "changed).", (*_O, "source")),
    Family("pyulogd_neutron_ovsdb_connects_total", "counter", "Connections NEUTRON made to ovsdb-server.", _O),
    Family("pyulogd_neutron_source_errors_total", "counter",
           "Failures of NEUTRON's sources, by source and cause: ovsdb connect, disconnect, protocol; "
           "ruleset read_error, unavailable (no input works in that namespace); mapping invalid (a bad "
           "file at SIGHUP: the old one stays); ha unreadable. Records go on, with what is known.",
           (*_O, "source", "cause")),
    Family("pyulogd_netns_attached_total", "counter",
           "Network namespaces an input started working in (netns=).", _O),
    Family("pyulogd_netns_detached_total", "counter",
           "Network namespaces an input let go (the namespace was deleted, or the daemon stops).", _O),
    Family("pyulogd_netns_attach_failures_total", "counter",
           "Failed attempts to start working in a network namespace (retried at every rescan).", _O),
    Family("pyulogd_netns_followed", "gauge",
           "Network namespaces an input with netns= works in now.", _O),
    Family("pyulogd_netns_inotify_overflows_total", "counter",
           "inotify queue overflows while watching a namespace directory (a rescan follows).", ()),
    # -- filters, stacks
    Family("pyulogd_filter_errors_total", "counter",
           "Records a filter could not decode, by cause (the keys it makes stay unset).",
           (*_O, "cause"), loss=True),
    Family("pyulogd_filter_stopped_total", "counter", "Records a filter ended on purpose (MARK).", _O),
    Family("pyulogd_ratelimit_received_total", "counter", "Records that reached a RATELIMIT filter.", _O),
    Family("pyulogd_ratelimit_records_total", "counter",
           "Records RATELIMIT passed (outcome=passed) or held back and counted in a summary record "
           "(outcome=suppressed).", (*_O, "outcome")),
    Family("pyulogd_ratelimit_key_records_total", "counter",
           "The same per limit key (key: the key's values, as audit.limit_key), for the keys RATELIMIT "
           "tracks (at most max_keys).", (*_O, "key", "outcome")),
    Family("pyulogd_ratelimit_evicted_records_total", "counter",
           "The per-key counts of keys RATELIMIT no longer tracks (evicted), added up.", (*_O, "outcome")),
    Family("pyulogd_ratelimit_summaries_total", "counter",
           "Summary records RATELIMIT sent (one per key and window that held records back).", _O),
    Family("pyulogd_ratelimit_keys_evicted_total", "counter",
           "Keys RATELIMIT stopped tracking to stay within max_keys (their window summarised first).", _O),
    Family("pyulogd_stack_errors_total", "counter",
           "Records dropped in a stack because a plugin failed (labels: the stack's output).", _O, loss=True),
    Family("pyulogd_ifindex_unknown_total", "counter",
           "Interface indexes IFINDEX could not name.", ()),
    Family("pyulogd_ifindex_netns_unresolved_total", "counter",
           "Records whose network namespace IFINDEX could not find.", ()),
    Family("pyulogd_ifindex_queries_total", "counter", "rtnetlink requests of IFINDEX's link cache.", ()),
    Family("pyulogd_ifindex_errors_total", "counter",
           "rtnetlink failures of IFINDEX's link cache, by cause.", ("cause",)),
    # -- outputs
    Family("pyulogd_output_written_total", "counter",
           "Records an output handed on: sent to its peer, or written as database rows.", _O),
    Family("pyulogd_output_lost_total", "counter",
           "Records (or lines) an output lost, by cause: write_error (a failed file write), send (a "
           "network output that could not send or queue them), queue_full, rejected (the database "
           "refused the rows), dropped (no room in memory or spool).", (*_O, "cause"), loss=True),
    Family("pyulogd_output_write_errors_total", "counter",
           "Failed writes of a file output (each loses what it held, see pyulogd_output_lost_total).", _O),
    Family("pyulogd_output_queue_overflows_total", "counter",
           "Records a network output dropped because its queue was full (part of "
           "pyulogd_output_lost_total{cause=\"send\"}).", _O),
    Family("pyulogd_output_skipped_total", "counter",
           "Records an output left out on purpose, by cause (NEUTRONLOG: no verdict to write).", (*_O, "cause")),
    Family("pyulogd_output_flush_errors_total", "counter", "Flushes of an output that raised.", _O),
    Family("pyulogd_output_spooled_total", "counter",
           "Records an output moved to its on-disk spool while its database or peer was unavailable "
           "(or slow).", _O),
    Family("pyulogd_output_resent_total", "counter",
           "Records a network stream output sends again because its peer went away without "
           "acknowledging them (they were counted in pyulogd_output_written_total already).", _O),
    Family("pyulogd_output_tls_failures_total", "counter",
           "TLS handshakes of a network output that failed (an untrusted certificate, a wrong name, a "
           "peer that does not speak TLS): each is a failed connection attempt, the records wait.", _O),
    Family("pyulogd_output_reconnects_total", "counter", "Times an output connected to its peer again.", _O),
    Family("pyulogd_output_batches_total", "counter", "Batches an SQL output wrote (NATS: messages acknowledged).", _O),
    Family("pyulogd_output_duplicates_total", "counter",
           "Records the destination had already: rows PGSQL's unique_key skipped, records of messages "
           "JetStream de-duplicated (NATS).", _O),
    Family("pyulogd_natsin_messages_total", "counter",
           "Messages NATSIN received, by what became of them (state=received, acked, redelivered, corrupt; "
           "reread: read again from the stream after an outage).",
           (*_O, "state")),
    Family("pyulogd_natsin_errors_total", "counter",
           "NATSIN's problems by cause (unknown_keys: key names no plugin declares; fetch: failed fetches; "
           "outage: the connection lost).",
           (*_O, "cause")),
    Family("pyulogd_output_queue_bytes", "gauge",
           "Bytes of records an output holds in memory, waiting for its peer.", _O),
    Family("pyulogd_output_queue_records", "gauge", "Records an SQL output holds in memory.", _O),
    Family("pyulogd_output_spool_bytes", "gauge", "Bytes of records in an output's on-disk spool.", _O),
    Family("pyulogd_output_connected", "gauge",
           "1 when a network or SQL output is connected to its peer, else 0.", _O),
    Family("pyulogd_output_last_write_age_seconds", "gauge",
           "Seconds since an output last wrote: a file's modification time, or the last time "
           "its written-records counter moved (sampled every second).", _O),
    Family("pyulogd_output_file_bytes", "gauge", "Size of the file an output appends to.", _O),
    Family("pyulogd_output_records_total", "counter",
           "What an output did with its records, exactly (received = written + spooled + dropped + in memory; "
           "outcome: received, written, spooled, unspooled (written later from the spool), spool_lost (refused "
           "from the spool), replayed (of received: given back by the write-ahead log at start)); saved with "
           "the write-ahead log's cursors, so they go on across restarts.", (*_O, "outcome")),
    Family("pyulogd_output_dropped_records_total", "counter",
           "Records an output lost, by cause, counted the same way for every output (part of "
           "pyulogd_output_records_total{outcome=\"received\"}).", (*_O, "cause")),
    Family("pyulogd_output_in_memory_records", "gauge",
           "Records an output received and has not yet written, spooled nor dropped.", _O),
    Family("pyulogd_output_commit_cursor", "gauge",
           "The highest sequence number below which every record meant for the output is durable "
           "(the write-ahead log replays what is after it at start).", _O),
    # -- the write-ahead log
    Family("pyulogd_wal_records_total", "counter", "Records written to the write-ahead log by this run.", ()),
    Family("pyulogd_wal_unlogged_records_total", "counter",
           "Records the write-ahead log could not write (a full disk): they went to the outputs unprotected.",
           (), loss=False),
    Family("pyulogd_wal_replay_skipped_total", "counter",
           "Logged records not replayed at start: their input is no longer in the configuration (or reads "
           "no longer decode to what they made).", ()),
    Family("pyulogd_wal_reserve_failures_total", "counter",
           "Times the state file could not record the next block of sequence numbers (a full disk): "
           "a SIGKILL before it works again may give a number out twice.", ()),
    Family("pyulogd_wal_bytes", "gauge", "Bytes of the write-ahead log on disk.", ()),
    Family("pyulogd_wal_segments", "gauge", "Segment files of the write-ahead log.", ()),
    Family("pyulogd_wal_sequence", "gauge", "The last sequence number given to a record (ctx.seq).", ()),
    Family("pyulogd_wal_corrupt_frames_total", "counter",
           "Torn or damaged frames of the write-ahead log found at start (a torn tail after a SIGKILL).", ()),
    # -- the daemon
    Family("pyulogd_log_lines_lost_total", "counter",
           "Lines of the daemon's own log that could not be written anywhere.", (), loss=True),
    Family("pyulogd_audit_records_total", "counter",
           "Audit records (loss records, heartbeats: docs/loss.md) the outputs took.", ()),
    Family("pyulogd_audit_errors_total", "counter",
           "Audit records an output failed to render (a bug, logged).", ()),
    Family("pyulogd_notify_errors_total", "counter",
           "systemd notify messages (READY, STATUS, WATCHDOG) that could not be sent.", ()),
    Family("pyulogd_endpoint_requests_total", "counter",
           "Requests answered by the metrics endpoint and the control socket.", ("endpoint",)),
    Family("pyulogd_endpoint_rejected_total", "counter",
           "Connections to the metrics endpoint or control socket closed without an answer, or "
           "answered with an error, by cause.", ("endpoint", "cause")),
    Family("pyulogd_loop_lag_seconds", "gauge",
           "Largest delay of the event loop's one-second timer over the last minute: how late the "
           "loop gets to its timers (and so to the watchdog).", ()),
    Family("pyulogd_other_total", "counter",
           "A counter without a family of its own (a new one): its name in 'counter'.",
           (*_I, "counter")),
    Family("pyulogd_build_info", "gauge", "Always 1: the version of pyulogd and of Python.",
           ("version", "python")),
    Family("process_start_time_seconds", "gauge", "Start time of the process since the epoch, in seconds.", ()),
    Family("process_cpu_seconds_total", "counter", "User and system CPU time of the process, in seconds.", ()),
    Family("process_resident_memory_bytes", "gauge", "Resident memory of the process, in bytes.", ()),
    Family("process_open_fds", "gauge", "Open file descriptors of the process.", ()),
    Family("process_max_fds", "gauge", "The process's limit on open file descriptors.", ()),
)}  # fmt: skip


@dataclass(frozen=True)
class To:
    """Where a counter goes: its family and fixed labels (a cause, a scope)."""

    family: str
    labels: Labels = ()


def _c(family: str, **labels: str) -> To:
    return To(family, tuple(labels.items()))


def _input_error(cause: str) -> To:
    return _c("pyulogd_input_errors_total", cause=cause)


# The counters of a plugin instance, by the instance's role and the counter's last part.
INSTANCE_COUNTERS: dict[str, dict[str, To]] = {
    "input": {
        "packets": _c("pyulogd_input_records_total"),  # NFLOG, UNIXSOCK
        "events": _c("pyulogd_input_records_total"),  # NFCT
        "records": _c("pyulogd_input_records_total"),  # NFACCT
        "enobufs": _c("pyulogd_kernel_overruns_total"),
        "seq_gaps": _c("pyulogd_sequence_gaps_total", scope="group"),
        "seq_global_gaps": _c("pyulogd_sequence_gaps_total", scope="global"),
        "seq_lost": _c("pyulogd_sequence_lost_total"),
        "malformed": _input_error("malformed"),
        "truncated": _input_error("truncated"),
        "unexpected": _input_error("unexpected"),
        "netlink_errors": _input_error("netlink_error"),
        "recv_errors": _input_error("recv_error"),
        "read_errors": _input_error("read_error"),
        "send_errors": _input_error("send_error"),
        "too_big": _input_error("too_big"),
        "bad_marker": _input_error("bad_marker"),
        "unknown_options": _input_error("unknown_option"),
        "hash_full": _input_error("hash_full"),
        "dump_errors": _input_error("dump_error"),
        "dumps_refused": _input_error("dump_refused"),
        "dumps_incomplete": _input_error("dump_incomplete"),
        "filtered": _c("pyulogd_input_skipped_total", cause="filtered"),
        "updates_skipped": _c("pyulogd_input_skipped_total", cause="update"),
        "resyncs": _c("pyulogd_conntrack_resyncs_total"),
        "purged": _c("pyulogd_conntrack_purged_total"),
        "dumps": _c("pyulogd_nfacct_dumps_total"),
        "clients": _c("pyulogd_unixsock_clients_total"),
        "netns_attached": _c("pyulogd_netns_attached_total"),
        "netns_detached": _c("pyulogd_netns_detached_total"),
        "netns_attach_failed": _c("pyulogd_netns_attach_failures_total"),
    },
    "filter": {
        "malformed": _c("pyulogd_filter_errors_total", cause="malformed"),  # BASE
        "bad_address": _c("pyulogd_filter_errors_total", cause="bad_address"),  # IP2STR
        "bad_family": _c("pyulogd_filter_errors_total", cause="bad_family"),  # IP2HBIN
        "stopped": _c("pyulogd_filter_stopped_total"),  # MARK
    },
    "output": {
        "sent": _c("pyulogd_output_written_total"),  # network outputs (io/sender.py)
        "rows": _c("pyulogd_output_written_total"),  # SQL outputs
        "written": _c("pyulogd_output_written_total"),
        "lines_written": _c("pyulogd_output_written_total"),
        "lines_lost": _c("pyulogd_output_lost_total", cause="write_error"),  # file outputs
        "records_lost": _c("pyulogd_output_lost_total", cause="write_error"),  # PCAP
        "send_failures": _c("pyulogd_output_lost_total", cause="send"),
        "rejected": _c("pyulogd_output_lost_total", cause="rejected"),
        "dropped": _c("pyulogd_output_lost_total", cause="dropped"),
        "write_errors": _c("pyulogd_output_write_errors_total"),
        "queue_overflow": _c("pyulogd_output_queue_overflows_total"),
        "spooled": _c("pyulogd_output_spooled_total"),
        "reconnects": _c("pyulogd_output_reconnects_total"),
        "tls_failures": _c("pyulogd_output_tls_failures_total"),
        "resent": _c("pyulogd_output_resent_total"),
        "batches": _c("pyulogd_output_batches_total"),
        "messages": _c("pyulogd_output_batches_total"),  # NATS
        "records": _c("pyulogd_output_written_total"),  # NATS: acknowledged by JetStream
        "failures": _c("pyulogd_output_reconnects_total"),  # NATS: failed connections and publishes
        "duplicates": _c("pyulogd_output_duplicates_total"),
        "no_action": _c("pyulogd_output_skipped_total", cause="no_action"),  # NEUTRONLOG
    },
    # stack.<id of the stack's output>.<name> (core/stack.py)
    "stack": {"errors": _c("pyulogd_stack_errors_total")},
    # output.<id>.<name> (daemon/service.py)
    "flush": {"flush_errors": _c("pyulogd_output_flush_errors_total")},
}

def _partial(cause: str) -> To:
    return _c("pyulogd_nftrace_partial_total", cause=cause)


# Where a plugin's counter means something else than the same name does for its role.
PLUGIN_COUNTERS: dict[str, dict[str, To]] = {
    "NATSIN": {
        "messages": _c("pyulogd_natsin_messages_total", state="received"),
        "acked": _c("pyulogd_natsin_messages_total", state="acked"),
        "redelivered": _c("pyulogd_natsin_messages_total", state="redelivered"),
        "corrupt": _c("pyulogd_natsin_messages_total", state="corrupt"),
        "unknown_keys": _c("pyulogd_natsin_errors_total", cause="unknown_keys"),
        "fetch_errors": _c("pyulogd_natsin_errors_total", cause="fetch"),
        "reread": _c("pyulogd_natsin_messages_total", state="reread"),
        "outages": _c("pyulogd_natsin_errors_total", cause="outage"),
    },
    "NFTRACE": {
        "events": _c("pyulogd_nftrace_events_total"),  # trace events; "packets" are its records
        "own_events": _c("pyulogd_input_skipped_total", cause="own_event"),
        "rule_records": _c("pyulogd_nftrace_rule_records_total"),
        "evicted": _partial("evicted"),
        "timed_out": _partial("timed_out"),
        "reused_ids": _partial("reused_id"),
        "unjudged": _partial("unjudged"),
        "incomplete": _partial("incomplete"),
        "rules_unknown": _partial("rule_unknown"),
        "ruleset_reads": _c("pyulogd_nftrace_ruleset_reads_total"),
        "ruleset_errors": _input_error("ruleset_error"),
        "table_reasserted": _c("pyulogd_nftrace_table_reasserted_total"),
    },
    "NEUTRON": {
        "cache_misses": _c("pyulogd_neutron_cache_misses_total"),
        "unresolved": _c("pyulogd_neutron_unresolved_total"),
        "verdict_ambiguous": _c("pyulogd_neutron_verdict_problems_total", cause="ambiguous"),
        "verdict_unknown_prefix": _c("pyulogd_neutron_verdict_problems_total", cause="unknown_prefix"),
        "ruleset_reads": _c("pyulogd_neutron_reads_total", source="ruleset"),
        "mapping_reloads": _c("pyulogd_neutron_reads_total", source="mapping"),
        "ovsdb_resyncs": _c("pyulogd_neutron_reads_total", source="ovsdb"),
        "ovsdb_updates": _c("pyulogd_neutron_updates_total", source="ovsdb"),
        "ha_changes": _c("pyulogd_neutron_updates_total", source="ha"),
        "ovsdb_connects": _c("pyulogd_neutron_ovsdb_connects_total"),
        "ovsdb_connect_failures": _c("pyulogd_neutron_source_errors_total", source="ovsdb", cause="connect"),
        "ovsdb_disconnects": _c("pyulogd_neutron_source_errors_total", source="ovsdb", cause="disconnect"),
        "ovsdb_protocol_errors": _c("pyulogd_neutron_source_errors_total", source="ovsdb", cause="protocol"),
        "ruleset_errors": _c("pyulogd_neutron_source_errors_total", source="ruleset", cause="read_error"),
        "ruleset_unavailable": _c("pyulogd_neutron_source_errors_total", source="ruleset", cause="unavailable"),
        "mapping_errors": _c("pyulogd_neutron_source_errors_total", source="mapping", cause="invalid"),
        "ha_errors": _c("pyulogd_neutron_source_errors_total", source="ha", cause="unreadable"),
    },
}

PLUGIN_COUNTERS["RATELIMIT"] = {
    "received": _c("pyulogd_ratelimit_received_total"),
    "passed": _c("pyulogd_ratelimit_records_total", outcome="passed"),
    "suppressed": _c("pyulogd_ratelimit_records_total", outcome="suppressed"),
    "evicted.passed": _c("pyulogd_ratelimit_evicted_records_total", outcome="passed"),
    "evicted.suppressed": _c("pyulogd_ratelimit_evicted_records_total", outcome="suppressed"),
    "summaries": _c("pyulogd_ratelimit_summaries_total"),
    "keys_evicted": _c("pyulogd_ratelimit_keys_evicted_total"),
}


def _ratelimit_key(rest: str) -> tuple[str, Labels] | None:
    """RATELIMIT's per-key counters, ``key.<limit key>.passed|suppressed``: the key becomes a
    label (its text is already escaped by the filter, and is escaped again as every label is)."""
    if not rest.startswith("key."):
        return None
    key, _, outcome = rest[4:].rpartition(".")
    if outcome not in ("passed", "suppressed"):
        return None
    return "pyulogd_ratelimit_key_records_total", (("key", key), ("outcome", outcome))


def _ipfixin_event(event: str) -> To:
    return _c("pyulogd_ipfixin_events_total", event=event)


# IPFIXIN (codec/ipfixin/collector.py COUNTERS and CAUSES, plugins/inputs/ipfixin.py STAT_NAMES):
# what loses data goes with the other inputs' errors, the rest is the collector's own.
PLUGIN_COUNTERS["IPFIXIN"] = {
    "seq_gaps": _c("pyulogd_sequence_gaps_total", scope="domain"),
    "lost_records": _c("pyulogd_sequence_lost_total"),
    "denied": _c("pyulogd_input_skipped_total", cause="denied"),
    **{name: _input_error(name) for name in ("bad_version", "held_expired", "held_evicted", "held_malformed",
                                             "template_limit", "domain_limit", "exporter_limit", "tcp_bad_stream",
                                             "decoder_errors", "socket_drops")},
    **{name: _ipfixin_event(name) for name in ("messages", "options_records", "templates", "options_templates",
                                               "templates_replaced", "templates_expired", "withdrawals",
                                               "withdrawals_ignored", "no_template", "held_decoded", "reserved_sets",
                                               "sessions_expired", "sessions_evicted", "seq_backwards", "no_time_base",
                                               "tcp_clients")},
    **{f"malformed.{cause}": _ipfixin_event(f"malformed_{cause}") for cause in (
        "short", "bad_length", "bad_set_length", "bad_template", "field_overrun", "bad_count")},
}  # fmt: skip

# Counters of the daemon itself, by full name.
DAEMON_COUNTERS: dict[str, To] = {
    "log.lines_lost": _c("pyulogd_log_lines_lost_total"),
    "wal.records_unlogged": _c("pyulogd_wal_unlogged_records_total"),
    "wal.replay_unknown": _c("pyulogd_wal_replay_skipped_total"),
    "wal.reserve_failed": _c("pyulogd_wal_reserve_failures_total"),
    "notify.send_errors": _c("pyulogd_notify_errors_total"),
    "audit.records": _c("pyulogd_audit_records_total"),
    "audit.errors": _c("pyulogd_audit_errors_total"),
    "netns.inotify_overflows": _c("pyulogd_netns_inotify_overflows_total"),
    "ifindex.unknown": _c("pyulogd_ifindex_unknown_total"),
    "ifindex.netns_unresolved": _c("pyulogd_ifindex_netns_unresolved_total"),
    "ifindex.rtnl.queries": _c("pyulogd_ifindex_queries_total"),
    "ifindex.rtnl.errors": _c("pyulogd_ifindex_errors_total", cause="error"),
    "ifindex.rtnl.timeouts": _c("pyulogd_ifindex_errors_total", cause="timeout"),
    "ifindex.rtnl.malformed": _c("pyulogd_ifindex_errors_total", cause="malformed"),
    "ifindex.rtnl.enobufs": _c("pyulogd_kernel_overruns_total", plugin="IFINDEX"),
    "metrics.requests": _c("pyulogd_endpoint_requests_total", endpoint="metrics"),
    "control.requests": _c("pyulogd_endpoint_requests_total", endpoint="control"),
    **{f"{ep}.{cause}": _c("pyulogd_endpoint_rejected_total", endpoint=ep, cause=cause)
       for ep in ("metrics", "control") for cause in ("bad_request", "busy", "timeout", "refused")},
}  # fmt: skip

# Counters exported at 0 before they first move, by plugin (inputs, filters) or by the
# part of an output that keeps them (see _zero_names); SQL outputs count as "SQL".
ZERO_FILLED: dict[str, tuple[str, ...]] = {
    "NFLOG": ("packets", "enobufs", "malformed", "seq_gaps", "seq_lost", "seq_global_gaps"),
    "NFCT": ("events", "enobufs", "malformed", "hash_full"),
    "NFACCT": ("records", "enobufs", "malformed", "dumps"),
    "NFTRACE": ("packets", "events", "enobufs", "malformed", "incomplete"),
    "NEUTRON": ("unresolved", "ovsdb_connect_failures", "ruleset_errors", "mapping_errors"),
    "UNIXSOCK": ("packets", "malformed", "too_big"),
    "IPFIXIN": ("records", "malformed", "seq_gaps", "lost_records", "denied"),
    "BASE": ("malformed",),
    "IP2STR": ("bad_address",),
    "PCAP": ("write_errors", "records_lost"),
    "SQL": ("rows", "dropped", "rejected", "spooled"),
    "ReliableSender": ("sent", "send_failures", "queue_overflow", "spooled"),
}


@dataclass
class Prefix:
    """A counter name prefix that belongs to one running instance."""

    text: str  # e.g. "nflog.log1.qrouter-1."
    role: str  # a key of INSTANCE_COUNTERS
    labels: Labels
    plugin: str = ""  # a key of PLUGIN_COUNTERS, looked up first


def _role(inst: Plugin) -> str:
    if isinstance(inst, Source):
        return "input"
    if isinstance(inst, Filter):
        return "filter"
    return "output"


def _scope(inst: Plugin) -> str:
    """The first part of an instance's counter names: its plugin's name in lower case, or
    ``sql`` for the SQL outputs (they count in their writer, db/writer.py)."""
    return "sql" if isinstance(inst, SqlOutput) else inst.name.lower()


def instances(started: Iterable[Plugin]) -> Iterator[tuple[Plugin, str, str | None]]:
    """Every running instance with its configured id and its namespace: the started ones,
    then the children of those that follow namespaces (one instance per namespace, whose
    own id is ``<id>.<namespace>``)."""
    for inst in started:
        yield inst, inst.id, None
        children = inst.children if isinstance(inst, NetnsSource) else None
        for ns, child in list((children or {}).items()):
            yield child, inst.id, ns


def prefixes(started: Iterable[Plugin]) -> list[Prefix]:
    """The counter prefixes of the running instances, longest first (so that a namespace
    child's ``nflog.log1.ns.`` wins over its manager's ``nflog.log1.``)."""
    out: list[Prefix] = []
    for inst, base_id, ns in instances(started):
        labels: Labels = (("plugin", inst.name), ("id", base_id))
        if ns is not None:
            labels += (("namespace", ns),)
        out.append(Prefix(f"{_scope(inst)}.{inst.id}.", _role(inst), labels, inst.name))
        if isinstance(inst, Sink):
            out.append(Prefix(f"stack.{inst.id}.", "stack", labels))
            out.append(Prefix(f"output.{inst.id}.", "flush", labels))
    out.sort(key=lambda p: len(p.text), reverse=True)
    return out


def components(inst: Plugin) -> list[Any]:
    """The parts of an output that keep counters or hold what gauges read: its file sink,
    network sender or SQL writer (an output's sink is ``out`` (io/output.py), a network
    sink's sender ``out.sender``, a SQL output's writer ``writer``)."""
    out = getattr(inst, "out", None)
    found: list[Any] = []
    for obj in (out, getattr(out, "sender", None), getattr(inst, "writer", None)):
        if isinstance(obj, (FileSink, ReliableSender, Writer)) and obj not in found:
            found.append(obj)
    return found


def _zero_names(inst: Plugin) -> tuple[str, ...]:
    names: tuple[str, ...] = ZERO_FILLED.get("SQL" if isinstance(inst, SqlOutput) else inst.name, ())
    for comp in components(inst):
        names += comp.stat_names if isinstance(comp, FileSink) else ZERO_FILLED.get(type(comp).__name__, ())
    return names


# -- one scrape


@dataclass
class Sample:
    family: str
    labels: Labels
    value: float


@dataclass
class Collection:
    """Every sample of one scrape, by family (see :meth:`Collector.collect`)."""

    samples: dict[str, dict[Labels, float]] = field(default_factory=dict)

    def add(self, family: str, labels: Labels, value: float) -> None:
        series = self.samples.setdefault(family, {})
        series[labels] = series.get(labels, 0) + value

    def total(self, family: str) -> float:
        return sum(self.samples.get(family, {}).values())

    def lost(self) -> float:
        """Records lost, whatever the cause. Not the kernel's overruns (each is a number of
        events nobody knows; the sequence gaps they leave are counted) nor log lines."""
        return sum(self.total(name) for name, fam in FAMILIES.items() if fam.loss and name not in _NOT_RECORDS)


_NOT_RECORDS = ("pyulogd_kernel_overruns_total", "pyulogd_log_lines_lost_total")


class Prefixes:
    """The counter prefixes of the running instances (:func:`prefixes`), indexed: the part of
    an instance's counter after its prefix never holds a dot, so splitting a name at its last
    dot finds the instance with one dict lookup, whatever the number of namespaces."""

    def __init__(self, known: list[Prefix]) -> None:
        self.known = known  # longest first
        self.by_text = {p.text: p for p in known}

    def find(self, name: str) -> tuple[Prefix, str] | None:
        cut = name.rfind(".") + 1
        p = self.by_text.get(name[:cut])
        if p is not None:
            return p, name[cut:]
        for p in self.known:  # a name whose last part holds a dot: not one of ours, but labelled
            if name.startswith(p.text):
                return p, name[len(p.text):]
        return None


def map_counter(name: str, known: list[Prefix] | Prefixes) -> tuple[str, Labels]:
    """The family and labels of the counter ``name`` (``known``: :func:`prefixes`)."""
    index = known if isinstance(known, Prefixes) else Prefixes(known)
    found = index.find(name)
    if found is not None:
        p, rest = found
        if p.plugin == "RATELIMIT":
            keyed = _ratelimit_key(rest)
            if keyed is not None:
                return keyed[0], p.labels + keyed[1]
        to = PLUGIN_COUNTERS.get(p.plugin, {}).get(rest) or INSTANCE_COUNTERS[p.role].get(rest)
        if to is None:
            return "pyulogd_other_total", p.labels + (("counter", rest),)
        return to.family, p.labels + to.labels
    to = DAEMON_COUNTERS.get(name)
    if to is not None:
        return to.family, to.labels
    return "pyulogd_other_total", (("counter", name),)


class Collector:
    """Reads the daemon's counters and the outputs' gauges on demand.

    ``tick()`` runs every second on the event loop (the daemon arms it): it notes when each
    output's written-records counter last moved (its last-write age) and how late the loop
    was to the tick. Nothing is added to the packet path.
    """

    TICK = 1.0
    LAG_WINDOW = 30.0  # the lag gauge is the largest of this window and the one before

    def __init__(self, ctx: Context, started: list[Plugin], journal: Journal | None = None) -> None:
        self.ctx = ctx
        self.started = started
        self.journal = journal
        self.start_wall = ctx.clock.wall()
        now = self._start = ctx.clock.monotonic()
        self._moved: dict[str, tuple[int, float]] = {}  # written counter -> (value, when it moved)
        self._next_tick = now + self.TICK
        self._lag = [0.0, 0.0]  # largest lag in the current window, in the previous one
        self._window_end = now + self.LAG_WINDOW
        self._timer: TimerHandle | None = None

    def start(self) -> None:
        """Arm the one-second tick on the event loop."""
        self._next_tick = self.ctx.clock.monotonic() + self.TICK
        self._timer = self.ctx.loop.call_later(self.TICK, self.tick, repeat=True)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def tick(self) -> None:
        now = self.ctx.clock.monotonic()
        lag = max(0.0, now - self._next_tick)
        self._next_tick = now + self.TICK
        if now >= self._window_end:
            self._lag = [0.0, self._lag[0]]
            self._window_end = now + self.LAG_WINDOW
        self._lag[0] = max(self._lag[0], lag)
        stats = self.ctx.stats
        for inst in self.started:
            for name in _written_names(inst):
                value = stats.get(name)
                seen = self._moved.get(name)
                if seen is None:
                    # Nothing written yet: not since the start. Written already: just now.
                    self._moved[name] = (value, now if value else self._start)
                elif seen[0] != value:
                    self._moved[name] = (value, now)

    def loop_lag(self) -> float:
        return max(self._lag)

    def collect(self) -> Collection:
        col = Collection()
        known = Prefixes(prefixes(self.started))
        # Known counters of every instance at 0 first, so their series exist before they move.
        for inst, _id, _ns in instances(self.started):
            for suffix in _zero_names(inst):
                fam, labels = map_counter(f"{_scope(inst)}.{inst.id}.{suffix}", known)
                col.add(fam, labels, 0)
            if isinstance(inst, Sink):
                fam, labels = map_counter(f"stack.{inst.id}.errors", known)
                col.add(fam, labels, 0)
        col.add("pyulogd_log_lines_lost_total", (), 0)
        for name, value in self.ctx.stats.snapshot().items():
            fam, labels = map_counter(name, known)
            col.add(fam, labels, value)
        self._gauges(col)
        return col

    def _gauges(self, col: Collection) -> None:
        clock = self.ctx.clock
        now, wall = clock.monotonic(), clock.wall()
        for inst in self.started:
            labels: Labels = (("plugin", inst.name), ("id", inst.id))
            if isinstance(inst, NetnsSource) and inst.follows:
                col.add("pyulogd_netns_followed", labels, len(inst.children or ()))
            if not isinstance(inst, Sink):
                continue
            c = getattr(inst, "counters", None)
            if isinstance(c, SinkCounters):
                for outcome in ("received", "written", "spooled", "unspooled", "spool_lost", "replayed"):
                    col.add("pyulogd_output_records_total", (*labels, ("outcome", outcome)), getattr(c, outcome))
                for cause, n in sorted(c.dropped.items()):
                    col.add("pyulogd_output_dropped_records_total", (*labels, ("cause", cause)), n)
                col.add("pyulogd_output_in_memory_records", labels, c.in_memory())
            journal = self.journal
            if journal is not None and inst.id in journal.cursors:
                col.add("pyulogd_output_commit_cursor", labels, journal.cursors[inst.id])
            fd = _file_fd(inst)
            if fd >= 0:
                try:
                    st = os.fstat(fd)
                except OSError:
                    pass
                else:
                    if stat.S_ISREG(st.st_mode):
                        col.add("pyulogd_output_file_bytes", labels, st.st_size)
                        col.add("pyulogd_output_last_write_age_seconds", labels, max(0.0, wall - st.st_mtime))
            for comp in components(inst):
                if isinstance(comp, ReliableSender):
                    col.add("pyulogd_output_queue_bytes", labels, comp.queued)
                    col.add("pyulogd_output_connected", labels, 1 if comp.connected else 0)
                    if comp.spool_settings is not None:
                        col.add("pyulogd_output_spool_bytes", labels, comp.spooled_bytes)
                elif isinstance(comp, Writer):
                    col.add("pyulogd_output_queue_bytes", labels, comp.mem_bytes)
                    col.add("pyulogd_output_queue_records", labels, comp.mem_rows)
                    col.add("pyulogd_output_connected", labels, 1 if comp.connected else 0)
                    if comp.spool is not None:
                        col.add("pyulogd_output_spool_bytes", labels, comp.spool.bytes)
            moved = [self._moved[n][1] for n in _written_names(inst) if n in self._moved]
            if moved:
                col.add("pyulogd_output_last_write_age_seconds", labels, max(0.0, now - max(moved)))
        journal = self.journal
        if journal is not None:
            col.add("pyulogd_wal_records_total", (), journal.records)
            col.add("pyulogd_wal_sequence", (), self.ctx.seq)
            if journal.file is not None:
                col.add("pyulogd_wal_bytes", (), journal.file.bytes)
                col.add("pyulogd_wal_segments", (), len(journal.file.segments))
                col.add("pyulogd_wal_corrupt_frames_total", (), journal.file.corrupt)
        col.add("pyulogd_loop_lag_seconds", (), round(self.loop_lag(), 6))
        col.add("pyulogd_build_info", (("version", __version__), ("python", platform.python_version())), 1)
        _process(col, self.start_wall)


def _written_names(inst: Plugin) -> list[str]:
    """The written-records counters of an output that does not write a file (a file's own
    modification time tells when it was last written)."""
    if not isinstance(inst, Sink) or _file_fd(inst) >= 0:
        return []
    return [f"{_scope(inst)}.{inst.id}.{s}" for s in ("sent", "rows")]


def _file_fd(inst: Plugin) -> int:
    """The descriptor of the file an output appends to (its file sink's), or -1."""
    for comp in components(inst):
        if isinstance(comp, FileSink):
            fd: int = comp.fd
            return fd
    return -1


def _process(col: Collection, start_wall: float) -> None:
    """The usual process_* gauges (as Prometheus' client libraries export them)."""
    col.add("process_start_time_seconds", (), round(start_wall, 3))
    # Each reading on its own: one that a sandbox refuses (a seccomp filter) leaves the others.
    try:
        t = os.times()
        col.add("process_cpu_seconds_total", (), round(t.user + t.system, 3))
    except OSError:
        pass
    try:
        with open("/proc/self/statm", "rb") as f:
            rss_pages = int(f.read().split()[1])
        col.add("process_resident_memory_bytes", (), rss_pages * resource.getpagesize())
    except (OSError, ValueError, IndexError):
        pass
    try:
        col.add("process_open_fds", (), len(os.listdir("/proc/self/fd")))
    except OSError:
        pass
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except OSError:
        return
    if soft != resource.RLIM_INFINITY:
        col.add("process_max_fds", (), soft)


# -- the text format

def label_value(text: str) -> str:
    """An outside string as a label value: the daemon's escaping (nothing that can end a
    line, valid UTF-8) and then the exposition format's (backslash and double quote)."""
    return escape_text(text).replace("\\", "\\\\").replace('"', '\\"')


def _value(v: float) -> str:
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 2**53):
        return str(int(v))
    return repr(float(v))


def render(col: Collection) -> str:
    """The text exposition format 0.0.4: per family HELP, TYPE, then its samples, sorted."""
    out: list[str] = []
    for name in sorted(col.samples):
        fam = FAMILIES[name]
        out.append(f"# HELP {name} {_help(fam.help)}")
        out.append(f"# TYPE {name} {fam.type}")
        for labels, value in sorted(col.samples[name].items()):
            if labels:
                inner = ",".join(f'{k}="{label_value(v)}"' for k, v in labels)
                out.append(f"{name}{{{inner}}} {_value(value)}")
            else:
                out.append(f"{name} {_value(value)}")
    out.append("")
    return "\n".join(out)


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def status_line(col: Collection, namespaces: int) -> str:
    """systemd's STATUS=: what an operator wants at a glance. File outputs count what they
    lose, not what they write: "sent" is what network and SQL outputs handed on."""
    text = f"{int(col.total('pyulogd_input_records_total'))} records in, {int(col.lost())} lost"
    written = int(col.total("pyulogd_output_written_total"))
    if written:
        text += f", {written} sent"
    overruns = int(col.total("pyulogd_kernel_overruns_total"))
    if overruns:
        text += f", {overruns} kernel overruns"
    if namespaces:
        text += f"; {namespaces} namespaces"
    return text
