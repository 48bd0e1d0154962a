"""`tinycl config [--markdown] [KEY_PREFIX]`: every run-config key with its type, default, allowed values and
meaning, read from the config dataclasses and their descriptions (tinycl.config.KEYS), then every loader's
options (data.options.<option>) and the audio front end's (data.options.features.<key>). docs/config.md holds the
same tables (`--markdown`); a test checks they agree."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import typing

__all__ = ["add_parser", "run", "rows", "markdown"]


def add_parser(sub) -> None:
    p = sub.add_parser("config", help="every config key: type, default, allowed values, meaning",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prefix", nargs="?", default="", help="only keys starting with this, e.g. train or data.options")
    p.add_argument("--markdown", action="store_true", help="print docs/config.md's tables")
    p.set_defaults(handler=run)


def _type(hint) -> str:
    text = str(hint).replace("typing.", "").replace("NoneType", "None")
    return getattr(hint, "__name__", text) if not typing.get_args(hint) else text


def _default(value) -> str:
    if value is None or value is dataclasses.MISSING or value is inspect.Parameter.empty:
        return "unset"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_default(v) for v in value) + "]"
    return "{}" if value == {} else str(value)


def rows() -> list[tuple[str, str, str, str, str]]:
    """(key path, type, default, allowed, meaning) of every config key, loader option and front-end setting."""
    from tinycl.config import KEYS, RunConfig
    from tinycl.data.audio import FEATURE_KEYS, LogMelConfig
    from tinycl.data.registry import LOADERS, loader_option_keys

    out = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{f.name}.")
                continue
            key = KEYS.get(f"{prefix}{f.name}")
            out.append((f"{prefix}{f.name}", _type(hints[f.name]), _default(default),
                        key.allowed() if key else "?", key.meaning if key else "(not described)"))
    walk(RunConfig, "")
    for name in sorted(LOADERS):
        for option, (key, default) in loader_option_keys(name).items():
            hint = typing.get_type_hints(LOADERS[name]).get(option, object)
            out.append((f"data.options.{option} ({name})", _type(hint), _default(default), key.allowed(),
                        key.meaning))
    hints = typing.get_type_hints(LogMelConfig)
    for f in dataclasses.fields(LogMelConfig):
        key = FEATURE_KEYS[f.name]
        out.append((f"data.options.features.{f.name}", _type(hints[f.name]), _default(f.default), key.allowed(),
                    key.meaning))
    return out


def markdown() -> str:
    """The key table as docs/config.md shows it."""
    lines = ["| key | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{k}` | {t} | {d} | {a} | {m} |" for k, t, d, a, m in rows()]
    return "\n".join(lines)


def run(args) -> int:
    if args.markdown:
        print(markdown())
        return 0
    for key, typ, default, allowed, meaning in rows():
        if key.startswith(args.prefix):
            print(f"{key}  ({typ}, default {default}; allowed: {allowed})\n    {meaning}")
    return 0
