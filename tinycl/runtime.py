"""Compile the C runtime (tinycl/csrc) on demand with the system C compiler and load it with cffi.

The shared library is cached in `csrc/` under the project's cache directory ($TINYCL_CACHE or ~/.cache/tinycl,
see tinycl.data.cache), in a file named by a hash of the sources, the compiler and the flags: an edit to any
source or flag builds a new library, and an unchanged tree never compiles twice. Builds write a temporary file
and rename it into place (tinycl.io.atomic_output), so concurrent processes never load a half-written library.

The interface is read from `csrc/tinycl.h` itself (cffi's ABI mode: `cdef` on the header's declarations, no
build step): function prototypes, structs and enum values have no second copy in Python. `Library` wraps every
function so that C never sees an unchecked buffer: a NumPy array argument must have the C type's dtype, be
C-contiguous (and writeable if the pointer is not const) and hold at least the elements the call reads or
writes (`_lengths`, from the header's size conventions); otherwise DataError, before the call.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cffi
import numpy as np

from tinycl.data import cache as data_cache
from tinycl.errors import ConfigError, DataError
from tinycl.io import atomic_output
from tinycl.model.ops import pads
from tinycl.model.spec import Layer, ModelSpec

__all__ = ["CSRC", "HEADER", "FP_FLAGS", "WARNING_FLAGS", "SANITIZE_FLAGS", "Library", "Param", "Struct",
           "compile_library", "conv_shape", "host_fma_flags", "declarations", "ffi", "load_library", "prototypes",
           "sources"]

CSRC = Path(__file__).resolve().parent / "csrc"
HEADER = CSRC / "tinycl.h"
WARNING_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
# no contraction of a * b + c into a fused multiply-add unless the source asks for one (fmaf): clang contracts by
# default, and a contraction one compiler makes and another does not changes the bits (docs/firmware.md)
FP_FLAGS = ("-ffp-contract=off",)


def host_fma_flags() -> tuple[str, ...]:
    """("-mfma",) on an x86 host whose CPU has FMA: the kernels' fmaf calls become one instruction, as vfma.f32 on a
    Cortex-M4F; elsewhere () (aarch64 has it always; without it libm's fmaf gives the same, exactly rounded, bits
    slowly)."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64", "i686"):
        return ()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    return ("-mfma",) if re.search(r"^flags\s*:.*\bfma\b", flags, re.M) else ()
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
    command = [cc, *WARNING_FLAGS, *FP_FLAGS, *host_fma_flags(), *flags, "-fPIC", "-shared"]
    digest = hashlib.sha256(" ".join(command).encode())
    for path in sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    cache = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    target = cache / f"libtinycl-{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    c_files = [str(p) for p in sources() if p.suffix == ".c"]
    with atomic_output(target, suffix=".so") as tmp:
        result = subprocess.run([*command, "-o", str(tmp), *c_files, "-lm"], capture_output=True, text=True)
        if result.returncode != 0:
            # not a user error: the sources in the package do not compile with this compiler
            raise RuntimeError(f"compiling the tinycl C runtime failed:\n{' '.join(command)}\n{result.stderr}")
    return target


# -- the interface, read from tinycl.h -----------------------------------------------------------------------
def declarations(text: str | None = None) -> str:
    """The header's text (default: tinycl.h) without its comments and preprocessor lines (#include, include
    guards), which cffi's cdef does not parse; every declaration is kept as written."""
    text = HEADER.read_text() if text is None else text
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


@functools.cache
def ffi() -> cffi.FFI:
    """The cffi FFI holding every declaration of tinycl.h (enums, structs, functions)."""
    out = cffi.FFI()
    out.cdef(declarations())
    return out


@dataclass(frozen=True)
class Param:
    """One parameter of a tinycl.h function: its name, its C type without `const` and `*`, and whether it is
    a pointer and a pointer to const."""

    name: str
    ctype: str
    pointer: bool
    const: bool


@functools.cache
def prototypes() -> dict[str, tuple[Param, ...]]:
    """{function name: its parameters}, for every function tinycl.h declares (cffi keeps no parameter names)."""
    out = {}
    for name, params in re.findall(r"\b(tcl_\w+)\s*\(([^()]*)\)\s*;", declarations()):
        parsed = [re.fullmatch(r"(const\s+)?(\w+)\s*(\*?)\s*(\w+)", p.strip()) for p in params.split(",")]
        out[name] = tuple(Param(m[4], m[2], bool(m[3]), bool(m[1])) for m in parsed)
    return out


