"""`tinycl config` lists every key from the one source (the dataclasses + tinycl.config.KEYS + the loaders'
option descriptions + the audio front end's), and docs/config.md holds the same table."""

import dataclasses
from pathlib import Path

from tinycl.cli import main
from tinycl.commands.config import markdown, rows
from tinycl.config import KEYS, RunConfig
from tinycl.data.audio import LogMelConfig
from tinycl.data.registry import LOADERS, loader_options

REPO = Path(__file__).resolve().parents[1]


def _fields(cls, prefix=""):
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            yield from _fields(type(default), f"{prefix}{f.name}.")
        else:
            yield prefix + f.name


def test_every_field_and_option_is_described():
    listed = {r[0]: r for r in rows()}
    fields = list(_fields(RunConfig))
    assert set(fields) == set(KEYS), set(fields) ^ set(KEYS)  # no field without a description, none stale
    for key in fields:
        assert listed[key][3] != "?" and listed[key][4] != "(not described)", key
    for name in LOADERS:
        for option in loader_options(name):
            row = listed[f"data.options.{option} ({name})"]
            assert "not documented" not in row[4], (name, option)
    for f in dataclasses.fields(LogMelConfig):
        assert f"data.options.features.{f.name}" in listed


def test_docs_config_md_holds_the_generated_table():
    assert markdown() in (REPO / "docs" / "config.md").read_text(), "regenerate: tinycl config --markdown"


def test_cli_lists_keys(capsys):
    assert main(["config", "train"]) == 0
    out = capsys.readouterr().out
    assert "train.lr  (float, default 0.001; allowed: (0, 10,000,000,000])" in out and "data." not in out
