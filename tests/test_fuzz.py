"""Fuzzing in `make test` (a fixed, small budget; benchmarks/fuzz.py runs the same harnesses longer): the config
loader and the .tflite importer must return a value or raise one-line TinyclError, never anything else; and the
C int8 path under AddressSanitizer/UBSan refuses malformed models and inputs with one line, no sanitizer report."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinycl.config import KEYS, RunConfig, config_from_dict, read_config_file
from tinycl.errors import TinyclError

sys.path.insert(0, str(Path(__file__).parent))
from conftest import sanitized_runtime  # noqa: E402
from litert_util import random_qmodel  # noqa: E402
from test_intexec import spec_head  # noqa: E402

from tinycl.model.tflite import load_tflite  # noqa: E402
from tinycl.model.tflite_export import to_tflite  # noqa: E402

FUZZ = settings(max_examples=int(os.environ.get("TINYCL_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=list(HealthCheck), derandomize=True)

values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                   max_size=3), max_leaves=8)
keys = st.sampled_from(sorted(KEYS) + ["data.options.per_class", "data.options.features", "bogus", "data.x.y"])


def _nest(flat: dict) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *heads, last = key.split(".")
        for h in heads:
            node = node.setdefault(h, {})
            if not isinstance(node, dict):
                break
        else:
            node[last] = value
    return out


def one_line(err: BaseException) -> None:
    assert isinstance(err, TinyclError), f"{type(err).__name__}: {err}"
    assert "\n" not in str(err), str(err)


def check_config(flat: dict) -> None:
    """config_from_dict on `flat` (dotted keys -> values) gives a config or a one-line TinyclError."""
    data = _nest({k: v for k, v in flat.items() if v is not None})
    try:
        config_from_dict(RunConfig, data)
    except Exception as err:  # noqa: BLE001 - the harness classifies every exception
        one_line(err)


@FUZZ
@given(st.dictionaries(keys, values, max_size=4))
def test_fuzz_config_values(flat):
    check_config(flat)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_config_file_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_bytes(raw)
    try:
        read_config_file(path)
    except Exception as err:  # noqa: BLE001
        one_line(err)


def model_bytes() -> bytes:
    return to_tflite(random_qmodel(spec_head(), "int8", True, seed=2))


def check_model(raw: bytes, folder: Path):
    path = folder / "m.tflite"
    path.write_bytes(raw)
    try:
        return load_tflite(path)
    except Exception as err:  # noqa: BLE001
        one_line(err)
        return None


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 10 ** 6))
def test_fuzz_tflite_importer(tmp_path_factory, edits, cut):
    raw = bytearray(model_bytes())
    for pos, byte in edits:
        raw[pos % len(raw)] = byte
    folder = tmp_path_factory.mktemp("m")
    check_model(bytes(raw), folder)
    check_model(bytes(raw[: cut % len(raw)]), folder)


SANITIZED = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_fuzz import model_bytes
    from tinycl.device.int8 import DeviceIntegerModel
    from tinycl.runtime import Library
    from tinycl.errors import TinyclError
    from tinycl.model.tflite import load_tflite
    from tinycl.quant.intexec import quantize_input
    import pathlib, tempfile
    lib = Library({lib!r})
    raw = model_bytes()
    rng = np.random.default_rng(0)
    folder = pathlib.Path(tempfile.mkdtemp())
    refused = ran = 0
    for k in range({n}):
        b = bytearray(raw)
        for _ in range(1 + k % 4):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        (folder / "m.tflite").write_bytes(bytes(b))
        try:
            q = load_tflite(folder / "m.tflite")
            shape = (2, *q.spec.input_shape)
            model = DeviceIntegerModel(q, "reference", library=lib)
            x = quantize_input(rng.normal(size=shape).astype(np.float32), q.spec.input_quant)
            model.run_all(x)
            ran += 1
            model.run_all(x[:, :1])  # an input smaller than the model's
            print("SHORT INPUT ACCEPTED", flush=True)
        except TinyclError as err:
            assert "\\n" not in str(err), str(err)
            refused += 1
    print(f"FUZZ OK ran={{ran}} refused={{refused}}", flush=True)
""")


def test_malformed_models_and_inputs_under_sanitizers():
    lib, env = sanitized_runtime()
    code = SANITIZED.format(tests=str(Path(__file__).parent), lib=str(lib), n=60)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert "FUZZ OK" in run.stdout, run.stdout[-2000:] + run.stderr[-3000:]
    assert "SHORT INPUT ACCEPTED" not in run.stdout
    assert "AddressSanitizer" not in run.stderr and "runtime error" not in run.stderr, run.stderr[-3000:]
