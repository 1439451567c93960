CREATE TABLE ulog (oob_prefix TEXT, ip_saddr_bin BLOB, ip_daddr_bin BLOB, mac_saddr_str TEXT, mac_daddr_str TEXT, oob_in TEXT);
