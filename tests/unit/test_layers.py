"""The import layers of docs/design.md ("Import layers"), checked on the source.

Every module under src/pyulogd is parsed with ``ast``; every import counts, wherever it is:
at the top, inside a function (a lazy import is still a dependency) and under
``if TYPE_CHECKING:`` (a type names a dependency as much as a call does; a lower layer that
needs an upper layer's type declares a Protocol, as core/context.py does for the loop).
``importlib.import_module("pyulogd....")`` with a constant name counts too. Only plugin
discovery (core/registry.py) imports plugin modules, by a name it computes.

A violation is reported as ``module -> imported module (rule)``. The few known ones are in
:data:`KNOWN`, each with the reason it stays; a new violation fails, and so does an entry of
:data:`KNOWN` that no longer happens (remove it: the list only shrinks).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from pyulogd.core import registry

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "pyulogd"

# Layer of each top-level package of pyulogd ("top": the package itself and __main__).
LAYERS = ("codec", "packet", "core", "io", "db", "netns", "audit", "plugins", "daemon", "ctl")
# The modules of core that codec/ and packet/ may use: they import nothing of pyulogd.
CORE_LEAVES = frozenset({"pyulogd.core.errors", "pyulogd.core.keys"})
# Which layers a layer may import (its own always included); None: any.
MAY_IMPORT: dict[str, frozenset[str] | None] = {
    "codec": frozenset({"codec", "packet"}),  # and CORE_LEAVES
    "packet": frozenset({"packet", "codec"}),  # and CORE_LEAVES
    "core": frozenset({"core"}),
    "io": frozenset({"io", "core", "codec"}),
    "db": frozenset({"db", "core", "io", "codec"}),
    "netns": frozenset({"netns", "core", "io", "codec"}),
    "audit": frozenset({"audit", "core", "io", "codec", "db"}),
    "plugins": frozenset({"plugins", "core", "io", "codec", "packet", "db", "netns", "audit"}),
    "daemon": None,
    "ctl": None,
    "top": None,
}
RULES = {
    "codec": "codec/ and packet/ import only the stdlib, each other, core/errors and core/keys",
    "packet": "codec/ and packet/ import only the stdlib, each other, core/errors and core/keys",
    "core": "core/ imports nothing of pyulogd outside core/",
    "io": "io/ imports core/ and codec/",
    "db": "db/ imports core/, io/ and codec/",
    "netns": "netns/ imports core/, io/ and codec/",
    "audit": "audit/ imports core/, io/, codec/ and db/",
    "plugins": "plugins import core/, io/, codec/, packet/, db/, netns/, audit/ and shared plugin helpers",
}
LEAF_RULE = "core/errors and core/keys import nothing of pyulogd"
PLUGIN_RULE = "a plugin's module is imported only by plugin discovery; share helpers as modules of their own"

# Violations that stay for now, with the reason. Keep the reason next to the entry.
KNOWN: dict[tuple[str, str], str] = {
    # The fused flow line (plugins/fused.py, a shared helper) is declared by PRINTFLOW and
    # reads the public accessors of the plugins it fuses; it names their classes for mypy only
    # (under TYPE_CHECKING), never at run time.
    ("pyulogd.plugins.fused", "pyulogd.plugins.filters.ip2str"): "type names of the fused plugins",
    ("pyulogd.plugins.fused", "pyulogd.plugins.filters.printflow"): "type names of the fused plugins",
    ("pyulogd.plugins.fused", "pyulogd.plugins.outputs.logemu"): "type names of the fused plugins",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    """The layer of a pyulogd module, or None for a top-level package missing from LAYERS."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "top"
    return parts[1] if parts[1] in LAYERS else None


