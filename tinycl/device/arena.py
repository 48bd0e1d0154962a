"""Static arena planning for one training step of an adaptive stage.

`training_schedule(spec)` lists the kernel calls of one step in the order the C runtime (csrc/net.c) makes
them, with the tensors each reads and writes; a tensor's lifetime is the span of calls that touch it.
Parameters, their summed gradients and momentum buffers live for the whole step (the gradients sum over the
mini-batch's samples); activations and activation gradients live within one sample, because the batch loop
runs around the whole forward/backward pass (with batch renormalization the runtime makes more passes over the
samples, each a prefix of this order: see csrc/net.c; a layer's statistics, batch sums and running statistics
live for the whole step). `plan_arena` then gives every tensor a byte offset in one arena
such that no two tensors share a byte while both are live (greedy by size, as TFLite Micro's planner), and
reports the arena size against the lower bound (the most bytes live at any one call) and against one buffer
per tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tinycl.errors import ModelError
from tinycl.model.ops import OPS, ops_where, pads
from tinycl.model.spec import Layer, ModelSpec

__all__ = ["activation_nbytes", "KINDS", "PERSISTENT", "ArenaPlan", "LayerPlan", "Op", "Schedule", "Tensor",
           "plan_arena", "training_schedule"]

KINDS = ("input", "activation", "gradient", "param", "param_grad", "momentum")
PERSISTENT = ("param", "param_grad", "momentum")
FLOAT_BYTES = 4


@dataclass(frozen=True)
class Tensor:
    """A tensor of the step: `nbytes` bytes, live from call `first` to call `last` (inclusive)."""

    name: str
    nbytes: int
    kind: str  # one of KINDS
    first: int
    last: int


@dataclass(frozen=True)
class Op:
    """One kernel call of the step and the tensors it touches."""

    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]


@dataclass(frozen=True)
class LayerPlan:
    """One layer as the runtime runs it: its kernel, shapes and tensor names (None where absent)."""

    layer: Layer
    kernel: str  # conv2d | depthwise | pointwise | linear | avgpool | global_avgpool | activation | batchrenorm
    act: str  # fused activation (for kernel "activation": the activation itself)
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    pads: tuple[int, int, int, int]  # top, bottom, left, right
    backward: bool  # a trainable layer at or before this one: run its backward pass
    input_grad: bool  # a trainable layer before this one: compute the gradient of its input
    tensors: dict  # role (x, y, dx, dy, w, b, dw, db, vw, vb, stats, sums, running) -> tensor name or None


@dataclass(frozen=True)
class Schedule:
    """The kernel calls of one training step and every tensor they touch, with lifetimes."""

    spec: ModelSpec
    layers: tuple[LayerPlan, ...]
    ops: tuple[Op, ...]
    tensors: dict  # name -> Tensor, in order of creation
    logits: str

    def live_at(self, t: int) -> list[Tensor]:
        return [x for x in self.tensors.values() if x.first <= t <= x.last]

    def lower_bound(self, kinds: tuple[str, ...] = KINDS) -> int:
        """The most bytes (of tensors of `kinds`) live at any one call: no arena can be smaller."""
        return max(sum(x.nbytes for x in self.live_at(t) if x.kind in kinds) for t in range(len(self.ops)))

    def separate_bytes(self, kinds: tuple[str, ...] = KINDS) -> int:
        """Bytes if every tensor of `kinds` had its own buffer."""
        return sum(x.nbytes for x in self.tensors.values() if x.kind in kinds)

    def bytes_by_kind(self) -> dict[str, int]:
        return {k: self.separate_bytes((k,)) for k in KINDS}


def _kernel(layer: Layer, pads: tuple[int, int, int, int]) -> str:
    """The op table's C training kernel; a 1x1 stride-1 unpadded conv2d runs the pointwise kernel."""
    kernel = OPS[layer.op].device
    if kernel == "conv2d" and layer.kernel == (1, 1) and layer.stride == (1, 1) and not any(pads):
        return "pointwise"
    return kernel


