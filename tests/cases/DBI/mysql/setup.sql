CREATE TABLE ulog_pkt (
    _id bigint unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
    oob_time_sec int unsigned,
    oob_prefix varchar(32),
    oob_in varchar(32),
    oob_out varchar(32),
    ip_saddr_str varchar(40),
    ip_daddr_str varchar(40),
    ip_protocol tinyint unsigned,
    tcp_sport smallint unsigned,
    tcp_dport smallint unsigned,
    raw_pktlen int unsigned
) ENGINE=InnoDB;
