"""A grid file: a base run config plus axes, expanded into trials (one run config each).

    base = "../configs/digits_qlr.toml"   # a run config, relative to the grid file (optional: the defaults)
    [set]                                 # overrides of the base for every trial (dotted keys)
    "train.epochs" = 2
    [cross]                               # every combination of these axes
    "memory.bits" = [32, 8, 4]
    seed = [0, 1, 2]
    [zip]                                 # these axes move together (equal lengths), crossed with [cross]
    strategy = ["latent_replay", "raw_replay"]
    "memory.capacity" = [100, 100]
    [[rows]]                              # extra trials: each row's values, crossed with the [cross] axes it
    strategy = "naive"                    # names in `with` (e.g. the seeds), not with the others
    with = ["seed"]

A trial's name is its axis values ("memory.bits=8,seed=0"); its directory adds a short hash of them. A trial
whose values do not make a valid config (e.g. bits = 9) is kept, with the one-line error as its result, so a
sweep reports it and runs the others.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from tinycl.config import RunConfig, config_from_dict, set_value
from tinycl.errors import ConfigError, TinyclError

__all__ = ["Trial", "Grid", "load_grid"]


@dataclass(frozen=True)
class Trial:
    """One point of the grid: its axis values, and its run config (None with `error` when they are invalid)."""

    values: dict
    config: RunConfig | None
    error: str | None = None

    @property
    def name(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.values.items()) or "base"

    @property
    def slug(self) -> str:
        """A directory name: the name made file-safe, and a hash of the values (unique per trial)."""
        digest = hashlib.sha256(json.dumps(self.values, sort_keys=True).encode()).hexdigest()[:8]
        return f"{re.sub(r'[^A-Za-z0-9_.=-]+', '_', self.name)[:80]}-{digest}"


@dataclass(frozen=True)
class Grid:
    """The expanded grid: its base config as the file gives it (the base file with [set] applied; defaults are
    not filled in, so a newer tinycl with more keys still recognises the sweep), the axes (names in order) and
    the trials."""

    base: dict
    axes: tuple[str, ...]
    trials: tuple[Trial, ...] = field(default_factory=tuple)


def _check_axes(table, where: str) -> dict[str, list]:
    if not isinstance(table, dict):
        raise ConfigError(f"grid [{where}] must be a table of key = [values], got {table!r}")
    for key, values in table.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid [{where}] {key!r} must be a non-empty list of values, got {values!r}")
    return table


def _points(cross: dict, zipped: dict, rows: list) -> list[dict]:
    """Axis values of every trial, in order: the cross x zip product, then the extra rows."""
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        raise ConfigError(f"grid [zip] axes must have equal lengths, got {sorted(lengths)}")
    zips = [dict(zip(zipped, vals, strict=True)) for vals in zip(*zipped.values(), strict=True)] or [{}]
    crosses = [dict(zip(cross, vals, strict=True)) for vals in itertools.product(*cross.values())]
    points = [{**c, **z} for c in crosses for z in zips]
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ConfigError(f"grid [[rows]] entry {i} must be a table, got {row!r}")
        row = dict(row)
        with_axes = row.pop("with", [])
        unknown = [a for a in with_axes if a not in cross]
        if unknown:
            raise ConfigError(f"grid [[rows]] entry {i}: `with` names {unknown}, not [cross] axes "
                              f"({', '.join(cross) or 'none'})")
        for vals in itertools.product(*(cross[a] for a in with_axes)):
            points.append({**row, **dict(zip(with_axes, vals, strict=True))})
    return points


def _trial(base: dict, values: dict) -> Trial:
    data = json.loads(json.dumps(base))  # a deep copy of plain TOML data
    try:
        for key, value in values.items():
            set_value(data, key, value, where=f"grid axis {key!r}")
        return Trial(values, config_from_dict(RunConfig, data))
    except TinyclError as err:
        return Trial(values, None, str(err))


def load_grid(path: str | Path) -> Grid:
    """Read and expand a grid file (see the module docstring); ConfigError for a malformed file."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"grid file {path} cannot be read: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"grid file {path} is not valid TOML: {err}") from None
    unknown = sorted(set(spec) - {"base", "set", "cross", "zip", "rows"})
    if unknown:
        raise ConfigError(f"grid file {path}: unknown key(s) {unknown}; allowed: base, set, cross, zip, rows")
    base: dict = {}
    if "base" in spec:
        base_path = (path.parent / spec["base"]).resolve()
        try:
            base = tomllib.loads(base_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"grid file {path}: base config {base_path} cannot be read: {err}") from None
    for key, value in spec.get("set", {}).items():
        set_value(base, key, value, where=f"grid [set] {key!r}")
    config_from_dict(RunConfig, json.loads(json.dumps(base)))  # the base itself must be valid
    cross, zipped = _check_axes(spec.get("cross", {}), "cross"), _check_axes(spec.get("zip", {}), "zip")
    points = _points(cross, zipped, spec.get("rows", []))
    axes = tuple(dict.fromkeys(k for p in points for k in p))
    trials = tuple(_trial(base, p) for p in points)
    if len({t.slug for t in trials}) != len(trials):
        raise ConfigError(f"grid file {path}: two trials have the same values; each must differ")
    return Grid(base, axes, trials)