def training_schedule(spec: ModelSpec, momentum: bool = True) -> Schedule:
    """The calls of one SGD step on the adaptive stage `spec` (sequential; ops with a C training kernel in the op
    table), float32 tensors. `momentum`: whether SGD keeps momentum buffers."""
    for layer in spec.layers:
        if OPS[layer.op].device is None:
            raise ModelError(f"device mode cannot train layer {layer.name!r} ({layer.op}); allowed ops: "
                             f"{', '.join(ops_where(lambda op: op.device is not None))}")
    sizes: dict[str, tuple[int, str]] = {"input": (math.prod(spec.input_shape) * FLOAT_BYTES, "input")}

    def new(name: str, count: int, kind: str) -> str:
        sizes[name] = (count * FLOAT_BYTES, kind)
        return name

    plans, prev, source = [], "input", "input"  # source: the tensor holding the previous layer's output
    trainable_before = False
    for layer in spec.layers:
        if layer.inputs and layer.inputs != (prev,):
            raise ModelError(f"device mode runs sequential stages; layer {layer.name!r} reads {layer.inputs}, "
                             f"not the previous layer {prev!r}")
        prev = layer.name
        if OPS[layer.op].device == "view":  # same bytes, another shape: no kernel, no tensor of its own
            continue
        in_shape, out_shape = spec.input_shape_of(layer.name), spec.output_shape(layer.name)
        padding = pads(layer, *in_shape[1:]) if len(in_shape) == 3 else (0, 0, 0, 0)
        backward = trainable_before or layer.has_weights
        t = {"x": source, "y": new(f"{layer.name}.out", math.prod(out_shape), "activation"),
             "dx": None, "dy": None}
        if trainable_before:
            t["dx"] = new(f"{source}.grad", math.prod(in_shape), "gradient")
        if backward:
            t["dy"] = new(f"{t['y']}.grad", math.prod(out_shape), "gradient")
        for role, key in (("w", "weight"), ("b", "bias")):
            shape = spec.weight_shapes(layer).get(key)
            t[role] = t[f"d{role}"] = t[f"v{role}"] = None
            if shape:
                n = math.prod(shape)
                t[role] = new(f"{layer.name}.{key}", n, "param")
                t[f"d{role}"] = new(f"{layer.name}.{key}.grad", n, "param_grad")
                if momentum:
                    t[f"v{role}"] = new(f"{layer.name}.{key}.momentum", n, "momentum")
        t["stats"] = t["sums"] = t["running"] = None
        state = OPS[layer.op].state
        if state:  # batch renormalization: 4 statistics, 2 batch sums per channel (tinycl.h), the running statistics
            t["stats"] = new(f"{layer.name}.stats", 4 * in_shape[0], "param")
            t["sums"] = new(f"{layer.name}.sums", 2 * in_shape[0], "param")
            t["running"] = new(f"{layer.name}.running",
                               sum(math.prod(shape) for shape, _ in state(layer, in_shape).values()), "param")
        act = layer.op if layer.op in ("relu", "relu6") else layer.activation
        if layer.op == "avg_pool2d":
            act = "none"  # as tinycl.model.build: pooling applies no fused activation
        plans.append(LayerPlan(layer, _kernel(layer, padding), act, in_shape, out_shape, padding, backward,
                               trainable_before, t))
        trainable_before = trainable_before or layer.has_weights
        source = t["y"]
    if not plans or not plans[-1].backward:
        raise ModelError(f"model {spec.name!r} has no trainable layer (conv2d, depthwise_conv2d or linear) to train")
    ops = _ops(plans)
    return Schedule(spec, tuple(plans), ops, _lifetimes(ops, sizes), plans[-1].tensors["y"])


def _ops(plans: list[LayerPlan]) -> tuple[Op, ...]:
    def names(p: LayerPlan, *roles: str) -> tuple[str, ...]:
        return tuple(p.tensors[r] for r in roles if p.tensors[r] is not None)

    ops = [Op("zero grads", (), tuple(n for p in plans for n in names(p, "dw", "db"))),
           Op("load input", (), ("input",))]
    ops += [Op(f"forward {p.layer.name}", names(p, "x", "w", "b", "stats", "running"), names(p, "y")) for p in plans]
    ops.append(Op("loss", names(plans[-1], "y"), names(plans[-1], "dy")))
    for p in reversed(plans):
        if not p.backward:
            continue
        name = p.layer.name
        if p.kernel == "activation":
            ops.append(Op(f"input grad {name}", names(p, "y", "dy"), names(p, "dx")))
            continue
        if p.act != "none":
            ops.append(Op(f"activation grad {name}", names(p, "y", "dy"), names(p, "dy")))
        if p.layer.has_weights:
            ops.append(Op(f"weight grad {name}", names(p, "x", "dy"), names(p, "dw", "db")))
        if p.input_grad:  # batch renormalization's input gradient reads its input and statistics too
            ops.append(Op(f"input grad {name}", names(p, "dy", "w", "x", "stats", "sums") if p.kernel == "batchrenorm"
                          else names(p, "dy", "w"), names(p, "dx")))
    ops.append(Op("sgd", tuple(n for p in plans for n in names(p, "w", "b", "dw", "db", "vw", "vb")),
                  tuple(n for p in plans for n in names(p, "w", "b", "vw", "vb"))))
    return tuple(ops)


