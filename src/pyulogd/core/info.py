"""``--info``: a plugin's description, generated from its declarations in ulogd's format."""

from __future__ import annotations

from pyulogd.core.plugin import TYPE_WORDS, Plugin, Sink, Source


def describe(cls: type[Plugin]) -> str:
    out = [f"Name: {cls.name}"]
    if cls.options:
        out.append("Config options:")
        for o in cls.options:
            line = f"\tVar: {o.name} ({o.info_word()}, Default: {o.default_text}"
            if o.required:
                line += ", Mandatory"
            out.append(line + ")")
    out.append("Input keys:")
    if issubclass(cls, Source):
        out.append("\tInput plugin, No keys")
    elif cls.wildcard_inputs or not cls.input_keys:
        out.append("\tNo statically defined keys")
    else:
        for k in cls.input_keys:
            word = TYPE_WORDS.get(k.type, "Unknown type")
            out.append(f"\tKey: {k.name} ({word}{', optional' if k.optional else ''})")
    out.append("Output keys:")
    if not cls.output_keys:
        out.append("\tOutput plugin, No keys" if issubclass(cls, Sink) else "\tNo statically defined keys")
    else:
        for k in cls.output_keys:
            out.append(f"\tKey: {k.name} ({TYPE_WORDS.get(k.type, 'Unknown type')})")
    return "\n".join(out) + "\n"


def describe_markdown(cls: type[Plugin]) -> str:
    """The plugin reference entry for docs/plugins.md."""
    origin = f"Replaces `{cls.so_name}`." if cls.so_name else "pyulogd's own (ulogd2 has no such plugin)."
    out = [f"## {cls.name}", "", cls.description or "", "", origin, ""]
    if cls.options:
        out += ["| option | type | default | meaning |", "|---|---|---|---|"]
        for o in cls.options:
            req = " (required)" if o.required else ""
            out.append(f"| `{o.name}` | {o.type.describe()} | `{o.default_text}` | {o.help}{req} |")
        out.append("")
    if cls.input_keys:
        out += ["Input keys: " + ", ".join(f"`{k.name}`" + (" (optional)" if k.optional else "")
                                           for k in cls.input_keys), ""]
    elif cls.wildcard_inputs:
        out += ["Input keys: every key produced upstream, in stack order.", ""]
    if cls.output_keys:
        out += ["| output key | type | meaning |", "|---|---|---|"]
        for k in cls.output_keys:
            out.append(f"| `{k.name}` | {TYPE_WORDS.get(k.type, 'other')} | {k.help} |")
        out.append("")
    return "\n".join(out)
