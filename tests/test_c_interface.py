"""The C interface comes from tinycl.h alone: every function it declares is callable from the loaded library
with the parameters the header names, enum values are the header's, and no array reaches C unchecked."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tinycl.errors import DataError
from tinycl.runtime import HEADER, declarations, ffi, load_library, prototypes


@pytest.fixture(scope="module")
def lib():
    return load_library()


def test_every_function_of_the_header_is_callable(lib):
    declared = set(re.findall(r"\b(tcl_\w+)\s*\(", declarations()))
    assert len(declared) >= 30 and declared == set(prototypes())
    for name in declared:
        assert callable(getattr(lib.raw, name)), name  # resolved in the shared library
        wrapped = getattr(lib, name.removeprefix("tcl_"))
        assert callable(wrapped)
        # the checked wrapper has the header's arity (cffi itself checks every argument's C type)
        assert len(ffi().typeof(getattr(lib.raw, name)).args) == len(prototypes()[name])


def test_enums_come_from_the_header(lib):
    text = HEADER.read_text()
    for name, value in re.findall(r"\b(TCL_\w+)\s*=\s*(\d+)", text):
        assert lib.constant(name) == int(value)


def test_buffers_are_checked_before_the_call(lib):
    codes = np.arange(13, dtype=np.uint8) % 8
    packed = np.zeros(5, np.uint8)
    lib.pack_codes(codes, 13, 3, packed)  # 13 3-bit codes: 5 bytes
    with pytest.raises(DataError, match="reads or writes 5 elements, the array holds 4"):
        lib.pack_codes(codes, 13, 3, np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="uint8 array"):
        lib.pack_codes(codes.astype(np.int32), 13, 3, packed)
    with pytest.raises(DataError, match="C-contiguous"):
        lib.unpack_codes(packed, 5, 3, np.zeros(26, np.uint8)[::2])
    readonly = np.zeros(5, np.uint8)
    readonly.flags.writeable = False
    with pytest.raises(DataError, match="writeable"):
        lib.pack_codes(codes, 13, 3, readonly)
    with pytest.raises(DataError, match="argument 'x'"):
        lib.activation_forward(1, 4, None, np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="takes 4 arguments"):
        lib.activation_forward(1, 4, np.zeros(4, np.float32))


def test_structs_are_checked(lib):
    x, y = np.zeros(8, np.int8), np.zeros(8, np.int8)
    with pytest.raises(DataError, match="int32 array"):
        lib.new("tcl_requant", multiplier=np.zeros(1, np.int64))
    q = lib.new("tcl_requant", multiplier=np.full(1, 2**30, np.int32), shift=np.ones(1, np.int32), act_min=-128,
                act_max=127)
    lib.requantize_s8(8, q, np.arange(8, dtype=np.int8), y)
    np.testing.assert_array_equal(y, np.arange(8))  # a multiplier of exactly 1
    with pytest.raises(DataError, match="tcl_conv_shape"):
        lib.maxpool_s8(q, -128, 127, x, y)
