"""Compile the C runtime (tinycl/csrc) on demand with the system C compiler and load it with ctypes.

The shared library is cached in `csrc/` under the project's cache directory ($TINYCL_CACHE or ~/.cache/tinycl,
see tinycl.data.cache), in a file named by a hash of the sources, the compiler and the flags: an edit to any
source or flag builds a new library, and an unchanged tree never compiles twice. Builds write a temporary file
and rename it into place, so concurrent processes never load a half-written library.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tinycl.data import cache as data_cache
from tinycl.errors import ConfigError
from tinycl.model.ops import pads
from tinycl.model.spec import Layer, ModelSpec

__all__ = ["CSRC", "WARNING_FLAGS", "SANITIZE_FLAGS", "Library", "TclConvShape", "TclLayer", "TclNet", "TclRequant",
           "compile_library", "conv_shape", "load_library", "sources"]

CSRC = Path(__file__).resolve().parent.parent / "csrc"
WARNING_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
OPT_FLAGS = ("-O2",)
SANITIZE_FLAGS = ("-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                  "-fno-sanitize-recover=undefined")


def sources() -> list[Path]:
    """The runtime's C sources and headers, in a fixed order."""
    return sorted(CSRC.glob("*.c")) + sorted(CSRC.glob("*.h"))


def _default_cache_dir() -> Path:
    return data_cache.cache_dir() / "csrc"


def _compiler(compiler: str | None) -> str:
    name = compiler or os.environ.get("CC") or "cc"
    path = shutil.which(name)
    if path is None:
        raise ConfigError(f"device mode needs a C99 compiler: {name!r} is not on PATH; install gcc or clang, "
                          f"or set CC to one")
    return path


def compile_library(flags: tuple[str, ...] | None = None, *, sanitize: bool = False, cache_dir: Path | None = None,
                    compiler: str | None = None) -> Path:
    """Path of the shared library built from `sources()` with WARNING_FLAGS + `flags` (default OPT_FLAGS;
    SANITIZE_FLAGS when `sanitize`), compiling it only if the cache does not hold it yet."""
    cc = _compiler(compiler)
    flags = tuple(flags) if flags is not None else (SANITIZE_FLAGS if sanitize else OPT_FLAGS)
    command = [cc, *WARNING_FLAGS, *flags, "-fPIC", "-shared"]
    digest = hashlib.sha256(" ".join(command).encode())
    for path in sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    cache = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    target = cache / f"libtinycl-{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
    c_files = [str(p) for p in sources() if p.suffix == ".c"]
    result = subprocess.run([*command, "-o", tmp, *c_files, "-lm"], capture_output=True, text=True)
    if result.returncode != 0:
        os.unlink(tmp)
        # not a user error: the sources in the package do not compile with this compiler
        raise RuntimeError(f"compiling the tinycl C runtime failed:\n{' '.join(command)}\n{result.stderr}")
    os.replace(tmp, target)
    return target


class TclConvShape(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in
                ("c_in", "h_in", "w_in", "c_out", "h_out", "w_out", "k_h", "k_w", "s_h", "s_w", "pad_top", "pad_left")]


def conv_shape(spec: ModelSpec, layer: Layer) -> TclConvShape:
    """The C geometry record of `layer` in `spec`: input and output CHW (features as C x 1 x 1), kernel,
    stride and the top/left zero padding (bottom/right follow from the sizes)."""
    def chw(shape):
        return tuple(shape) if len(shape) == 3 else (math.prod(shape), 1, 1)

    (ci, hi, wi), (co, ho, wo) = chw(spec.input_shape_of(layer.name)), chw(spec.output_shape(layer.name))
    if layer.op in ("conv2d", "depthwise_conv2d", "avg_pool2d", "max_pool2d"):
        top, _, left, _ = pads(layer, hi, wi)
        return TclConvShape(ci, hi, wi, co, ho, wo, *layer.kernel, *layer.stride, top, left)
    return TclConvShape(ci, hi, wi, co, ho, wo, 1, 1, 1, 1, 0, 0)


class TclLayer(ctypes.Structure):
    _fields_ = [("op", ctypes.c_int32), ("act", ctypes.c_int32), ("backward", ctypes.c_int32),
                ("input_grad", ctypes.c_int32), ("shape", TclConvShape),
                *[(name, ctypes.c_int32) for name in ("x", "y", "dx", "dy", "w", "b", "dw", "db", "vw", "vb")]]


class TclRequant(ctypes.Structure):
    _fields_ = [("in_zero", ctypes.c_int32), ("out_zero", ctypes.c_int32), ("act_min", ctypes.c_int32),
                ("act_max", ctypes.c_int32), ("ties", ctypes.c_int32),
                ("multiplier", ctypes.POINTER(ctypes.c_int32)), ("shift", ctypes.POINTER(ctypes.c_int32)),
                ("w_zero", ctypes.POINTER(ctypes.c_int32)), ("real_scale", ctypes.POINTER(ctypes.c_double))]


