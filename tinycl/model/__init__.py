"""The model description (layer records) and its readers."""

from tinycl.model import zoo
from tinycl.model.build import SpecModule, build, get_weights, set_weights
from tinycl.model.ops import OPS, OpDef, register_op
from tinycl.model.quantized import QuantizedModel
from tinycl.model.spec import Layer, LayerQuant, ModelSpec, TensorQuant
from tinycl.model.split import Split

__all__ = ["Layer", "LayerQuant", "ModelSpec", "TensorQuant", "QuantizedModel", "Split", "SpecModule", "build",
           "get_weights", "set_weights", "zoo", "OPS", "OpDef", "register_op"]
