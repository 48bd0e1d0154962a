"""The saved learner: what a run has learned, portable and never executed, written to OUT/learner/ after every
experience. `tinycl run --resume`, `tinycl predict` and `tinycl export --from` read it; nothing in it is unpickled.

    learner/
      manifest.json       format, and every other file's size and SHA-256 (checked before anything is read)
      config.toml         the run config
      frozen.tflite       the int8 frozen stage as a TFLite flatbuffer (tinycl.model.tflite_export), when int8
      arrays.safetensors  every array: the adaptive stage's weights, the replay memory (packed codes, scales,
                          zero points, labels), an fp32 frozen stage's weights, generator states, CWR* rows, ...
      state.json          the rest, arrays referenced by name: model specs, input normalisation, data shape and
                          classes, generator states, FLOPs log, counters, the accuracy matrix so far

    save_learner(OUT / "learner", cfg, setup, learner, matrix, elapsed)
    saved = SavedLearner.load(OUT)        # OUT or OUT/learner; one-line TinyclError if anything is off
    saved.frozen_stage(), saved.learner_state(), saved.normalization, saved.cfg
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tinycl.config import RunConfig, config_to_dict, load_config, save_config
from tinycl.data.normalize import Normalization
from tinycl.errors import ConfigError, ModelError, TinyclError
from tinycl.frozen import FloatFrozenStage
from tinycl.io import atomic_dir, sha256
from tinycl.model.build import get_weights
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, LayerQuant, ModelSpec, TensorQuant
from tinycl.quant.intexec import IntegerFrozenStage

__all__ = ["FORMAT", "SavedLearner", "save_learner", "spec_to_dict", "spec_from_dict", "learner_dir",
           "base_stage"]

FORMAT = "tinycl-learner/1"
FILES = ("config.toml", "frozen.tflite", "arrays.safetensors", "state.json")


# -- model specs as JSON ------------------------------------------------------------------------------------
def _quant_to_dict(q: TensorQuant | None) -> dict | None:
    return None if q is None else {"scale": list(q.scale), "zero_point": list(q.zero_point), "dtype": q.dtype,
                                   "axis": q.axis}


def _quant_from_dict(d: dict | None) -> TensorQuant | None:
    return None if d is None else TensorQuant(tuple(d["scale"]), tuple(d["zero_point"]), d["dtype"], d["axis"])


def spec_to_dict(spec: ModelSpec) -> dict:
    """A ModelSpec as JSON-able data (layer records, quantization included); `spec_from_dict` inverts it."""
    layers = []
    for ly in spec.layers:
        d = {k: getattr(ly, k) for k in ("name", "op", "channels", "kernel", "stride", "padding", "activation",
                                         "bias", "shape", "inputs")}
        d["quant"] = None if ly.quant is None else {"output": _quant_to_dict(ly.quant.output),
                                                    "weight": _quant_to_dict(ly.quant.weight)}
        layers.append(d)
    return {"input_shape": list(spec.input_shape), "layers": layers, "input_quant": _quant_to_dict(spec.input_quant),
            "name": spec.name}


def spec_from_dict(d: dict) -> ModelSpec:
    layers = []
    for ly in d["layers"]:
        q = ly["quant"]
        quant = None if q is None else LayerQuant(_quant_from_dict(q["output"]), _quant_from_dict(q["weight"]))
        pad = ly["padding"] if isinstance(ly["padding"], str) else tuple(ly["padding"])
        layers.append(Layer(ly["name"], ly["op"], ly["channels"], tuple(ly["kernel"]), tuple(ly["stride"]), pad,
                            ly["activation"], ly["bias"], tuple(ly["shape"]), tuple(ly["inputs"]), quant))
    return ModelSpec(tuple(d["input_shape"]), tuple(layers), _quant_from_dict(d["input_quant"]), d["name"])


# -- nested state <-> JSON + named arrays ---------------------------------------------------------------------
def _encode(obj, arrays: dict[str, np.ndarray], key: str):
    """obj with every array (NumPy, torch, NumPy scalar) moved into `arrays` under a name and replaced by a
    reference, ModelSpecs as dicts, tuples as lists and non-string dict keys kept: JSON-able, exactly invertible."""
    if isinstance(obj, torch.Tensor | np.ndarray | np.generic):
        kind = "torch" if isinstance(obj, torch.Tensor) else "scalar" if isinstance(obj, np.generic) else "numpy"
        arrays[key] = np.ascontiguousarray(obj.numpy() if kind == "torch" else obj)
        return {"$array": key, "kind": kind}
    if isinstance(obj, ModelSpec):
        return {"$spec": spec_to_dict(obj)}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, arrays, f"{key}/{k}") for k, v in obj.items()}
        return {"$items": [[k, _encode(v, arrays, f"{key}/{i}")] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, list | tuple):
        return [_encode(v, arrays, f"{key}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot save {type(obj).__name__} at {key} in a learner's state")


def _decode(obj, arrays: dict[str, np.ndarray]):
    if isinstance(obj, dict):
        if "$array" in obj:
            a = arrays[obj["$array"]]
            return torch.from_numpy(a.copy()) if obj["kind"] == "torch" else a[()] if obj["kind"] == "scalar" else a
        if "$spec" in obj:
            return spec_from_dict(obj["$spec"])
        if "$items" in obj:
            return {k: _decode(v, arrays) for k, v in obj["$items"]}
        return {k: _decode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    return obj


def base_stage(stage):
    """The frozen stage inside its input wrappers (normalisation, pixel feeding)."""
    while hasattr(stage, "stage"):
        stage = stage.stage
    return stage


# -- writing ----------------------------------------------------------------------------------------------------
def save_learner(path: Path, cfg: RunConfig, setup, learner, matrix, elapsed: float) -> None:
    """Write the saved learner of a run to directory `path` (replaced as a whole, atomically: a kill leaves the
    old or the new one). setup: the runner's Setup; learner: its Learner; matrix: the AccuracyMatrix so far."""
    from safetensors.numpy import save_file

    from tinycl.model.tflite_export import to_tflite

    arrays: dict[str, np.ndarray] = {}
    stage, frozen_bytes = base_stage(setup.frozen), None
    if isinstance(stage, IntegerFrozenStage):
        try:
            frozen_bytes = to_tflite(stage.qmodel)
            frozen = {"kind": "int8", "kernels": stage.model.kernels_name}
        except ModelError:  # an imported graph the writer cannot express: its integer model as arrays
            qm = {"spec": stage.qmodel.spec, "weights": stage.qmodel.weights}
            frozen = {"kind": "int8", "kernels": stage.model.kernels_name, "qmodel": _encode(qm, arrays, "frozen")}
    else:
        frozen = {"kind": "fp32", "spec": spec_to_dict(stage.spec),
                  "weights": _encode(get_weights(stage.module), arrays, "frozen")}
    ds = setup.dataset
    state = {
        "format": FORMAT,
        "data": {"name": ds.name, "sample_shape": list(ds.sample_shape), "classes": list(ds.classes),
                 "n_classes": setup.scenario.n_classes, "experiences": len(setup.scenario)},
        "spec": spec_to_dict(setup.spec),
        "frozen": frozen,
        "normalization": None if setup.normalization is None else setup.normalization.to_dict(),
        "deployed": {"spec": spec_to_dict(setup.adaptive_spec),
                     "weights": _encode(setup.adaptive_weights, arrays, "deployed")},
        "adaptive_spec": spec_to_dict(learner.adaptive.spec),  # as trained (batch renorm inserted, grown)
        "learner": _encode(learner.state_dict(), arrays, "learner"),
        "matrix": _encode({"R": matrix.R, "seen": matrix.seen_accuracy, "predicted": matrix.predicted,
                           "done": matrix.done}, arrays, "matrix"),
        "elapsed": elapsed,
    }
    with atomic_dir(path) as tmp:
        save_config(cfg, tmp / "config.toml")
        if frozen_bytes is not None:
            (tmp / "frozen.tflite").write_bytes(frozen_bytes)
        save_file(arrays, str(tmp / "arrays.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, allow_nan=True))
        files = {f.name: {"bytes": f.stat().st_size, "sha256": sha256(f)} for f in sorted(tmp.iterdir())}
        (tmp / "manifest.json").write_text(json.dumps({"format": FORMAT, "files": files}, indent=1) + "\n")


# -- reading ----------------------------------------------------------------------------------------------------
def learner_dir(path: Path) -> Path:
    """A run folder's saved learner (path/learner), or path itself if it is one."""
    path = Path(path)
    return path if (path / "manifest.json").exists() or not (path / "learner").is_dir() else path / "learner"


def verify(path: Path) -> dict:
    """The manifest of saved learner `path`, after checking every file's size and SHA-256: one-line TinyclError
    naming the first file that is missing, truncated or edited."""
    where = f"saved learner {path}"
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        files = manifest["files"]
        if manifest["format"] != FORMAT:
            raise TinyclError(f"{where} has format {manifest['format']!r}; this tinycl reads {FORMAT!r}")
    except FileNotFoundError:
        raise TinyclError(f"{where}: no manifest.json (a directory tinycl run writes as OUT/learner)") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise TinyclError(f"{where}: manifest.json is corrupt (not the JSON tinycl writes)") from None
    for name in ("config.toml", "arrays.safetensors", "state.json"):
        if name not in files:
            raise TinyclError(f"{where}: manifest.json lists no {name}")
    for name, entry in files.items():
        f = path / name
        if name not in FILES or not f.is_file():
            raise TinyclError(f"{where}: {name} is missing or not one of the files it may hold")
        if f.stat().st_size != entry["bytes"] or sha256(f) != entry["sha256"]:
            raise TinyclError(f"{where}: {name} is truncated or edited (its size or SHA-256 differs from "
                              f"manifest.json); nothing was overwritten")
    return manifest


@dataclass
class SavedLearner:
    """A verified saved learner. state: state.json; arrays: arrays.safetensors by name; cfg: its run config."""

    path: Path
    cfg: RunConfig
    state: dict
    arrays: dict

    @classmethod
    def load(cls, path: Path) -> SavedLearner:
        """Read and check the saved learner in `path` (a run folder or its learner/)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = learner_dir(path)
        manifest = verify(path)
        name = "state.json"
        try:
            state = json.loads((path / name).read_text())
            name = "arrays.safetensors"
            arrays = load_file(str(path / name))
        except (ValueError, SafetensorError, UnicodeDecodeError) as err:
            raise TinyclError(f"saved learner {path}: {name} is not what tinycl writes ("
                              f"{str(err).splitlines()[0]})") from None
        if state.get("format") != FORMAT or manifest["format"] != FORMAT:
            raise TinyclError(f"saved learner {path}: state.json is not format {FORMAT!r}")
        return cls(path, load_config(path / "config.toml"), state, arrays)

    def _get(self, what: str, fn):
        """fn(), with any inconsistency in the saved files as one line naming `what`."""
        try:
            return fn()
        except TinyclError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise TinyclError(f"saved learner {self.path}: its {what} does not fit ({msg})") from None

    # -- what it holds ---------------------------------------------------------------------------------------
    @property
    def data(self) -> dict:
        return self.state["data"]

    @property
    def normalization(self) -> Normalization | None:
        d = self.state["normalization"]
        return None if d is None else self._get("normalisation", lambda: Normalization.from_dict(d))

    @property
    def spec(self) -> ModelSpec:
        return self._get("model spec", lambda: spec_from_dict(self.state["spec"]))

    def deployed(self) -> tuple[ModelSpec, dict]:
        """The adaptive stage as deployed (before on-device learning): spec and float weights."""
        d = self.state["deployed"]
        return self._get("adaptive stage", lambda: (spec_from_dict(d["spec"]), _decode(d["weights"], self.arrays)))

    def adaptive_spec(self) -> ModelSpec:
        """The adaptive stage as trained so far (batch renormalization inserted, grown)."""
        return self._get("adaptive stage", lambda: spec_from_dict(self.state["adaptive_spec"]))

    def learner_state(self) -> dict:
        """What Learner.load_state_dict takes."""
        return self._get("learner state", lambda: _decode(self.state["learner"], self.arrays))

    def matrix(self) -> dict:
        """{"R": (E, E), "seen": (E,), "done": int}: the accuracy matrix so far."""
        return self._get("accuracy matrix", lambda: _decode(self.state["matrix"], self.arrays))

    def frozen_stage(self):
        """The frozen stage as the run built it (without its input feeding): IntegerFrozenStage from
        frozen.tflite, or FloatFrozenStage (fp32, or the identity at split "input")."""
        f = self.state["frozen"]

        def build():
            if f["kind"] == "int8" and "qmodel" in f:
                qm = _decode(f["qmodel"], self.arrays)
                return IntegerFrozenStage(QuantizedModel(qm["spec"], qm["weights"]), kernels=f["kernels"])
            if f["kind"] == "int8":
                from tinycl.model.tflite import load_tflite

                return IntegerFrozenStage(load_tflite(self.path / "frozen.tflite"), kernels=f["kernels"])
            return FloatFrozenStage(spec_from_dict(f["spec"]), _decode(f["weights"], self.arrays))

        return self._get("frozen stage", build)

    def restore(self, learner, matrix=None, state: dict | None = None) -> float:
        """Load the learner's state (or `state`, a changed copy of `learner_state()`) into `learner` and the
        accuracy matrix so far into `matrix` (an AccuracyMatrix of the same stream, if given); returns the
        training seconds the run had spent."""
        state = self.learner_state() if state is None else state
        self._get("learner state", lambda: learner.load_state_dict(state))
        if matrix is None:
            return float(self.state["elapsed"])
        m = self.matrix()
        if np.shape(m["R"]) != np.shape(matrix.R):
            raise TinyclError(f"saved learner {self.path}: its accuracy matrix is {np.shape(m['R'])}, the stream has "
                              f"{len(matrix.R)} experiences")
        matrix.R, matrix.seen_accuracy, matrix.done = m["R"], m["seen"], int(m["done"])
        if "predicted" in m:  # saved before the count was kept: unknown (NaN)
            matrix.predicted = m["predicted"]
        return float(self.state["elapsed"])

    def restore_weights(self, module: torch.nn.Module) -> None:
        """The adaptive stage's trained weights into `module` (built from `adaptive_spec()`)."""
        state = self.learner_state()
        self._get("adaptive stage", lambda: module.load_state_dict(state["adaptive"]))

    def check_config(self, cfg: RunConfig) -> None:
        """One line if `cfg` is not the config this learner was saved with."""
        if config_to_dict(cfg) != config_to_dict(self.cfg):
            raise ConfigError(f"cannot resume: {self.path.parent} holds a run with a different config; use a new "
                              f"--out")
