"""The NEUTRON filter's mapping file (netns/neutronmap.py): the API's JSON, the CLI's JSON, CSV,
and every mistake refused with the file and the line of the offending port."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from pyulogd.core.errors import ConfigError
from pyulogd.netns import neutronmap

R = "0b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8"
NET_A, NET_B, EXT = ("5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9", "6e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
                     "7e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9")  # fmt: skip
PROJ_A, PROJ_B = "736672c700cd43e1bd321aeaf940365c", "836672c700cd43e1bd321aeaf940365c"
QR, QG, VM_A, VM_B = ("1a2b3c4d-5e6f-4a1b-9c2d-3e4f5a6b7c8d", "9f8e7d6c-5b4a-4c3d-8e2f-1a0b9c8d7e6f",
                      "e0259ade-86de-482e-a717-f58258f7173f", "e0259ade-87de-482e-a717-f58258f7173f")  # fmt: skip


def ip(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


API = {
    "ports": [
        {"id": QR, "network_id": NET_A, "project_id": PROJ_A, "tenant_id": PROJ_A, "device_owner":
         "network:router_interface", "device_id": R, "mac_address": "fa:16:3e:11:22:33",
         "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.1"}], "security_groups": [], "status": "ACTIVE",
         "binding:host_id": "net1", "admin_state_up": True},
        {"id": QG, "network_id": EXT, "project_id": "", "device_owner": "network:router_gateway", "device_id": R,
         "fixed_ips": [{"subnet_id": "s9", "ip_address": "172.24.4.2"}]},
        {"id": VM_A, "network_id": NET_A, "project_id": PROJ_A, "device_owner": "compute:nova",
         "device_id": "11111111-2222-4333-8444-555555555555", "mac_address": "fa:16:3e:50:aa:b5",
         "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.4"}, {"subnet_id": "s2", "ip_address": "fd00::4"}],
         "security_groups": ["sg-1", "sg-2"]},
        {"id": VM_B, "network_id": NET_B, "project_id": PROJ_B, "device_owner": "compute:nova",
         "fixed_ips": [{"ip_address": "10.0.0.4"}]},
    ],
    "floatingips": [
        {"id": "f1", "floating_ip_address": "172.24.4.10", "port_id": VM_A, "fixed_ip_address": "10.0.0.4"},
        {"id": "f2", "floating_ip_address": "172.24.4.11", "port_id": None},
    ],
}


def write(tmp_path: Path, text: str, name: str = "ports.json") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_api_json(tmp_path: Path) -> None:
    m = neutronmap.load(write(tmp_path, json.dumps(API, indent=1)))
    assert len(m) == 4
    a = m.ports[VM_A]
    assert (a.network_id, a.project_id, a.device_owner, a.role) == (NET_A, PROJ_A, "compute:nova", "vm_port")
    assert a.mac == bytes.fromhex("fa163e50aab5") and a.security_groups == ("sg-1", "sg-2")
    assert a.fixed_ips == (ip("10.0.0.4"), ip("fd00::4")) and a.floating_ips == (ip("172.24.4.10"),)
    assert m.ports[QR].role == "router_interface" and m.ports[QR].router_id == R
    assert m.ports[QG].project_id is None  # empty: unknown
    # device and chain names carry 11 and 10 characters of the id
    assert m.port("e0259ade-86") is a and m.port("e0259ade-8") is None  # 10: VM_A and VM_B share it
    assert m.port(QR) is m.port("1a2b3c4d-5e")
    assert m.router_prefix[R[:10]] == R
    # 10.0.0.4 is in two networks: only the router that sees net A knows which
    assert m.by_ip(ip("10.0.0.4"), R) is a and m.by_ip(ip("10.0.0.4"), None) is None
    assert m.by_ip(ip("172.24.4.10"), None) is a and m.by_ip(ip("172.24.4.10"), R) is a
    assert m.floating == {ip("172.24.4.10"): a}


def test_bare_list_and_cli_column_names(tmp_path: Path) -> None:
    cli = [{"ID": VM_A, "Name": "", "MAC Address": "fa:16:3e:50:aa:b5",
            "Fixed IP Addresses": [{"subnet_id": "s1", "ip_address": "10.0.0.4"}], "Status": "ACTIVE",
            "Security Groups": ["sg-1"], "Device Owner": "compute:nova", "Tags": [], "Network ID": NET_A,
            "Project": PROJ_A}]  # fmt: skip
    m = neutronmap.load(write(tmp_path, json.dumps(cli)))
    p = m.ports[VM_A]
    assert (p.network_id, p.project_id, p.fixed_ips, p.security_groups) == (NET_A, PROJ_A, (ip("10.0.0.4"),),
                                                                            ("sg-1",))  # fmt: skip


def test_csv(tmp_path: Path) -> None:
    text = (
        "id,network_id,project_id,device_owner,mac_address,fixed_ips,security_groups,floating_ips\n"
        f"{VM_A},{NET_A},{PROJ_A},compute:nova,fa:16:3e:50:aa:b5,10.0.0.4;fd00::4,sg-1;sg-2,172.24.4.10\n"
        "\n"
        f'{QR},{NET_A},{PROJ_A},network:router_interface,,'
        '"[{\'subnet_id\': \'s1\', \'ip_address\': \'10.0.0.1\'}]",,\n'
    )
    m = neutronmap.load(write(tmp_path, text, "ports.csv"))
    a = m.ports[VM_A]
    assert a.fixed_ips == (ip("10.0.0.4"), ip("fd00::4")) and a.security_groups == ("sg-1", "sg-2")
    assert a.floating_ips == (ip("172.24.4.10"),) and a.line == 2
    assert m.ports[QR].fixed_ips == (ip("10.0.0.1"),) and m.ports[QR].line == 4


def port_json(**kw: object) -> str:
    return json.dumps({"id": VM_A, **kw})


@pytest.mark.parametrize(("text", "line", "reason"), [
    ('{"ports": [\n  {"id": "x"}\n]}', 2, "needs an 'id' that is a UUID"),
    ('[\n' + port_json() + ',\n\n' + port_json() + '\n]', 4, f"port {VM_A} is listed twice (first on line 2)"),
    ('[\n' + port_json() + ',\n  ' + port_json(id=VM_B, fixed_ips=[{"ip_address": "10.0.0.300"}]) + '\n]', 3,
     "'fixed_ips' holds something that is not an IP address"),
    ('[\n\n' + port_json(mac_address="fa:16:3e") + ']', 3, "'mac_address' is not a MAC address"),
    ('[' + port_json(project_id="has blank") + ']', 1, "'project_id' is not an id"),
    ('[' + port_json(security_groups=7) + ']', 1, "'security_groups' must be a list of ids"),
    ('{"ports": [\n1]}', 1, "a port must be a JSON object"),
    ('{"ports": {}}', 1, "'ports' and 'floatingips' must be lists"),
    ('{"networks": []}', 1, "a JSON object needs a 'ports' list"),
    ('[\n{"id": "' + VM_A + '",\n "network_id": }]', 3, "not valid JSON: Expecting value"),
    ('{"ports": [], "floatingips": [\n{"floating_ip_address": "x", "port_id": "' + VM_A + '"}]}', 2,
     "'floating_ip_address' holds something that is not an IP address"),
    ('{"ports": [], "floatingips": [\n\n{"floating_ip_address": "1.2.3.4", "port_id": 5}]}', 3,
     "a floating IP's port_id must be a port UUID"),
])  # fmt: skip
def test_json_errors_name_file_and_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        neutronmap.load(path)
    assert (e.value.file, e.value.line) == (path, line)
    assert reason in e.value.reason
    assert str(e.value).startswith(f"{path}:{line}: mapping file: ")


@pytest.mark.parametrize(("text", "line", "reason"), [
    ("name,network_id\nx,y\n", 1, "CSV needs a header row with an 'id' column"),
    (f"id,fixed_ips\n{VM_A},10.0.0.1\n{VM_B},10.0.0.1;nonsense\n", 3, "not an IP address"),
    (f"id,network_id\n{VM_A},{NET_A},extra\n", 2, "3 columns, the header has 2"),
    (f'id,network_id\n{VM_A},"{NET_A}\n', 2, "bad CSV"),
    (f"id\n{VM_A}\nnot-a-uuid\n", 3, "needs an 'id' that is a UUID"),
])  # fmt: skip
def test_csv_errors_name_file_and_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = write(tmp_path, text, "ports.csv")
    with pytest.raises(ConfigError) as e:
        neutronmap.load(path)
    assert (e.value.file, e.value.line) == (path, line) and reason in e.value.reason


def test_messages_do_not_quote_the_file(tmp_path: Path) -> None:
    """Read as root: a file that is not a mapping must not leak into the log."""
    secret = "root:$6$saltsalt$hash:19000:0:99999:7:::"
    path = write(tmp_path, f"id,network_id\n{secret},x\n", "shadow.csv")
    with pytest.raises(ConfigError) as e:
        neutronmap.load(path)
    assert "saltsalt" not in str(e.value) and "root" not in e.value.reason


def test_links_fifos_and_missing_files_are_refused(tmp_path: Path) -> None:
    target = write(tmp_path, json.dumps(API))
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        neutronmap.load(str(link))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        neutronmap.load(str(fifo))  # would block for ever if opened blocking and read
    with pytest.raises(ConfigError, match="cannot open: No such file"):
        neutronmap.load(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_bytes(b'[\n{"id": "\xff"}]')
    with pytest.raises(ConfigError, match="not UTF-8") as e:
        neutronmap.load(str(tmp_path / "bad.json"))
    assert e.value.line == 2


def test_empty_files(tmp_path: Path) -> None:
    assert len(neutronmap.load(write(tmp_path, "", "empty.csv"))) == 0
    assert len(neutronmap.load(write(tmp_path, "[]"))) == 0
