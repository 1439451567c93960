"""Reading the audit trail: the ECS document of a record, pyulogd's audit schema and the
row of a record in it, tamper-evidence verification, and the ``pyulogd-audit`` command
(queries, summary, report). See docs/audit.md.

A layer of its own (docs/design.md, "Import layers"): it may import ``core/``, ``io/``,
``codec/`` and ``db/``; plugins (the ECS and AUDITDB outputs) import it, it imports no plugin.
"""