def imports(module: str, source: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The pyulogd modules ``source`` (the text of ``module``) imports, at any level.

    ``from a.b import c`` imports ``a.b.c`` when that is a module (in ``known``), else ``a.b``.
    """
    known = set(known)
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.add(sub if sub in known else target)
        elif (
            isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return {m for m in found if m == "pyulogd" or m.startswith("pyulogd.")}


def plugin_modules() -> frozenset[str]:
    """The modules plugin discovery imports: those that declare a plugin class."""
    return frozenset(registry.get(name).__module__ for name in registry.names())


def violations(sources: Mapping[str, tuple[str, bool]], plugins: frozenset[str]) -> list[str]:
    """``module -> imported (rule)`` for each import that breaks a rule; ``sources`` maps each
    module name to (its text, whether it is a package's __init__)."""
    out = []
    for module, (text, is_package) in sorted(sources.items()):
        layer = layer_of(module)
        if layer is None:
            out.append(f"{module}: in no layer (add its package to LAYERS and to docs/design.md)")
            continue
        for target in sorted(imports(module, text, is_package, sources)):
            if target == module:
                continue
            tlayer = layer_of(target)
            allowed = MAY_IMPORT[layer]
            if target in plugins:
                out.append(f"{module} -> {target} ({PLUGIN_RULE})")
            elif module in CORE_LEAVES:
                out.append(f"{module} -> {target} ({LEAF_RULE})")
            elif allowed is None or tlayer in allowed:
                continue
            elif layer in ("codec", "packet") and target in CORE_LEAVES:
                continue
            else:
                out.append(f"{module} -> {target} ({RULES[layer]})")
    return out


def package_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(p): (p.read_text(), p.name == "__init__.py") for p in sorted(PACKAGE.rglob("*.py"))}


def known_key(line: str) -> tuple[str, str]:
    module, _, rest = line.partition(" -> ")
    return module, rest.partition(" (")[0]


def test_no_new_layer_violations() -> None:
    found = violations(package_sources(), plugin_modules())
    new = [v for v in found if known_key(v) not in KNOWN]
    assert not new, "import layers broken (docs/design.md, 'Import layers'):\n" + "\n".join(new)


def test_known_violations_still_exist() -> None:
    """An entry of KNOWN that no longer happens is removed, so the list only shrinks."""
    found = {known_key(v) for v in violations(package_sources(), plugin_modules())}
    gone = [f"{m} -> {t}" for m, t in KNOWN if (m, t) not in found]
    assert not gone, "fixed, remove from KNOWN in tests/unit/test_layers.py:\n" + "\n".join(gone)


def test_every_module_is_in_a_layer() -> None:
    sources = package_sources()
    assert "pyulogd.core.context" in sources and "pyulogd.plugins.inputs.nflog" in sources
    assert all(layer_of(m) is not None for m in sources), [m for m in sources if layer_of(m) is None]


# -- the checker itself: each rule must be able to fail


def _check(modules: dict[str, str], plugins: Iterable[str] = ()) -> list[str]:
    base = {m: ("", m.count(".") < 2) for m in ("pyulogd.codec", "pyulogd.core", "pyulogd.io", "pyulogd.plugins")}
    base.update({m: (text, False) for m, text in modules.items()})
    return violations(base, frozenset(plugins))


@pytest.mark.parametrize(
    ("module", "text", "expected"),
    [
        # a codec importing io, at the top
        ("pyulogd.codec.x", "from pyulogd.io import loop\n", "pyulogd.codec.x -> pyulogd.io.loop"),
        # core importing io inside a function
        ("pyulogd.core.c", "def f():\n    import pyulogd.io.loop\n", "pyulogd.core.c -> pyulogd.io.loop"),
        # core importing netns for a type only
        (
            "pyulogd.core.c",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pyulogd.netns.registry import N\n",
            "pyulogd.core.c -> pyulogd.netns.registry",
        ),
        # a relative import from io into plugins
        ("pyulogd.io.s", "from ..plugins.outputs import json\n", "pyulogd.io.s -> pyulogd.plugins.outputs.json"),
        # io importing db by name
        ("pyulogd.io.s", "import importlib\nimportlib.import_module('pyulogd.db.x')\n", "pyulogd.io.s -> pyulogd.db.x"),
        # a codec using core beyond errors and keys
        ("pyulogd.codec.x", "from pyulogd.core.plugin import Key\n", "pyulogd.codec.x -> pyulogd.core.plugin"),
        # a core leaf importing another core module
        ("pyulogd.core.keys", "from pyulogd.core import errors\n", "pyulogd.core.keys -> pyulogd.core.errors"),
        # a plugin importing another plugin's module, and a daemon module doing it too
        (
            "pyulogd.plugins.outputs.b",
            "from pyulogd.plugins.outputs.a import Helper\n",
            "pyulogd.plugins.outputs.b -> pyulogd.plugins.outputs.a",
        ),
        (
            "pyulogd.daemon.d",
            "from pyulogd.plugins.outputs import a\n",
            "pyulogd.daemon.d -> pyulogd.plugins.outputs.a",
        ),
    ],
)
def test_checker_reports(module: str, text: str, expected: str) -> None:
    modules = {m: "" for m in ("pyulogd.io.loop", "pyulogd.plugins.outputs.json", "pyulogd.db.x",
                               "pyulogd.core.errors", "pyulogd.plugins.outputs.a")}  # fmt: skip
    modules[module] = text
    found = _check(modules, plugins={"pyulogd.plugins.outputs.a", "pyulogd.plugins.outputs.b"})
    assert [v.split(" (")[0] for v in found] == [expected], found


def test_checker_accepts_what_the_rules_allow() -> None:
    modules = {
        "pyulogd.codec.x": "from pyulogd.codec import netlink\nfrom pyulogd.core.errors import DecodeError\n"
        "from pyulogd.core.keys import Key\n",
        "pyulogd.codec.netlink": "",
        "pyulogd.core.errors": "",
        "pyulogd.core.keys": "",
        "pyulogd.io.s": "from pyulogd.core.context import Context\nfrom pyulogd.codec import netlink\n",
        "pyulogd.core.context": "",
        "pyulogd.plugins.outputs.a": "from pyulogd.plugins.outputs.linefile import LineFile\n",
        "pyulogd.plugins.outputs.linefile": "from pyulogd.io import s\n",
        "pyulogd.daemon.d": "from pyulogd.plugins.outputs import linefile\nimport pyulogd.io.s\n",
    }
    assert _check(modules, plugins={"pyulogd.plugins.outputs.a"}) == []


def test_a_module_outside_the_layers_is_reported() -> None:
    assert _check({"pyulogd.nolayer.q": ""}) == [
        "pyulogd.nolayer.q: in no layer (add its package to LAYERS and to docs/design.md)"
    ]
