"""Which namespaces netns= selects, and the Neutron ids their names carry."""

from __future__ import annotations

import pytest

from pyulogd.core.stats import Stats
from pyulogd.netns.names import NameMatcher, neutron_ids, tag_values

RID = "4f0c2e3a-9b1d-4c55-8a2e-1f2d3c4b5a69"


@pytest.mark.parametrize(
    ("spec", "name", "hit"),
    [
        ("qrouter-*", f"qrouter-{RID}", True),
        ("qrouter-*", f"snat-{RID}", False),
        ("qrouter-*,snat-*", f"snat-{RID}", True),
        (" qrouter-* , snat-* ", f"snat-{RID}", True),  # blanks around list items
        ("qdhcp-1234", "qdhcp-1234", True),  # a plain name
        ("qdhcp-1234", "qdhcp-12345", False),  # matched whole, not as a prefix
        ("qrouter-????????-*", f"qrouter-{RID}", True),
        ("qrouter-[0-3]*", f"qrouter-{RID}", False),
        ("QROUTER-*", f"qrouter-{RID}", False),  # case matters, as for file names
        ("*", ".hidden", False),  # hidden files are not ip-netns namespaces
        (".*", ".hidden", True),  # unless asked for
        ("*", "fip-x", True),
    ],
)
def test_matcher(spec: str, name: str, hit: bool) -> None:
    assert NameMatcher(spec)(name) is hit


@pytest.mark.parametrize("spec", ["", " , ", "a/b", "..", "qrouter-*,/run/netns/x"])
def test_matcher_refuses(spec: str) -> None:
    with pytest.raises(ValueError):
        NameMatcher(spec)


@pytest.mark.parametrize(
    ("name", "ids"),
    [
        (f"qrouter-{RID}", (RID, None)),
        (f"snat-{RID}", (RID, None)),  # the router's id too (DVR's centralized SNAT)
        (f"qdhcp-{RID}", (None, RID)),
        (f"fip-{RID}", (None, RID)),  # the external network
        (f"ovnmeta-{RID}", (None, RID)),
        ("qrouter-", (None, None)),
        ("qrouter", (None, None)),
        (f"qlbaas-{RID}", (None, None)),  # a load balancer: neither
        (f"pyut1-qrouter-{RID}", (None, None)),  # the prefix is the part before the first '-'
        ("qrouter-not-a-uuid", ("not-a-uuid", None)),  # as Neutron: the id is not checked
    ],
)
def test_neutron_ids(name: str, ids: tuple[str | None, str | None]) -> None:
    assert neutron_ids(name) == ids


def test_tag_values() -> None:
    assert tag_values(None) == [None, None, None]
    assert tag_values(f"qrouter-{RID}") == [f"qrouter-{RID}", RID, None]
    assert tag_values("blue") == ["blue", None, None]


def test_stats_fold_takes_one_namespace_only() -> None:
    s = Stats()
    s.incr("nflog.log1.packets", 5)
    s.incr("nflog.log1.a.packets", 2)
    s.incr("nflog.log1.a.enobufs", 1)
    s.incr("nflog.log1.a.b.packets", 7)  # namespace "a.b", not "a"
    s.fold("nflog.log1.a.", "nflog.log1.")
    assert s.snapshot() == {"nflog.log1.a.b.packets": 7, "nflog.log1.enobufs": 1, "nflog.log1.packets": 7}
