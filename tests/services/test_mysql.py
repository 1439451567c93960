"""MYSQL against the real MariaDB: Debian's schemas unmodified, rows equal to JSON's records.

As test_pgsql.py. The MySQL schemas store addresses as BINARY(16) (IP2BIN's keys), which are
checked against the text IP2STR gave the JSON output for the same address.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyulogd.core.errors import ConfigError
from tests.services.compare import check_rows
from tests.services.conftest import MYSQL_ADDR
from tests.services.replay import SET, json_rows, mysql, run, schema

pytestmark = [pytest.mark.services, pytest.mark.skipif(not SET.is_dir(), reason="../shared/golden is not there")]
pymysql = pytest.importorskip("pymysql")

HOST, PORT = MYSQL_ADDR.rsplit(":", 1)
# The columns of the `conntrack` view, without its "WHERE state != 0" (INSERT_CT leaves state 0).
CONNTRACK = """SELECT _ct_id, oob_family, orig_ip_saddr AS orig_ip_saddr_bin, orig_ip_daddr AS orig_ip_daddr_bin,
  orig_ip_protocol, orig_l4_sport, orig_l4_dport, orig_bytes AS orig_raw_pktlen, orig_packets AS orig_raw_pktcount,
  reply_ip_saddr AS reply_ip_saddr_bin, reply_ip_daddr AS reply_ip_daddr_bin, reply_ip_protocol, reply_l4_sport,
  reply_l4_dport, reply_bytes AS reply_raw_pktlen, reply_packets AS reply_raw_pktcount, icmp_code, icmp_type, ct_mark,
  flow_start_sec, flow_start_usec, flow_end_sec, flow_end_usec FROM ulog2_ct ORDER BY _ct_id"""


def section(db: str, tmp: Path, table: str, procedure: str, extra: str = "") -> str:
    return f"""[my1]
db="{db}"
host="{HOST}"
port={PORT}
user="root"
table="{table}"
procedure="{procedure}"
spool_dir="{tmp}/spool"
batch_timeout=100ms
{extra}
"""


def conf(db: str, tmp: Path, kind: str, table: str, procedure: str, extra: str = "") -> str:
    if kind == "flow":
        stacks = "stack=ct1:NFCT,s1:IP2STR,json1:JSON\nstack=ct1:NFCT,s2:IP2BIN,my1:MYSQL"
        src = "[ct1]\nevent_mask=0x00000007\nhash_enable=0"
    else:
        stacks = ("stack=log1:NFLOG,b1:BASE,i1:IFINDEX,s1:IP2STR,h1:HWHDR,json1:JSON\n"
                  "stack=log1:NFLOG,b2:BASE,i2:IFINDEX,s2:IP2BIN,h2:HWHDR,my1:MYSQL")
        src = "[log1]\ngroup=11"
    return f"""[global]
logfile="{tmp}/ulogd.log"
loglevel=3
{stacks}

{src}

[json1]
file="{tmp}/out.json"

{section(db, tmp, table, procedure, extra)}"""


def select(db: str, sql: str) -> list[dict[str, Any]]:
    con = pymysql.connect(host=HOST, port=int(PORT), user="root", password="", database=db)
    try:
        with con.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        con.close()


@pytest.mark.parametrize("schema_file", ["mysql-ulogd2.sql", "mysql-ulogd2-flat.sql"])
def test_flows_insert_ct(my_db: str, tmp_path: Path, schema_file: str) -> None:
    mysql(my_db, schema(schema_file))
    svc = run(conf(my_db, tmp_path, "flow", "conntrack", "INSERT_CT"), "flow-json", tmp_path)
    rows = select(my_db, CONNTRACK)
    recs = json_rows(tmp_path / "out.json")
    assert len(rows) == 18
    assert check_rows(rows, recs, ["NFCT", "IP2BIN"]) > 18 * 15
    assert svc.ctx.stats.get("sql.my1.rows") == 18


@pytest.mark.parametrize(
    ("schema_file", "table", "procedure"),
    [("mysql-ulogd2.sql", "ulog", "INSERT_PACKET_FULL"), ("mysql-ulogd2-flat.sql", "ulog2", "INSERT")],
)
def test_packets(my_db: str, tmp_path: Path, schema_file: str, table: str, procedure: str) -> None:
    mysql(my_db, schema(schema_file))
    svc = run(conf(my_db, tmp_path, "pkt", table, procedure), "pkt-json", tmp_path)
    rows = select(my_db, f"SELECT * FROM {table} ORDER BY _id")
    recs = json_rows(tmp_path / "out.json")
    # Debian's MySQL schemas declare oob_protocol (mac_protocol) smallint(5), signed: the
    # EtherType of IPv6, 0x86DD = 34525, does not fit. MariaDB (strict mode, its default)
    # refuses every IPv6 packet, as it did for ulogd2 2.0.8; they are counted, IPv4 is written.
    ipv4 = [r for r in recs if r["oob.family"] == 2]
    assert svc.ctx.stats.get("sql.my1.rejected") == 44 - len(ipv4) == 20
    assert svc.ctx.stats.get("sql.my1.rows") == len(rows) == len(ipv4)
    skip = ("raw_type", "mac_str", "oob_protocol") if procedure == "INSERT_PACKET_FULL" else ()
    assert check_rows(rows, ipv4, ["NFLOG", "BASE", "IFINDEX", "IP2BIN", "HWHDR"], skip) > 24 * 15
    assert {r["oob_in"] for r in rows} == {"gbb0", ""}


def test_missing_column_is_named(my_db: str, tmp_path: Path) -> None:
    mysql(my_db, "CREATE TABLE t (id int auto_increment primary key, orig_ip_saddr_bin binary(16), nokey int);")
    with pytest.raises(ConfigError, match=r"column 'nokey' of table 't' needs the key 'nokey'"):
        run(conf(my_db, tmp_path, "flow", "t", "INSERT"), "flow-json", tmp_path)
