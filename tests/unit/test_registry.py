"""The registry finds plugins where they live (no list to edit), imports only those a config
uses, maps ulogd2's .so names from data, and says why a plugin is refused."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import pyulogd.plugins.filters as filters_pkg
from pyulogd.core import registry
from pyulogd.core.errors import ConfigError

PLUGIN_FILE = """
from typing import Any

from pyulogd.core.plugin import OK, Filter, Key, KeyType


class Helper(Filter):
    '''A base class of the module: declares no name, so it is no plugin.'''


class {cls}(Helper):
    name = "{name}"
    input_keys = (Key("oob.prefix", KeyType.STRING),)

    def interp(self, rec: list[Any]) -> int:
        return OK
"""


@pytest.fixture()
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory that is part of pyulogd.plugins.filters for the test, as if files were
    added to src/pyulogd/plugins/filters/."""
    monkeypatch.setattr(filters_pkg, "__path__", [*filters_pkg.__path__, str(tmp_path)])
    yield tmp_path
    for mod in [m for m in sys.modules if m.startswith("pyulogd.plugins.filters.zz")]:
        del sys.modules[mod]
    monkeypatch.undo()
    registry.names()  # forget them


def test_a_new_plugin_is_one_file(plugin_dir: Path) -> None:
    (plugin_dir / "zzdemo.py").write_text(PLUGIN_FILE.format(cls="ZzDemo", name="ZZDEMO"))
    cls = registry.get("ZZDEMO")
    assert cls.__name__ == "ZzDemo" and cls.__module__ == "pyulogd.plugins.filters.zzdemo"
    assert "ZZDEMO" in registry.names() and "Helper" not in registry.names()
    # A module named otherwise is found too (by the full scan).
    (plugin_dir / "zzmisc.py").write_text(PLUGIN_FILE.format(cls="Other", name="ZZOTHER"))
    assert registry.get("ZZOTHER").__module__ == "pyulogd.plugins.filters.zzmisc"


def test_two_plugins_of_one_name_are_a_bug(plugin_dir: Path) -> None:
    (plugin_dir / "zzdup.py").write_text(PLUGIN_FILE.format(cls="Dup", name="IP2STR"))
    with pytest.raises(RuntimeError, match="two plugins are called IP2STR"):
        registry.names()


def test_every_plugin_comes_from_its_package() -> None:
    names = registry.names()
    assert {"NFLOG", "NFCT", "IP2STR", "PRINTFLOW", "LOGEMU", "JSON", "PGSQL"} <= set(names)
    for name in names:
        cls = registry.get(name)
        assert cls.name == name and cls.__module__.rsplit(".", 1)[0] in registry.PACKAGES


def test_refusals() -> None:
    with pytest.raises(ConfigError, match="ULOG is not supported"):
        registry.get("ULOG")
    with pytest.raises(ConfigError, match=r"can't find requested plugin logemu \(known: .*LOGEMU"):
        registry.get("logemu")  # names are case-sensitive, as in ulogd
    for odd in ("", "../x", "a.b", "__init__", "PRINTER"):  # PRINTER: a module, no plugin
        with pytest.raises(ConfigError, match="can't find requested plugin"):
            registry.get(odd)
    with pytest.raises(ConfigError, match="unknown plugin file 'ulogd_output_FOO.so'"):
        registry.plugin_for_so("/usr/lib/ulogd/ulogd_output_FOO.so")


def test_only_the_plugins_used_are_imported() -> None:
    """Start-up does not pay for plugins a config does not use: plugin= lines for every
    ulogd2 plugin (as Debian's ulogd.conf has) and a LOGEMU stack import no database client."""
    code = textwrap.dedent(
        """
        import sys
        from pyulogd.core import registry
        from pyulogd.core.config import parse_text
        from pyulogd.core.context import Context
        from pyulogd.daemon.service import Service
        from pyulogd.io.loop import Loop

        plugins = "".join(f'plugin="/usr/lib/ulogd/{so}"\\n' for so in registry.SO_NAMES)
        text = ("[global]\\n" + plugins + "stack=u1:UNIXSOCK,b1:BASE,ip1:IP2STR,p1:PRINTPKT,e1:LOGEMU\\n"
                '[u1]\\nsocket_path="/nonexistent/sock"\\n[e1]\\nfile="/dev/null"\\n')
        Service("t.conf", Context(loop=Loop())).load_config(parse_text(text))
        loaded = sorted(m for m in sys.modules if m.startswith("pyulogd.plugins.") or m.split(".")[0]
                        in ("psycopg", "pymysql", "orjson"))
        print(" ".join(loaded))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not {m for m in out if not m.startswith("pyulogd.")}, out
    plugins = {m.rsplit(".", 1)[1] for m in out if m.count(".") == 3}
    assert plugins == {"unixsock", "base", "ip2str", "printer", "printpkt", "logemu"}, out
    # printer: PRINTPKT's base (LOGEMU's file sink is io/filesink.py, not a plugin module)
