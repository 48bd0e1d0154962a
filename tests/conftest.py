"""Shared test helpers: where the real data and models are, and fixtures that need them.

The real data and models live outside the repository: $TINYCL_DATA / $TINYCL_MODELS if set, else
<repo>/../shared/{data,models}. A test whose reference (a shared file, a model, the LiteRT interpreter) is
missing skips, naming what is missing; with TINYCL_REQUIRE_REFERENCES=1 (set by .ci/run) it fails instead,
so a green CI run proves every reference comparison ran. Tests never write to the user's cache: TINYCL_CACHE
points at a temporary directory for the whole session.
"""

from __future__ import annotations

import importlib
import os
import subprocess
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
REQUIRE_REFERENCES = "TINYCL_REQUIRE_REFERENCES"


def references_required() -> bool:
    """True when $TINYCL_REQUIRE_REFERENCES is set to anything but "" or "0"."""
    return os.environ.get(REQUIRE_REFERENCES, "") not in ("", "0")


def missing_reference(what: str) -> NoReturn:
    """Skip the test because `what` (a sentence naming the missing reference) is missing; a failure instead
    under TINYCL_REQUIRE_REFERENCES=1, where a skipped reference test would hide an unchecked claim."""
    if references_required():
        pytest.fail(f"{what} ({REQUIRE_REFERENCES}=1: references must be present)", pytrace=False)
    pytest.skip(what)


def require_module(name: str) -> ModuleType:
    """The imported module, or missing_reference naming it (pytest.importorskip that obeys the switch)."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        missing_reference(f"module {name} is not installed ({err})")


def shared_data_dir() -> Path:
    """$TINYCL_DATA, else <repo>/../shared/data (may not exist)."""
    return Path(os.environ.get("TINYCL_DATA") or REPO.parent / "shared" / "data")


def shared_models_dir() -> Path:
    """$TINYCL_MODELS, else <repo>/../shared/models (may not exist)."""
    return Path(os.environ.get("TINYCL_MODELS") or REPO.parent / "shared" / "models")


def require_shared_data(*rel: str) -> Path:
    """The shared data root, or missing_reference naming the first missing path (rel: paths inside the root)."""
    root = shared_data_dir()
    for r in rel or ("",):
        if not (root / r).exists():
            missing_reference(f"real data not found at {root / r} (set TINYCL_DATA to the shared data root)")
    return root


def require_shared_model(name: str) -> Path:
    """Path of a model file in the shared models dir, or missing_reference naming where it was looked for."""
    path = shared_models_dir() / name
    if not path.exists():
        missing_reference(f"model not found at {path} (set TINYCL_MODELS to the shared models dir)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Decoded-data caches go to a session temp dir, shared by the tests of one session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYCL_CACHE", str(tmp_path_factory.mktemp("tinycl-cache")))
        yield


@pytest.fixture
def shared_data() -> Path:
    """The shared data root (missing_reference if it is absent)."""
    return require_shared_data()


@pytest.fixture
def shared_models() -> Path:
    """The shared models dir (missing_reference if it is absent)."""
    path = shared_models_dir()
    if not path.is_dir():
        missing_reference(f"models not found at {path} (set TINYCL_MODELS to the shared models dir)")
    return path


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Test tensors are tiny: a second intra-op thread only spins on a loaded 2-core machine (10x slower)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def sanitized_runtime() -> tuple[Path, dict]:
    """(the C runtime built with ASan + UBSan, the environment a Python subprocess loads it in), or a skip naming
    what is missing (the compiler's libasan.so)."""
    import subprocess

    from tinycl.runtime import compile_library

    libasan = subprocess.run(["cc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(libasan) or not os.path.exists(libasan):
        pytest.skip("the compiler's AddressSanitizer runtime (libasan.so) is not installed")
    env = dict(os.environ, LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="print_stacktrace=1")
    return compile_library(sanitize=True), env


def run_powerloss(project: Path) -> list[str]:
    """Build an exported project's sources with tests/c/powerloss.c (a save cut after every possible number of
    bytes) for the host and run it: the words it prints (it exits 0 when every cut left a usable state)."""
    src = sorted(str(p) for p in (project / "src").glob("*.c"))
    exe = project / "powerloss"
    subprocess.run(["cc", "-std=c99", "-O2", "-ffp-contract=off", "-DTCL_NO_DOUBLE", f"-I{project / 'src'}", "-o",
                    str(exe), *src, str(REPO / "tests/c/powerloss.c"), "-lm"], check=True)
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    return result.stdout.split()
