"""Device mode: the adaptive stage's SGD training step run by the C runtime in one statically planned arena.

`DeviceTrainer` is used like `torch.optim.SGD` on a `SpecModule`: `loss = trainer.step(x, y)` runs one
mini-batch step (softmax cross-entropy, mean over the batch; SGD with momentum and weight decay as torch
defines them) and leaves the updated weights in the module. Slower than torch, but it is exactly what the
device computes: per-sample forward/backward in CHW, the gradient summed over the batch, the same kernels, the
same arena offsets. Batch renormalization layers train as the op does in train mode (batch statistics, the running
statistics updated every step; csrc/net.c's passes); `forward` is eval mode (the running statistics).
"""

from __future__ import annotations

import numpy as np
import torch

from tinycl.device.arena import ArenaPlan, LayerPlan, plan_arena, training_schedule
from tinycl.errors import DataError
from tinycl.model.build import SpecModule
from tinycl.model.ops import BRN_EPS, BRN_LIMITS, BRN_MOMENTUM, OPS
from tinycl.runtime import Library, conv_shape, ffi, load_library

__all__ = ["DeviceTrainer", "device_predict"]


class DeviceTrainer:
    """SGD on the C runtime for the adaptive stage `module` (a SpecModule; its parameters are read before and
    written back after every step, so the module stays the one copy of the weights the learner sees).

    lr, weight_decay: may be changed between steps. momentum: fixed (0 means no momentum buffers in the arena).
    brn_warmup: steps over which batch renormalization's r_max / d_max ramp up (train.brn_warmup; 0: none); the
    step count comes with each `step`. alignment: byte alignment of arena offsets. library: a loaded runtime
    (default: built with -O2).
    """

    def __init__(self, module: SpecModule, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, *,
                 brn_warmup: int = 0, alignment: int = 16, library: Library | None = None):
        self.module = module
        self.spec = module.spec
        self.momentum = float(momentum)
        self.schedule = training_schedule(self.spec, momentum=self.momentum != 0.0)
        self.plan: ArenaPlan = plan_arena(self.schedule, alignment)
        self.lib = library or load_library()
        # NaN everywhere: a kernel that read a float the step never wrote would turn the result into NaN
        self.arena = np.full(self.plan.size // 4, np.nan, dtype=np.float32)
        layers = ffi().new("tcl_layer[]", [self.layer_record(p) for p in self.schedule.layers])
        self._net = self.lib.new("tcl_net", n_layers=len(layers), layers=layers, arena=self.arena,
                                 input=self.offset(self.schedule.layers[0].tensors["x"]), momentum=self.momentum,
                                 brn_eps=BRN_EPS, brn_momentum=BRN_MOMENTUM, r_limit=BRN_LIMITS[0],
                                 d_limit=BRN_LIMITS[1], brn_warmup=int(brn_warmup))
        self.lr, self.weight_decay = lr, weight_decay  # written into the C record before every call
        self.reset_momentum()
        self.n_classes = int(np.prod(self.spec.output_shape()))

    # -- size ---------------------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of the arena: parameters, gradients, momentum and one sample's activations and gradients."""
        return self.plan.size

    # -- arena --------------------------------------------------------------------------------------------
    def offset(self, name: str | None) -> int:
        return -1 if name is None else self.plan.offsets[name] // 4

    def view(self, name: str) -> np.ndarray:
        """The arena's float32 slice holding tensor `name` (a view, not a copy)."""
        start = self.plan.offsets[name] // 4
        return self.arena[start: start + self.schedule.tensors[name].nbytes // 4]

    def layer_record(self, p: LayerPlan) -> dict:
        """The tcl_layer fields of one planned layer; op and activation codes are tinycl.h's enum values."""
        offsets = {r: self.offset(p.tensors[r]) for r in ("x", "y", "dx", "dy", "w", "b", "dw", "db", "vw", "vb",
                                                           "stats", "sums", "running")}
        return dict(op=self.lib.constant(f"TCL_OP_{p.kernel.upper()}"),
                    act=self.lib.constant(f"TCL_ACT_{p.act.upper()}"), backward=int(p.backward),
                    input_grad=int(p.input_grad), shape=conv_shape(self.spec, p.layer)[0], **offsets)

    def _net_record(self):
        """The tcl_net record with the current settings."""
        self._net.ptr.lr, self._net.ptr.weight_decay = float(self.lr), float(self.weight_decay)
        return self._net

    def _params(self):
        for p in self.schedule.layers:
            holder = self.module.params[p.layer.name] if p.layer.has_weights else None
            for role, key in (("w", "weight"), ("b", "bias")):
                if p.tensors[role] is not None:
                    yield p, role, getattr(holder, key)

    def _state(self):
        """(layer plan, its state buffers in the op table's order): batch renormalization's running statistics,
        side by side in the layer's `running` tensor."""
        for p in self.schedule.layers:
            if p.tensors["running"] is not None:
                holder = self.module.params[p.layer.name]
                yield p, [getattr(holder, key) for key in OPS[p.layer.op].state(p.layer, p.in_shape)]

    def _load_weights(self) -> None:
        for p, role, param in self._params():
            self.view(p.tensors[role])[:] = param.detach().cpu().numpy().ravel()
        for p, buffers in self._state():
            self.view(p.tensors["running"])[:] = np.concatenate([b.detach().cpu().numpy().ravel() for b in buffers])

    def _store_weights(self) -> None:
        with torch.no_grad():
            for p, role, param in self._params():
                param.copy_(torch.from_numpy(self.view(p.tensors[role]).reshape(param.shape)))
            for p, buffers in self._state():
                values, start = self.view(p.tensors["running"]), 0
                for b in buffers:
                    b.copy_(torch.from_numpy(values[start: start + b.numel()].reshape(b.shape)))
                    start += b.numel()

    def reset_momentum(self) -> None:
        """Zero the momentum buffers (torch's state after creating a new optimizer)."""
        for p in self.schedule.layers:
            for role in ("vw", "vb"):
                if p.tensors[role] is not None:
                    self.view(p.tensors[role])[:] = 0.0

    def momentum_buffers(self) -> dict[str, dict[str, np.ndarray]]:
        """Copies of the momentum buffers: {layer: {"weight": ..., "bias": ...}} in the parameters' shapes."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for p, role, param in self._params():
            if p.tensors["v" + role] is not None:
                key = "weight" if role == "w" else "bias"
                out.setdefault(p.layer.name, {})[key] = self.view(p.tensors["v" + role]).reshape(param.shape).copy()
        return out

    # -- steps --------------------------------------------------------------------------------------------
    def _batch(self, x) -> np.ndarray:
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[1:] != tuple(self.spec.input_shape) or len(x) == 0:
            shape = ", ".join(map(str, self.spec.input_shape))
            raise DataError(f"device mode needs a non-empty batch of shape (N, {shape}) for {self.spec.name!r}, "
                            f"got {x.shape}")
        return x

    def step(self, x, y, brn_step: int = 0) -> float:
        """One SGD step on the mini-batch x (N, *input_shape) float32 with labels y (N,) int in
        [0, n_classes); returns the mean softmax cross-entropy loss before the update. brn_step: the training steps so
        far, this one included (batch renormalization's warm-up; unused without one)."""
        x = self._batch(x)
        y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        if (y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0
                or y.max() >= self.n_classes):
            raise DataError(f"device mode needs {len(x)} integer labels in [0, {self.n_classes}), got {y.dtype} "
                            f"of shape {y.shape}")
        labels = np.ascontiguousarray(y, dtype=np.int32)
        self._load_weights()
        self._net.ptr.brn_step = int(brn_step)
        loss = self.lib.net_train_batch(self._net_record(), x, labels, len(x))
        self._store_weights()
        return float(loss)

    def forward(self, x) -> np.ndarray:
        """Logits (N, n_classes) float32 of x (N, *input_shape), computed by the C forward pass."""
        x = self._batch(x)
        self._load_weights()
        out = np.empty((len(x), self.n_classes), dtype=np.float32)
        self.lib.net_predict(self._net_record(), x, len(x), out)
        return out

    def __repr__(self) -> str:
        return (f"DeviceTrainer({self.spec.name!r}, lr={self.lr}, momentum={self.momentum}, "
                f"weight_decay={self.weight_decay}; {self.plan.report()})")


def device_predict(module: SpecModule, z: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Labels (N,) int64 of latents z (N, *input_shape) from the C forward pass on `module`'s current weights (the
    first of equal logits, as the device's argmax). The planned arena is kept on the module and reused."""
    trainer = getattr(module, "_device_predictor", None)
    if trainer is None or trainer.spec is not module.spec:
        trainer = DeviceTrainer(module, lr=0.0)
        object.__setattr__(module, "_device_predictor", trainer)  # a plain attribute, not a submodule
    out = [trainer.forward(z[i: i + batch_size]).argmax(1) for i in range(0, len(z), batch_size)]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)