def conv_shape(spec: ModelSpec, layer: Layer):
    """The C geometry record (`tcl_conv_shape *`) of `layer` in `spec`: input and output CHW (features as
    C x 1 x 1), kernel, stride and the top/left zero padding (bottom/right follow from the sizes)."""
    def chw(shape):
        return tuple(shape) if len(shape) == 3 else (math.prod(shape), 1, 1)

    (ci, hi, wi), (co, ho, wo) = chw(spec.input_shape_of(layer.name)), chw(spec.output_shape(layer.name))
    kernel, stride, top, left = (1, 1), (1, 1), 0, 0
    if layer.op in ("conv2d", "depthwise_conv2d", "avg_pool2d", "max_pool2d"):
        kernel, stride = layer.kernel, layer.stride
        top, _, left, _ = pads(layer, hi, wi)
    return ffi().new("tcl_conv_shape *", dict(c_in=ci, h_in=hi, w_in=wi, c_out=co, h_out=ho, w_out=wo, k_h=kernel[0],
                                              k_w=kernel[1], s_h=stride[0], s_w=stride[1], pad_top=top,
                                              pad_left=left))


# -- checked buffers -----------------------------------------------------------------------------------------
_DTYPES = {"float": np.float32, "double": np.float64, "int8_t": np.int8, "uint8_t": np.uint8, "int32_t": np.int32,
           "uint16_t": np.uint16}
# tinycl.h: biases may be NULL; v = NULL means no momentum; sums = NULL: batch renorm with constant statistics
_NULLABLE = ("b", "db", "bias", "v", "sums", "shift")


@dataclass(frozen=True)
class Struct:
    """A C struct made by `Library.new`: `ptr` (cffi `ctype *`), the arrays and cdata its pointer fields point
    to (kept alive with it), and `count`, the elements its shortest array field holds."""

    ctype: str
    ptr: object
    count: int
    keep: tuple


def _buffer(a, ctype: str, n: int | None, writable: bool, what: str):
    """A cffi view of NumPy array `a` for a `ctype *`, after checking dtype, contiguity, writability and that it
    holds at least n elements."""
    want = np.dtype(_DTYPES[ctype])
    if not isinstance(a, np.ndarray) or a.dtype != want:
        got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise DataError(f"{what}: the C runtime needs a NumPy {want} array ({ctype} *), got {got}")
    if not a.flags.c_contiguous or (writable and not a.flags.writeable):
        raise DataError(f"{what}: the array must be C-contiguous{' and writeable' if writable else ''}")
    if n is not None and a.size < n:
        raise DataError(f"{what}: the call reads or writes {n} elements, the array holds {a.size}")
    return ffi().from_buffer(f"{ctype}[]", a, require_writable=writable)


def _size(shape, side: str) -> int:
    return getattr(shape, f"c_{side}") * getattr(shape, f"h_{side}") * getattr(shape, f"w_{side}")