class TclNet(ctypes.Structure):
    _fields_ = [("n_layers", ctypes.c_int32), ("layers", ctypes.POINTER(TclLayer)),
                ("arena", ctypes.POINTER(ctypes.c_float)), ("input", ctypes.c_int32),
                ("lr", ctypes.c_float), ("momentum", ctypes.c_float), ("weight_decay", ctypes.c_float)]


_F = ctypes.POINTER(ctypes.c_float)
_U8 = ctypes.POINTER(ctypes.c_uint8)
_I32 = ctypes.POINTER(ctypes.c_int32)
_I8 = ctypes.POINTER(ctypes.c_int8)
_S = ctypes.POINTER(TclConvShape)
_Q = ctypes.POINTER(TclRequant)
_i, _z, _f = ctypes.c_int32, ctypes.c_size_t, ctypes.c_float

# name -> (restype, argtypes): the prototypes of tinycl.h
_PROTOTYPES = {
    **{f"tcl_{kind}_forward": (None, [_S, _F, _F, _F, _F]) for kind in ("conv2d", "depthwise", "pointwise")},
    **{f"tcl_{kind}_weight_grad": (None, [_S, _F, _F, _F, _F]) for kind in ("conv2d", "depthwise", "pointwise")},
    **{f"tcl_{kind}_input_grad": (None, [_S, _F, _F, _F]) for kind in ("conv2d", "depthwise", "pointwise")},
    "tcl_linear_forward": (None, [_i, _i, _F, _F, _F, _F]),
    "tcl_linear_weight_grad": (None, [_i, _i, _F, _F, _F, _F]),
    "tcl_linear_input_grad": (None, [_i, _i, _F, _F, _F]),
    "tcl_avgpool_forward": (None, [_S, _F, _F]),
    "tcl_avgpool_input_grad": (None, [_S, _F, _F]),
    "tcl_global_avgpool_forward": (None, [_i, _i, _F, _F]),
    "tcl_global_avgpool_input_grad": (None, [_i, _i, _F, _F]),
    "tcl_activation_forward": (None, [_i, _i, _F, _F]),
    "tcl_activation_input_grad": (None, [_i, _i, _F, _F, _F]),
    "tcl_softmax_xent": (_f, [_i, _F, _i, _f, _F]),
    "tcl_sgd_update": (None, [_i, _F, _F, _F, _f, _f, _f]),
    "tcl_packed_nbytes": (_z, [_z, _i]),
    "tcl_pack_codes": (None, [_U8, _z, _i, _U8]),
    "tcl_unpack_codes": (None, [_U8, _z, _i, _U8]),
    "tcl_write_codes": (None, [_U8, _z, _U8, _z, _i]),
    "tcl_read_codes": (None, [_U8, _z, _z, _i, _U8]),
    "tcl_dequantize_codes": (None, [_U8, _z, _z, _i, _i, _i, _F, _I32, _F]),
    "tcl_multiply_by_quantized_multiplier": (_i, [_i, _i, _i, _i]),
    "tcl_conv2d_s8": (None, [_S, _Q, _I8, _I8, _I32, _I8]),
    "tcl_depthwise_s8": (None, [_S, _Q, _I8, _I8, _I32, _I8]),
    "tcl_linear_s8": (None, [_i, _i, _Q, _I8, _I8, _I32, _I8]),
    "tcl_avgpool_s8": (None, [_S, _i, _i, _i, _I8, _I8]),
    "tcl_maxpool_s8": (None, [_S, _i, _i, _I8, _I8]),
    "tcl_requantize_s8": (None, [_i, _Q, _I8, _I8]),
    "tcl_net_forward": (None, [ctypes.POINTER(TclNet)]),
    "tcl_net_accumulate": (_f, [ctypes.POINTER(TclNet), _i, _f]),
    "tcl_net_zero_grad": (None, [ctypes.POINTER(TclNet)]),
    "tcl_net_sgd_step": (None, [ctypes.POINTER(TclNet)]),
    "tcl_net_train_batch": (_f, [ctypes.POINTER(TclNet), _F, _I32, _i]),
    "tcl_net_predict": (None, [ctypes.POINTER(TclNet), _F, _i, _F]),
}


class Library:
    """The loaded runtime: every function of tinycl.h as an attribute with its ctypes prototype set."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._dll = ctypes.CDLL(str(self.path))
        for name, (restype, argtypes) in _PROTOTYPES.items():
            fn = getattr(self._dll, name)
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name.removeprefix("tcl_"), fn)


_LOADED: dict[Path, Library] = {}


def load_library(flags: tuple[str, ...] | None = None, *, sanitize: bool = False, cache_dir: Path | None = None,
                 compiler: str | None = None) -> Library:
    """The runtime built with these flags (compiled if needed), loaded once per process."""
    path = compile_library(flags, sanitize=sanitize, cache_dir=cache_dir, compiler=compiler)
    if path not in _LOADED:
        _LOADED[path] = Library(path)
    return _LOADED[path]
