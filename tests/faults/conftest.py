"""The fault-injection matrix (issue 12, item 7): ``pytest -m faults`` runs it alone.

Each test is one row: a fault (disk full, database stopped, peer down, SIGKILL, SIGSTOP,
kernel overrun) under one output kind, real traffic from a namespace of the test's own, and
the numbers the daemon reported checked against what the kernel logged (nft counter, NFLOG
sequence numbers) and what reached the destination. ``PYULOGD_FAULT_RESULTS=FILE`` appends
each row as JSON to FILE (docs/security.md's table is made from it).
"""
