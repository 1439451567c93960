"""Flow collector codec: IPFIX (RFC 7011, RFC 5103 biflows, enterprise elements), NetFlow v9
(RFC 3954) and NetFlow v5, decoded into value lists in the order of :data:`keys.OUTPUT_KEYS`.

Standard library only and sans-IO (docs/design.md): :class:`collector.Collector` takes a
message, the exporter's address and ``now``, and returns records; templates are compiled
into decoding functions once (:mod:`.template`); element names and types come from the IANA
registry shipped beside this file (:mod:`.iana`). The input plugin is IPFIXIN
(``plugins/inputs/ipfixin.py``); ulogd2's IPFIX *exporter* is ``codec/ipfix.py``.
"""
