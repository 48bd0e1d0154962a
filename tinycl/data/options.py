"""Described options: what a config value means and which values are allowed, written once and read by the
checks (`Key.check`), `tinycl config` and docs/config.md.

A Key holds the meaning and the allowed values: a numeric range (`lo`/`hi`, open or closed ends), a set of
choices (a tuple, or a function returning the names in a registry), or allowed values in words (`text`) with a
`test` function. Every check ends in one ConfigError line naming the full key path and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tinycl.errors import ConfigError

__all__ = ["Key", "fmt_number"]


def fmt_number(v: float) -> str:
    """1e9 -> "1,000,000,000", 0.5 -> "0.5", 2**32 - 1 -> "4,294,967,295"."""
    return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"


@dataclass(frozen=True)
class Key:
    meaning: str
    lo: float | None = None  # lowest allowed number (inclusive unless open_lo)
    hi: float | None = None  # highest allowed number (inclusive unless open_hi)
    open_lo: bool = False
    open_hi: bool = False
    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None
    text: str = ""  # allowed values in words, when they are not a range or choices
    test: Callable[[Any], str | None] | None = None  # returns what is wrong with a value, or None
    items: bool = False  # the bounds apply to each item of a list

    def allowed(self) -> str:
        """The allowed values as the docs and errors write them: ">= 1", "(0, 1)", "0..9", "a, b, c"."""
        if self.text:
            return self.text
        if self.choices is not None:
            return ", ".join(self.names())
        lo, hi = self.lo, self.hi
        if lo is None and hi is None:
            return "any"
        if hi is None:
            return f"{'>' if self.open_lo else '>='} {fmt_number(lo)}"
        if lo is None:
            return f"{'<' if self.open_hi else '<='} {fmt_number(hi)}"
        if not self.open_lo and not self.open_hi and float(lo).is_integer() and float(hi).is_integer():
            return f"{fmt_number(lo)}..{fmt_number(hi)}"
        return f"{'(' if self.open_lo else '['}{fmt_number(lo)}, {fmt_number(hi)}{')' if self.open_hi else ']'}"

    def names(self) -> tuple[str, ...]:
        return tuple(self.choices() if callable(self.choices) else self.choices or ())

    def check(self, value, path: str) -> None:
        """ConfigError "<path> = <value>: <what is wrong>; allowed: <allowed>" unless `value` is allowed
        (None, an unset optional value, is always allowed here; the type is checked by the config reader)."""
        if value is None:
            return
        for v in (value if self.items and isinstance(value, list | tuple) else [value]):
            problem = self._problem(v)
            if problem:
                raise ConfigError(f"{path} = {_show(value)}: {problem}; allowed: {self.allowed()}")

    def _problem(self, v) -> str | None:
        if isinstance(v, float) and not math.isfinite(v):
            return "not a finite number"
        if self.choices is not None and isinstance(v, str) and v not in self.names():
            return "not a known name"
        if isinstance(v, int | float) and not isinstance(v, bool):
            if self.lo is not None and (v < self.lo or (self.open_lo and v == self.lo)):
                return "too small"
            if self.hi is not None and (v > self.hi or (self.open_hi and v == self.hi)):
                return "too large"
        return self.test(v) if self.test is not None else None


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