def _lengths(name: str, a: dict) -> dict[str, int]:
    """Elements each pointer argument of `name` reads or writes, from its other arguments `a` (by parameter
    name), by tinycl.h's conventions (weights OIHW / (C, 1, kh, kw) / (out, in), codes packed LSB first, ...)."""
    if name.startswith("tcl_fast_"):  # int8_fast.c: n samples of NHWC bytes, or rows x n accumulators
        return _fast_lengths(name, a)
    if "rng" in a:  # the generator's state only; permutation and sample write n values
        return {"out": a.get("n")}
    if "data" in a:
        return {"data": a["n"]}
    if "net" in a:
        net = a["net"]
        first, last = net.layers[0].shape, net.layers[net.n_layers - 1].shape
        n = a.get("n", 1)
        return {"batch": n * _size(first, "in"), "labels": n, "logits": n * _size(last, "out")}
    if "bits" in a:
        end = a.get("start", 0) + a.get("count", 0)
        n_chan = a.get("n_chan", 0)
        return {"codes": a["count"], "packed": -(-end * a["bits"] // 8), "out": a.get("count"), "scale": n_chan,
                "zero": n_chan, "x": a["count"]}
    if name.startswith("tcl_batchrenorm_"):  # c channels of hw values; per channel gamma, beta, 4 stats, 2 sums
        n, c = a["c"] * a.get("hw", 0), a["c"]
        return {"x": n, "y": n, "dx": n, "dy": n, "w": c, "b": c, "dw": c, "db": c, "stats": 4 * c, "sums": 2 * c,
                "moments": 2 * c, "running": 2 * c, "shift": c}
    if "s" in a:
        s = a["s"]
        n_x, n_y, n_b = _size(s, "in"), _size(s, "out"), s.c_out
        per_out = {"tcl_conv2d_": s.c_in * s.k_h * s.k_w, "tcl_depthwise_": s.k_h * s.k_w, "tcl_pointwise_": s.c_in}
        n_w = s.c_out * next((v for k, v in per_out.items() if name.startswith(k)), 0)
    elif "n_in" in a:
        n_x, n_y, n_w, n_b = a["n_in"], a["n_out"], a["n_in"] * a["n_out"], a["n_out"]
    elif "hw" in a:
        n_x, n_y, n_w, n_b = a["c"] * a["hw"], a["c"], 0, 0
    else:  # elementwise: n values everywhere, one requantization record
        return {"q": 1, **{k: a["n"] for k in ("x", "y", "dx", "dy", "z", "dz", "w", "g", "v")}}
    return {"x": n_x, "dx": n_x, "y": n_y, "dy": n_y, "w": n_w, "dw": n_w, "b": n_b, "db": n_b, "bias": n_b,
            "q": n_b}


def _fast_lengths(name: str, a: dict) -> dict[str, int]:
    if name == "tcl_fast_requant_rows":
        return {"acc": a["rows"] * a["ld"], "add": a["n"], "b": a["n"], "q": a["q"].len, "y": a["rows"] * a["n"]}
    s, n = a["s"], a["n"]
    if name == "tcl_fast_im2col":
        return {"x": n * _size(s, "in"), "cols": n * s.h_out * s.w_out * a["k_pad"]}
    ring = s.s_w * (s.w_out + (s.k_w - 1) // max(s.s_w, 1)) * s.c_in
    return {"x": n * _size(s, "in"), "w": s.k_h * s.k_w * a["q"].len, "bias": a["q"].len, "q": a["q"].len,
            "work": s.k_h * (1 + ring), "y": n * _size(s, "out")}


def _arg(p: Param, value, n: int | None, where: str):
    """The C value of argument `value` for parameter p (n: elements it must hold)."""
    what = f"{where}: argument {p.name!r}"
    if not p.pointer:
        return value
    if isinstance(value, Struct):
        if value.ctype != p.ctype or (n is not None and value.count < n):
            need = p.ctype if n is None else f"{p.ctype} with {n} entries per array"
            raise DataError(f"{what}: needs a {need}, got a {value.ctype} with {value.count}")
        return value.ptr
    if p.ctype in _DTYPES:
        if value is None and p.name in _NULLABLE:
            return ffi().NULL
        if n is None:  # a new function whose sizes `_lengths` does not know yet: refuse rather than guess
            raise DataError(f"{what}: tinycl.runtime._lengths has no size rule for it; add one")
        return _buffer(value, p.ctype, n, not p.const, what)
    if p.ctype != "tcl_conv_shape" or ffi().typeof(value) is not ffi().typeof("tcl_conv_shape *"):
        raise DataError(f"{what}: needs a {p.ctype} (tinycl.runtime.conv_shape or Library.new), got {value!r}")
    return value  # a plain geometry record: no pointers inside


def _checked(fn, name: str, params: tuple[Param, ...]):
    """`fn` (a cffi function of the library) behind the argument checks; arrays go in as NumPy arrays."""
    def call(*args):
        if len(args) != len(params):
            raise TypeError(f"{name}({', '.join(p.name for p in params)}) takes {len(params)} arguments, "
                            f"got {len(args)}")
        plain = {p.name: v.ptr if isinstance(v, Struct) else v for p, v in zip(params, args, strict=True)}
        for p in params:  # the records the lengths are read from must be the right type first
            if p.name in ("s", "net"):
                _arg(p, args[params.index(p)], None, name)
        lengths = _lengths(name, plain) if any(p.pointer for p in params) else {}
        return fn(*(_arg(p, v, lengths.get(p.name), name) for p, v in zip(params, args, strict=True)))

    call.__name__ = name
    return call


class Library:
    """The loaded runtime: every function of tinycl.h as an attribute without its `tcl_` prefix, taking NumPy
    arrays for pointers (checked, see the module docstring), `conv_shape` records and `Library.new` structs.
    `raw` is the unchecked cffi library (its enum constants too: `raw.TCL_OP_CONV2D`)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.raw = ffi().dlopen(str(self.path))
        for name, params in prototypes().items():
            setattr(self, name.removeprefix("tcl_"), _checked(getattr(self.raw, name), name, params))

    def constant(self, name: str) -> int:
        """The value of an enum constant of tinycl.h, e.g. "TCL_TIES_UP"."""
        return getattr(self.raw, name)

    def new(self, ctype: str, **fields) -> Struct:
        """A C struct `ctype` (e.g. "tcl_requant") with these fields: NumPy arrays for pointer fields (dtype and
        contiguity checked), None for NULL, cffi arrays of structs as they are."""
        types = dict(ffi().typeof(ctype).fields)
        init, keep, counts = {}, [], []
        for name, value in fields.items():
            ftype = types[name].type
            if isinstance(value, np.ndarray):
                value = _buffer(value, ftype.item.cname, None, False, f"{ctype}.{name}")
                counts.append(len(value))
            elif value is None and ftype.kind == "pointer":
                value = ffi().NULL
            init[name] = value
            keep.append(value)
        return Struct(ctype, ffi().new(f"{ctype} *", init), min(counts, default=0), tuple(keep))


_LOADED: dict[Path, Library] = {}


def load_library(flags: tuple[str, ...] | None = None, *, sanitize: bool = False, cache_dir: Path | None = None,
                 compiler: str | None = None) -> Library:
    """The runtime built with these flags (compiled if needed), loaded once per process."""
    path = compile_library(flags, sanitize=sanitize, cache_dir=cache_dir, compiler=compiler)
    if path not in _LOADED:
        _LOADED[path] = Library(path)
    return _LOADED[path]