def _lifetimes(ops: tuple[Op, ...], sizes: dict[str, tuple[int, str]]) -> dict[str, Tensor]:
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for t, op in enumerate(ops):
        for name in op.reads + op.writes:
            first.setdefault(name, t)
            last[name] = t
    out = {}
    for name, (nbytes, kind) in sizes.items():
        if kind in PERSISTENT:
            out[name] = Tensor(name, nbytes, kind, 0, len(ops) - 1)
        else:
            out[name] = Tensor(name, nbytes, kind, first[name], last[name])
    return out


@dataclass(frozen=True)
class ArenaPlan:
    """Byte offsets of the tensors of `schedule` (those of `kinds`) in one arena of `size` bytes."""

    schedule: Schedule
    offsets: dict  # tensor name -> byte offset (a multiple of alignment)
    size: int
    alignment: int
    kinds: tuple[str, ...] = KINDS

    @property
    def lower_bound(self) -> int:
        return self.schedule.lower_bound(self.kinds)

    @property
    def separate_bytes(self) -> int:
        return self.schedule.separate_bytes(self.kinds)

    def conflicts(self) -> list[tuple[str, str]]:
        """Pairs of tensors that share bytes while both are live (empty for a valid plan)."""
        placed = [self.schedule.tensors[n] for n in self.offsets]
        bad = []
        for i, a in enumerate(placed):
            for b in placed[i + 1:]:
                if a.first <= b.last and b.first <= a.last:
                    lo_a, lo_b = self.offsets[a.name], self.offsets[b.name]
                    if lo_a < lo_b + b.nbytes and lo_b < lo_a + a.nbytes:
                        bad.append((a.name, b.name))
        return bad

    def report(self) -> str:
        lb, sep = self.lower_bound, self.separate_bytes
        return (f"arena {self.size:,} B = {self.size / lb:.3f} x lower bound {lb:,} B; "
                f"one buffer per tensor: {sep:,} B ({sep / self.size:.2f} x the arena)")


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def plan_arena(schedule: Schedule, alignment: int = 16, kinds: tuple[str, ...] = KINDS) -> ArenaPlan:
    """Place the tensors of `kinds`, largest first, each at the lowest aligned offset where it overlaps no
    already placed tensor whose lifetime intersects its own."""
    if alignment < 1 or alignment & (alignment - 1):
        raise ModelError(f"arena alignment {alignment} must be a power of two (4 for Cortex-M, 16 for SIMD)")
    todo = sorted((x for x in schedule.tensors.values() if x.kind in kinds),
                  key=lambda x: (-x.nbytes, x.first, x.name))
    offsets: dict[str, int] = {}
    placed: list[Tensor] = []
    for x in todo:
        busy = sorted((offsets[p.name], offsets[p.name] + p.nbytes) for p in placed
                      if p.first <= x.last and x.first <= p.last)
        offset = 0
        for lo, hi in busy:
            if offset + x.nbytes <= lo:
                break
            offset = max(offset, _align(hi, alignment))
        offsets[x.name] = offset
        placed.append(x)
    size = max((offsets[x.name] + x.nbytes for x in placed), default=0)
    ordered = {name: offsets[name] for name in schedule.tensors if name in offsets}
    return ArenaPlan(schedule, ordered, _align(size, alignment), alignment, tuple(kinds))


def activation_nbytes(adaptive: ModelSpec, samples: int) -> int:
    """Bytes of the fp32 activations one training pass keeps for its backward pass: the stage input and every
    layer's output, at `samples` samples. The one count of them (Learner.memory_report's peak_activations
    and the cost model read it); the stand-in where `plan_arena` cannot plan the stage: it leaves out
    gradient buffers and in-place reuse, so the real arena can be smaller or larger."""
    kept = math.prod(adaptive.input_shape) + sum(math.prod(adaptive.output_shape(n)) for n in adaptive.names)
    return samples * kept * FLOAT_BYTES
