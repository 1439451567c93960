"""Per-stack code from one readable template: keep the blocks whose keys the stack has.

Renderers on the packet path (the ECS document, the audit row) are generated once per stack
from a template written as ordinary Python, so that a record pays only for the keys its
stack can produce, without a test per absent key and without a loop over key names. Lines
of the template:

* ``#if KEY [KEY ...]``: the block is kept when every key is bound in this stack (``name.*``
  stands for every key whose name starts with ``name.``, in ``#ifany`` and ``#ifnot``);
  ``#ifany KEY ...`` when one of them is; ``#ifnot KEY ...`` when none is; ``#ifflag NAME``
  / ``#ifnotflag NAME`` on a flag the caller passes (an option); ``#else`` and ``#endif``
  close them; blocks nest.
* ``R[key.name]`` anywhere else stands for ``rec[<slot of key.name>]`` (slot 0, which always
  reads None, when the key is unbound).

The result is compiled with ``exec`` from our own text only: slots are integers, and no
string from a record or the config is pasted into it (constants go in through ``namespace``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_REF = re.compile(r"R\[([A-Za-z0-9_.]+)\]")


def _bound(slots: Mapping[str, int], name: str) -> bool:
    if name.endswith(".*"):
        head = name[:-1]
        return any(slot and key.startswith(head) for key, slot in slots.items())
    return bool(slots.get(name, 0))


def expand(template: str, slots: Mapping[str, int], flags: frozenset[str] = frozenset()) -> str:
    """The template's kept lines, with key references replaced by ``rec[slot]``."""
    out: list[str] = []
    keep = [True]  # one entry per open block: whether its current branch is kept
    for line in template.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word.startswith("#if"):
            names = rest.split()
            if word == "#if":
                ok = all(slots.get(n, 0) for n in names)
            elif word == "#ifany":
                ok = any(_bound(slots, n) for n in names)
            elif word == "#ifnot":
                ok = not any(_bound(slots, n) for n in names)
            elif word == "#ifflag":
                ok = all(n in flags for n in names)
            elif word == "#ifnotflag":
                ok = not any(n in flags for n in names)
            else:
                raise ValueError(f"template: unknown directive {word!r}")
            keep.append(keep[-1] and ok)
            continue
        if word == "#else":
            if len(keep) < 2:
                raise ValueError("template: #else without #if")
            keep[-1] = keep[-2] and not keep[-1]
            continue
        if word == "#endif":
            if len(keep) < 2:
                raise ValueError("template: #endif without #if")
            keep.pop()
            continue
        if keep[-1]:
            out.append(_REF.sub(lambda m: f"rec[{slots.get(m.group(1), 0)}]", line))
    if len(keep) != 1:
        raise ValueError("template: #if without #endif")
    return "\n".join(out) + "\n"


def compile_function(
    template: str, name: str, slots: Mapping[str, int], namespace: dict[str, Any],
    flags: frozenset[str] = frozenset(), label: str = "<template>",
) -> Callable[..., Any]:
    """Expand, compile and return the function ``name`` the template defines."""
    src = expand(template, slots, flags)
    ns = dict(namespace)
    exec(compile(src, label, "exec"), ns)  # noqa: S102 - our own text, see the module docstring
    fn: Callable[..., Any] = ns[name]
    fn.__doc__ = src  # what was generated, for whoever debugs a stack
    return fn
