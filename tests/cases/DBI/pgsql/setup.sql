CREATE TABLE ulog_pkt (
    _id bigserial PRIMARY KEY,
    oob_time_sec bigint,
    oob_prefix varchar(32),
    oob_in varchar(32),
    oob_out varchar(32),
    ip_saddr_str varchar(40),
    ip_daddr_str varchar(40),
    ip_protocol smallint,
    tcp_sport integer,
    tcp_dport integer,
    raw_pktlen integer
);
