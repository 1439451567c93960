CREATE TABLE ct (ct_event INTEGER, orig_ip_protocol INTEGER, orig_ip_saddr INTEGER, orig_ip_hsaddr INTEGER, orig_ip_hdaddr INTEGER, reply_ip_hsaddr INTEGER, reply_ip_hdaddr INTEGER);
