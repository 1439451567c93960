"""The audit store: what the SQL outputs (SQLITE3, PGSQL, MYSQL, DBI) share.

``columns`` maps table columns to ulogd keys, ``render`` turns key values into column
values with ulogd's per-type semantics, ``statement`` builds the SQL from the config,
``spool`` and ``writer`` keep records safe and ordered on their way to the database, and
``sqlite``/``pgsql``/``mysql`` are the three clients. ``output`` is the Sink the plugins
derive from. See docs/sql.md.
"""
