"""`tinycl data list`, the catalog behind it, and the loader registry."""

import numpy as np
import pytest
from conftest import REQUIRE_REFERENCES, require_module, require_shared_data, require_shared_model
from data_fixtures import write_mnist, write_uci_har

from tinycl.cli import main
from tinycl.data.catalog import catalog
from tinycl.data.registry import GENERIC, LOADERS, load_dataset, resolve_data_root
from tinycl.errors import ConfigError


def test_catalog_on_fixture_root(tmp_path):
    write_mnist(tmp_path, np.random.default_rng(0), n_train=30, n_test=10)
    write_uci_har(tmp_path / "har", np.random.default_rng(0), n=(6, 3))
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar10-jpg.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    entries = {e.name: e for e in catalog(tmp_path)}
    assert set(entries) == set(LOADERS) - set(GENERIC)  # the generic loaders read a user's path: `data inspect`
    assert (entries["mnist"].status, entries["mnist"].n_train, entries["mnist"].n_test) == ("found", 30, 10)
    assert (entries["har"].status, entries["har"].n_train, entries["har"].n_test) == ("found", 6, 3)
    assert entries["cifar10"].status == "error" and "truncated or corrupt archive" in entries["cifar10"].note
    speech = entries["speech_commands"]
    assert speech.status == "missing" and "speech_commands/<word>/" in speech.note
    assert entries["core50"].status == "missing" and entries["digits"].status == "found"


def test_cli_data_list_without_shared(tmp_path, capsys):
    assert main(["data", "list", "--data-root", str(tmp_path / "nowhere")]) == 0
    out = capsys.readouterr().out
    assert "not a directory" in out
    for name in ("mnist", "cifar10", "speech_commands", "har", "core50"):
        line = next(x for x in out.splitlines() if x.startswith(name + " "))
        assert "missing" in line
    assert "-> put mnist/{train-images-idx3-ubyte" in out


def test_cli_data_list_env_root(tmp_path, monkeypatch, capsys):
    write_mnist(tmp_path, np.random.default_rng(0), n_train=30, n_test=10)
    monkeypatch.setenv("TINYCL_DATA", str(tmp_path))
    assert resolve_data_root() == tmp_path and resolve_data_root("x") == resolve_data_root("x")
    assert main(["data", "list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("mnist "))
    assert line.split()[1:4] == ["found", "30", "10"]


def test_cli_data_list_with_shared(capsys):
    root = require_shared_data("mnist", "cifar10", "speech_commands", "har", "core50")
    assert main(["data", "list", "--data-root", str(root)]) == 0
    rows = {x.split()[0]: x.split() for x in capsys.readouterr().out.splitlines()[2:] if not x.startswith(" ")}
    assert rows["mnist"][1:4] == ["found", "60,000", "10,000"]
    assert rows["cifar10"][1:4] == ["found", "50,000", "10,000"]
    assert rows["har"][1] == "found" and rows["speech_commands"][1] == "found"
    assert sum(int(n.replace(",", "")) for n in rows["speech_commands"][2:4]) == 4890
    assert rows["core50"][1:4] == ["partial", "119,894", "44,972"]  # lists only: the images are not shipped


def test_registry_errors():
    with pytest.raises(ConfigError, match="data.name 'svhn' is not known; allowed: arrays, cifar10, core50, digits"):
        load_dataset("svhn")
    with pytest.raises(ConfigError, match=r"data.options.per_class is not an option of the mnist loader; allowed"):
        load_dataset("mnist", "/nowhere", per_class=3)


# -- where the shared references are, and the CI switch that makes a missing one a failure ---------------------
@pytest.mark.parametrize("require", [
    lambda: require_shared_data("no_such_data_set/file.bin"),
    lambda: require_shared_model("no_such_model.tflite"),
    lambda: require_module("tinycl_no_such_module"),
])
def test_missing_reference_skips_or_fails_under_the_switch(require, monkeypatch):
    for value in ("", "0"):
        monkeypatch.setenv(REQUIRE_REFERENCES, value)
        with pytest.raises(pytest.skip.Exception, match="no_such"):
            require()
    monkeypatch.setenv(REQUIRE_REFERENCES, "1")
    with pytest.raises(pytest.fail.Exception, match=f"no_such.*{REQUIRE_REFERENCES}=1"):
        require()


def test_ci_sets_the_switch():
    from conftest import REPO

    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci.index(f"export {REQUIRE_REFERENCES}=1") < ci.index("make test")
