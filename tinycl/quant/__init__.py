"""Quantization: affine math as pure functions, bit packing, post-training quantization."""

from tinycl.quant.packing import pack_codes, packed_nbytes, unpack_codes
from tinycl.quant.ptq import quantize_model
from tinycl.quant.qparams import choose_qparams, dequantize, quantize

__all__ = ["choose_qparams", "quantize", "dequantize", "pack_codes", "unpack_codes", "packed_nbytes",
           "quantize_model"]
