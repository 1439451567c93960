"""The keys of a collected flow record, in the order of the value lists the decoder builds.

NFCT's names wherever the meaning is the same (``codec/nfct.py``), so that stacks written
for conntrack flows (IP2STR, PRINTFLOW, JSON, the SQL outputs) take exported flows
unchanged: ``orig.*`` is the flow as the exporter saw it, ``reply.*`` the reverse direction
of an RFC 5103 biflow (left invalid for a one-way record), ``ct.event`` says whether the
record ends its flow. What conntrack has no word for is under ``ipfix.``, and every element
of the record that no key takes is in the map ``ipfix.extra`` (IANA name, or
``<pen>.<id>`` when unknown, to value), so no field is dropped silently.
"""

from __future__ import annotations

from pyulogd.core.keys import Key
from pyulogd.core.keys import KeyType as T

OUTPUT_KEYS: tuple[Key, ...] = (
    Key("orig.ip.saddr", T.IPADDR, help="source address (sourceIPv4Address 8, sourceIPv6Address 27)"),
    Key("orig.ip.daddr", T.IPADDR, help="destination address (12, 28)"),
    Key("orig.ip.protocol", T.UINT8, help="layer 4 protocol (protocolIdentifier 4)"),
    Key("orig.l4.sport", T.UINT16, help="source port (sourceTransportPort 7)"),
    Key("orig.l4.dport", T.UINT16, help="destination port (destinationTransportPort 11)"),
    Key("orig.raw.pktlen", T.UINT64, help="bytes (octetDeltaCount 1; octetTotalCount 85 when no delta)"),
    Key("orig.raw.pktcount", T.UINT64, help="packets (packetDeltaCount 2; packetTotalCount 86 when no delta)"),
    Key("reply.ip.saddr", T.IPADDR, help="biflow: the reverse direction's source (= orig.ip.daddr)"),
    Key("reply.ip.daddr", T.IPADDR, help="biflow: the reverse direction's destination (= orig.ip.saddr)"),
    Key("reply.ip.protocol", T.UINT8, help="biflow: layer 4 protocol"),
    Key("reply.l4.sport", T.UINT16, help="biflow: the reverse direction's source port (= orig.l4.dport)"),
    Key("reply.l4.dport", T.UINT16, help="biflow: the reverse direction's destination port"),
    Key("reply.raw.pktlen", T.UINT64, help="biflow: reverse bytes (reverseOctetDeltaCount, PEN 29305)"),
    Key("reply.raw.pktcount", T.UINT64, help="biflow: reverse packets (reversePacketDeltaCount)"),
    Key("icmp.code", T.UINT8, help="ICMP code (icmpCodeIPv4 177, icmpTypeCodeIPv4 32; NetFlow: from the port)"),
    Key("icmp.type", T.UINT8, help="ICMP type (icmpTypeIPv4 176, icmpTypeCodeIPv4 32)"),
    Key("icmpv6.code", T.UINT8, help="ICMPv6 code (icmpCodeIPv6 179, icmpTypeCodeIPv6 139)"),
    Key("icmpv6.type", T.UINT8, help="ICMPv6 type (icmpTypeIPv6 178, icmpTypeCodeIPv6 139)"),
    Key("ct.event", T.UINT32, help="from flowEndReason: 4 (DESTROY) for a flow that ended (idle, end of flow, "
        "forced, lack of resources), 2 (UPDATE) for an active-timeout report; invalid without flowEndReason"),
    Key("flow.start.sec", T.UINT32, help="first packet, absolute (any time encoding of the exporter)"),
    Key("flow.start.usec", T.UINT32, help="microseconds of flow.start.sec"),
    Key("flow.end.sec", T.UINT32, help="last packet, absolute"),
    Key("flow.end.usec", T.UINT32, help="microseconds of flow.end.sec"),
    Key("oob.family", T.UINT8, help="protocol family (2 IPv4, 10 IPv6)"),
    Key("oob.protocol", T.UINT16, help="layer 3 protocol as ethertype (2048 IPv4, 34525 IPv6)"),
    Key("ipfix.exporter", T.STRING, help="the exporter's address and source port, \"10.0.0.1:4739\" or "
        "\"[fd00::1]:4739\""),
    Key("ipfix.version", T.UINT16, help="10 IPFIX, 9 NetFlow v9, 5 NetFlow v5"),
    Key("ipfix.odid", T.UINT32, help="observation domain (NetFlow v9: source ID; v5: engine type * 256 + "
        "engine id)"),
    Key("ipfix.template_id", T.UINT16, help="template of the record (invalid for NetFlow v5)"),
    Key("ipfix.export_time", T.UINT32, help="export time of the message (header, seconds)"),
    Key("ipfix.options", T.BOOL, help="1 for an options record (emit_options=1), invalid for flows"),
    Key("ipfix.obs_point_id", T.UINT64, help="observation point (observationPointId 138; Open vSwitch: "
        "obs_point_id of the bridge or of the sample() action)"),
    Key("ipfix.direction", T.UINT8, help="flowDirection 61: 0 ingress, 1 egress"),
    Key("ipfix.end_reason", T.UINT8, help="flowEndReason 136: 1 idle, 2 active, 3 end of flow, 4 forced, "
        "5 lack of resources"),
    Key("ipfix.tcp_flags", T.UINT16, help="tcpControlBits 6 (OR of the flags seen)"),
    Key("ipfix.in_ifindex", T.UINT32, help="ingressInterface 10 (Open vSwitch: the port's ifindex)"),
    Key("ipfix.out_ifindex", T.UINT32, help="egressInterface 14"),
    Key("ipfix.in_ifname", T.STRING, help="interfaceName 82 (Open vSwitch: the ingress port)"),
    Key("ipfix.out_ifname", T.STRING, help="a second interfaceName 82 (Open vSwitch egress records: the "
        "egress port)"),
    Key("ipfix.vlan", T.UINT16, help="vlanId 58, else dot1qVlanId 243"),
    Key("mac.saddr.str", T.STRING, help="sourceMacAddress 56, as HWHDR writes a MAC (\"02:00:0a:4d:00:01\")"),
    Key("mac.daddr.str", T.STRING, help="destinationMacAddress 80"),
    Key("ipfix.tunnel.type", T.UINT8, help="tunnelType (VMware 6876/891): 1 VXLAN, 2 GRE, 3 LISP, 4 STT, "
        "7 Geneve"),
    Key("ipfix.tunnel.key", T.UINT64, help="tunnelKey (6876/892): VNI or GRE key"),
    Key("ipfix.tunnel.saddr", T.STRING, help="tunnelSourceIPv4Address (6876/893)"),
    Key("ipfix.tunnel.daddr", T.STRING, help="tunnelDestinationIPv4Address (6876/894)"),
    Key("ipfix.tunnel.protocol", T.UINT8, help="tunnelProtocolIdentifier (6876/895)"),
    Key("ipfix.tunnel.sport", T.UINT16, help="tunnelSourceTransportPort (6876/896)"),
    Key("ipfix.tunnel.dport", T.UINT16, help="tunnelDestinationTransportPort (6876/897)"),
    Key("ipfix.virtual_obs_id", T.STRING, help="virtualObsID (6876/898, Open vSwitch other_config:virtual_obs_id)"),
    Key("ipfix.extra", T.MAP, help="every other element of the record: IANA name (or <pen>.<id>) to value; "
        "an element repeated in the record gives a list"),
)
KEYS: tuple[str, ...] = tuple(k.name for k in OUTPUT_KEYS)
# Index of each key in a value list (slot 0 is the reserved None).
IDX: dict[str, int] = {name: i + 1 for i, name in enumerate(KEYS)}
NVALUES = len(KEYS) + 1
I_EXTRA = IDX["ipfix.extra"]
