"""Data set names -> loaders. A loader takes the data root (a directory, or for the generic loaders the folder,
archive or array file itself) and keyword-only options and returns a Dataset (see each loader's LAYOUT;
`tinycl data list`). `tinycl config` lists every loader's options with their meaning and allowed values.

Adding a loader written in Python (docs/data.md, *Your own loader in Python*)::

    @register_loader("my_set", options={"per_class": Key("samples kept per class", 1, 10**6)})
    def load_my_set(root: Path, *, per_class: int = 100) -> Dataset: ...

or, from an installed package, an entry point in the group "tinycl.loaders" (`my_set = "my_pkg.data:load"`),
found the first time the name is asked for. Where the data is: an explicit root (`--data-root`, `data.root` in a
run config), else $TINYCL_DATA, else `../shared/data` relative to the working directory.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from tinycl.data.arrays import ARRAY_KEYS, load_arrays
from tinycl.data.audio import LogMelConfig
from tinycl.data.cifar10 import load_cifar10
from tinycl.data.core50 import load_core50
from tinycl.data.dataset import Dataset
from tinycl.data.digits import load_digits
from tinycl.data.folders import IMAGE_KEYS, WAV_KEYS, load_image_folder, load_wav_folder
from tinycl.data.har import load_har
from tinycl.data.mnist import load_mnist
from tinycl.data.options import Key
from tinycl.data.speech_commands import load_speech_commands
from tinycl.errors import ConfigError

__all__ = ["LOADERS", "LOADER_KEYS", "register_loader", "get_loader", "load_dataset", "default_data_root",
           "resolve_data_root", "loader_options", "loader_option_keys", "check_options", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "tinycl.loaders"
GENERIC = ("image_folder", "wav_folder", "arrays")  # data.root is the data set itself, not a root of data sets
LOADERS: dict[str, Callable[..., Dataset]] = {}
LOADER_KEYS: dict[str, dict[str, Key]] = {}  # loader -> option -> its meaning and allowed values


def register_loader(name: str, *, options: dict[str, Key] | None = None):
    """Decorator: LOADERS[name] = the function `(root: Path, *, option=default, ...) -> Dataset`; `options`
    describes each keyword-only option (meaning, allowed values), checked on `data.options` and listed by
    `tinycl config`. An option without a description is listed as undocumented and checked for its type only."""
    if not name.isidentifier():
        raise ValueError(f"loader name {name!r} must be an identifier")

    def add(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        LOADERS[name] = fn
        LOADER_KEYS[name] = dict(options or {})
        return fn
    return add


CACHE = Key("decoded-data cache: true (default directory, $TINYCL_CACHE or ~/.cache/tinycl), false (off) or a "
            "directory", text="true, false, a directory")
register_loader("digits")(load_digits)
register_loader("mnist", options={"cache": CACHE})(load_mnist)
register_loader("cifar10", options={
    "per_class": Key("keep the first n images of each class and split (quick runs); unset: all", 1, 10 ** 7),
    "cache": CACHE})(load_cifar10)
register_loader("speech_commands", options={
    "keywords": Key("the keyword folders that are classes (after _silence_ and _unknown_); other words are unknown",
                    text="distinct word folder names"),
    "split": Key("train/test split: official (testing_list.txt), speaker (salted hash of the speaker id), auto "
                 "(official when the list is there)", choices=("auto", "official", "speaker")),
    "test_percent": Key("speaker split: share of speakers (percent) in the test set", 0, 100, True, True),
    "features": Key("the audio front end (data.options.features.<key>, listed below)", text="a table"),
    "cache": CACHE})(load_speech_commands)
register_loader("har", options={"cache": CACHE})(load_har)
register_loader("image_folder", options=IMAGE_KEYS)(load_image_folder)
register_loader("wav_folder", options=WAV_KEYS)(load_wav_folder)
register_loader("arrays", options=ARRAY_KEYS)(load_arrays)
register_loader("core50", options={
    "lists": Key("the NICv2-391 lists (.tar.gz or folder); unset: core50/ under the root", text="a path"),
    "images": Key("the core50_128x128 images (folder or .zip); unset: core50/ under the root", text="a path"),
    "run": Key("with max_batches: read the images of this run's first batches only (unset: every run)", 0, 9),
    "max_batches": Key("read only the images of the first n batches of the run (quick runs)", 1, 391),
    "test_every": Key("keep every n-th test image (the papers: 20)", 1, 44972),
    "cache": CACHE})(load_core50)

DEFAULT_DATA_ROOT = Path("..") / "shared" / "data"


def default_data_root() -> Path:
    """$TINYCL_DATA if set, else ../shared/data relative to the working directory."""
    return Path(os.environ.get("TINYCL_DATA") or DEFAULT_DATA_ROOT)


def resolve_data_root(root: str | Path | None = None) -> Path:
    """The data root: `root` if given (--data-root), else default_data_root()."""
    return Path(root) if root else default_data_root()


def get_loader(name: str) -> Callable[..., Dataset]:
    """LOADERS[name], looking in the "tinycl.loaders" entry points of installed packages when it is not there;
    ConfigError naming the known loaders otherwise."""
    if name not in LOADERS:
        for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
            try:
                fn = ep.load()
            except Exception as err:  # a broken plug-in package is the user's input: one line
                raise ConfigError(f"data.name {name!r}: loading entry point {ep.value!r} failed ({err})") from None
            LOADERS.setdefault(name, fn)
            LOADER_KEYS.setdefault(name, dict(getattr(fn, "options", {})))
    if name not in LOADERS:
        raise ConfigError(f"data.name {name!r} is not known; allowed: {', '.join(sorted(LOADERS))}")
    return LOADERS[name]


def loader_options(name: str) -> tuple[str, ...]:
    """The keyword options a loader accepts (besides the root)."""
    params = inspect.signature(get_loader(name)).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def loader_option_keys(name: str) -> dict[str, tuple[Key, object]]:
    """option -> (its Key, its default) for every keyword-only option of loader `name`."""
    params = inspect.signature(get_loader(name)).parameters
    undocumented = Key("(not documented by the loader)", text="see the loader")
    return {o: (LOADER_KEYS.get(name, {}).get(o, undocumented), params[o].default) for o in loader_options(name)}


def check_options(name: str, options: dict, where: str = "data.options") -> None:
    """ConfigError naming `where`.<option> for an unknown option or a value its Key does not allow."""
    keys = loader_option_keys(name)
    if unknown := sorted(set(options) - set(keys)):
        raise ConfigError(f"{where}.{unknown[0]} is not an option of the {name} loader; allowed: "
                          f"{', '.join(keys) or 'none'}")
    for option, value in options.items():
        if option == "features":
            LogMelConfig.from_options(value, f"{where}.features")
        else:
            keys[option][0].check(value, f"{where}.{option}")


def load_dataset(name: str, root: str | Path | None = None, **options) -> Dataset:
    """LOADERS[name](root, **options), with errors naming the allowed data sets and options."""
    loader = get_loader(name)
    check_options(name, options)
    if name in GENERIC and not root:
        raise ConfigError(f"data.root must name the folder, archive or array file the {name} loader reads")
    return loader(resolve_data_root(root), **options)
