"""C sources of one learner, generated from the objects that define it: the op table's kernels (via the arena
plan's layer records and `device.int8.requant_fields`), the requantization records, the arena plan and the replay
memory. `generate(dl)` returns (tcl_model.h, tcl_model.c); the weights, biases and records become `const` arrays
(flash), the arena, replay memory and buffers static arrays (RAM), and tcl_model.c ends with the API of tcl_model.h
(templates/api.c) on the one learner it defines.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import torch

from tinycl.device.int8 import code_offset, requant_fields
from tinycl.device.trainer import DeviceTrainer
from tinycl.errors import ConfigError
from tinycl.export.learner import DeviceLearner
from tinycl.model.ops import BRN_EPS, BRN_LIMITS, BRN_MOMENTUM
from tinycl.quant.packing import packed_nbytes
from tinycl.runtime import conv_shape, ffi

__all__ = ["generate", "Plan", "plan_of", "slot_nbytes", "state_fields"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
_I8_OPS = {"conv2d": "TCL_I8_CONV2D", "depthwise_conv2d": "TCL_I8_DEPTHWISE", "linear": "TCL_I8_LINEAR",
           "avg_pool2d": "TCL_I8_AVGPOOL", "max_pool2d": "TCL_I8_MAXPOOL"}
_SHAPE = ("c_in", "h_in", "w_in", "c_out", "h_out", "w_out", "k_h", "k_w", "s_h", "s_w", "pad_top", "pad_left")


def _float(v) -> str:
    v = float(np.float32(v))
    if not math.isfinite(v):
        raise ValueError(f"non-finite value {v} in an exported array")
    return f"{v.hex()}f"  # hexadecimal: the exact float32, no decimal rounding


def _array(ctype: str, name: str, values, const: bool = True) -> str:
    values = np.asarray(values).ravel()
    fmt = _float if ctype == "float" else (lambda v: f"{int(v)}u" if ctype.startswith("uint32") else str(int(v)))
    items = [fmt(v) for v in values.tolist()]
    per = 8 if ctype == "float" else 24
    rows = [", ".join(items[i: i + per]) for i in range(0, len(items), per)]
    body = ",\n    ".join(rows)
    return f"static {'const ' if const else ''}{ctype} {name}[{len(items)}] = {{\n    {body}\n}};\n"


def _shape(s) -> str:
    return "{" + ", ".join(str(getattr(s, k)) for k in _SHAPE) + "}"


class Plan:
    """The adaptive stage as the firmware runs it: the DeviceTrainer's arena plan and layer records (the same
    offsets device mode uses), and the parameter and momentum tensors in the order the state saves them."""

    def __init__(self, dl: DeviceLearner):
        t = dl.cfg.train
        self.trainer = DeviceTrainer(dl.learner.adaptive, t.lr, t.momentum, t.weight_decay, brn_warmup=t.brn_warmup)
        self.records = [self.trainer.layer_record(p) for p in self.trainer.schedule.layers]
        self.params, self.momentum = [], []
        for p, role, param in _params_of(dl.learner):
            self.params.append((self.trainer.offset(p.tensors[role]), param.detach().numpy().astype(np.float32)))
            v = p.tensors.get("v" + role)
            if v is not None:
                self.momentum.append((self.trainer.offset(v), param.numel()))
        self.arena_floats = self.trainer.plan.size // 4


def plan_of(dl: DeviceLearner) -> Plan:
    return Plan(dl)


def state_fields(dl: DeviceLearner) -> dict[str, bytes]:
    """The bytes tcl_save writes, by field, from the host learner: counters, weights (with batch renormalization's
    running statistics), memory (for the CRCs the firmware prints; its fields in the same order)."""
    mem, learner = dl.memory, dl.learner
    scale = np.ones(dl.n_chan, np.float32) if mem.scale_ is None else np.broadcast_to(mem.scale_, (dl.n_chan,))
    zero = np.zeros(dl.n_chan, np.int32) if mem.zero_point_ is None else np.broadcast_to(mem.zero_point_,
                                                                                           (dl.n_chan,))
    counters = struct.pack("<4I5i", *learner.rng.state["s"], mem.size, mem.seen_, learner.experiences_seen,
                           int(mem.scale_ is not None), learner.steps_)
    weights = b"".join(p.detach().numpy().astype("<f4").tobytes() for _, _, p in _params_of(learner))
    return {"counters": counters, "weights": weights,
            "memory": (np.asarray(scale, "<f4").tobytes() + np.asarray(zero, "<i4").tobytes()
                       + mem.labels.astype(np.uint8).tobytes() + mem.buffer.tobytes())}


def slot_nbytes(fields: dict[str, bytes]) -> int:
    """Bytes of one flash slot: the payload and the 20-byte header, rounded up to 8 (tcl_learner_slot_nbytes)."""
    return (sum(len(v) for v in fields.values()) + 20 + 7) & ~7


def _params_of(learner):
    """(layer plan, role, tensor) in the firmware's parameter order (DeviceTrainer's): per layer its weight and bias
    (torch parameters), then batch renormalization's running statistics (role "running": mean and var side by side,
    a copy)."""
    from tinycl.device.arena import training_schedule
    from tinycl.model.ops import OPS

    schedule = training_schedule(learner.adaptive.spec, momentum=learner.train_cfg.momentum != 0.0)
    for p in schedule.layers:
        holder = learner.adaptive.params[p.layer.name] if p.layer.has_weights else None
        for role, key in (("w", "weight"), ("b", "bias")):
            if p.tensors[role] is not None:
                yield p, role, getattr(holder, key)
        if p.tensors["running"] is not None:
            keys = OPS[p.layer.op].state(p.layer, p.in_shape)
            yield p, "running", torch.cat([getattr(holder, k).detach().reshape(-1) for k in keys])



def _frozen(dl: DeviceLearner) -> tuple[str, str, int, int]:
    """(const arrays, the tcl_i8_layer table's entries, their number, the largest layer output in codes)."""
    arrays, entries, largest = [], [], 0
    spec, qmodel = dl.stage.spec, dl.stage.qmodel
    for i, layer in enumerate(spec.layers):
        rec = dl.records[layer.name]
        in_q, out_q = qmodel.input_quant_of(layer.name), layer.quant.output
        n_out = math.prod(spec.output_shape(layer.name))
        shape = conv_shape(spec, layer)[0]
        fields, w, bias, then, pool = None, "NULL", "NULL", 0, (0, 0, 0)
        if layer.has_weights:
            wq = layer.quant.weight
            fields = requant_fields(rec, in_q, out_q, code_offset(wq))
            data = qmodel.weights[layer.name]
            arrays.append(_array("int8_t", f"F{i}_w", data["weight"].astype(np.int16) - code_offset(wq)))
            w = f"F{i}_w"
            if "bias" in data:
                arrays.append(_array("int32_t", f"F{i}_b", data["bias"]))
                bias = f"F{i}_b"
            op = _I8_OPS[layer.op]
        elif layer.op in ("avg_pool2d", "max_pool2d"):
            op, off = _I8_OPS[layer.op], code_offset(in_q)
            pool = (rec.act_min - off, rec.act_max - off, off)
            if not (rec.then.identity and rec.then.act_min <= in_q.qmin and rec.then.act_max >= in_q.qmax):
                fields, then = requant_fields(rec.then, in_q, out_q), 1
        else:  # relu, relu6, quantize, flatten, reshape: a requantize, or nothing when the codes pass unchanged
            if rec.identity and rec.act_min <= in_q.qmin and rec.act_max >= in_q.qmax:
                continue
            op, fields = "TCL_I8_REQUANTIZE", requant_fields(rec, in_q, out_q)
        q = "{0}"
        if fields is not None:
            arrays.append(_array("int32_t", f"F{i}_m", fields["multiplier"]))
            arrays.append(_array("int32_t", f"F{i}_s", fields["shift"]))
            wz = "NULL"
            if fields["w_zero"] is not None:
                arrays.append(_array("int32_t", f"F{i}_z", fields["w_zero"]))
                wz = f"F{i}_z"
            q = (f"{{{fields['in_zero']}, {fields['out_zero']}, {fields['act_min']}, {fields['act_max']}, "
                 f"TCL_TIES_{fields['ties'].upper()}, F{i}_m, F{i}_s, {wz}, NULL}}")
        largest = max(largest, n_out)
        entries.append(f"    /* {layer.name} ({layer.op}) */\n    {{{op}, {_shape(shape)}, {q}, {w}, {bias}, "
                       f"{pool[0]}, {pool[1]}, {pool[2]}, {then}, {n_out}}},")
    count = len(entries)
    if not entries:  # C99 has no empty arrays: a table of one unused entry
        entries.append("    {0}")
    return "".join(arrays), "\n".join(entries), count, largest


def _adaptive(plan: Plan) -> tuple[str, str, str, str]:
    layers = []
    for r in plan.records:  # designated initializers: every field of tcl_layer, -1 (absent) where the record has none
        items = [f".shape = {_shape(r['shape'])}"]
        items += [f".{name} = {r.get(name, -1)}" for name, _ in ffi().typeof("tcl_layer").fields if name != "shape"]
        layers.append("    {" + ", ".join(items) + "},")
    arrays = "".join(_array("float", f"P{k}", w) for k, (_, w) in enumerate(plan.params))
    params = "\n".join(f"    {{{off}, {w.size}, P{k}}}," for k, (off, w) in enumerate(plan.params))
    momentum = "\n".join(f"    {{{off}, {n}, NULL}}," for off, n in plan.momentum) or "    {0, 0, NULL},"
    return "\n".join(layers), arrays, params, momentum


def generate(dl: DeviceLearner, plan: Plan | None = None) -> tuple[str, str]:
    """(tcl_model.h, tcl_model.c) of the learner."""
    plan = plan or Plan(dl)
    cfg, mem, learner = dl.cfg, dl.memory, dl.learner
    t = learner.train_cfg  # replay_mix resolved as the learner resolved it
    frozen_arrays, frozen_table, n_frozen, largest = _frozen(dl)
    layers, param_arrays, params, momentum = _adaptive(plan)
    input_size = math.prod(dl.stage.spec.input_shape)
    latent = mem.values_per_sample
    lq = dl.latent_quant
    cur = round(t.batch_size * (1 - t.replay_ratio)) if t.mix_rule == "ratio" else 0
    n_classes = math.prod(dl.setup.adaptive_spec.output_shape())
    mix_table = ""
    if t.mix_rule == "class_balanced":  # the host's own rounding (float64) of every share k / m the device can meet
        if t.batch_size > 65535:
            raise ConfigError(f"train.batch_size {t.batch_size}: the firmware's class-balanced mix table is uint16")
        mix_table = _array("uint16_t", "MIX_CUR", [t.mix(1, 1, k / m)[0] for m in range(1, n_classes + 1)
                                                  for k in range(m)])
    n_codes = packed_nbytes(mem.capacity * latent, mem.bits)
    scratch = max(largest, latent, 1)
    fields = state_fields(dl)
    counters = struct.unpack("<4I5i", fields["counters"])
    init_memory = mem.size > 0
    sections = {
        "NAME": cfg.model.arch.rsplit("/", 1)[-1], "INPUT_SIZE": input_size, "N_CLASSES": n_classes,
        "INPUT_SHAPE": " x ".join(map(str, dl.stage.spec.input_shape)),
        "LATENT_SHAPE": " x ".join(map(str, mem.sample_shape)),
        "STATE_REGION_BYTES": 2 * slot_nbytes(fields),
    }
    header = (TEMPLATES / "tcl_model.h").read_text()
    for k, v in sections.items():
        header = header.replace(f"@{k}@", str(v))
    mem_arrays = (_array("uint8_t", "INIT_CODES", np.frombuffer(mem.buffer.tobytes(), np.uint8))
                  + _array("uint8_t", "INIT_LABELS", mem.labels.astype(np.uint8))) if init_memory else ""
    scale = np.frombuffer(fields["memory"][: 4 * dl.n_chan], "<f4")
    zero = np.frombuffer(fields["memory"][4 * dl.n_chan: 8 * dl.n_chan], "<i4")
    first_lr = t.first_lr if t.first_lr else t.lr
    rng, (size, seen, done, calibrated, steps) = ", ".join(f"{v}u" for v in counters[:4]), counters[4:]
    source = f"""/* Generated by tinycl export from {cfg.model.arch} split at {cfg.model.split!r} ({cfg.strategy},
 * N = {mem.capacity} at {mem.bits} bit). Do not edit: export again. */
#include "tcl_learner.h"
#include "tcl_model.h"

/* ---- frozen stage: int8 weights, int32 biases and requantization records (flash) ---- */
{frozen_arrays}
static const tcl_i8_layer FROZEN[] = {{
{frozen_table}
}};

/* ---- adaptive stage: layer records with arena offsets (floats), initial fp32 weights (flash) ---- */
static const tcl_layer LAYERS[] = {{
{layers}
}};
{param_arrays}
static const tcl_param PARAMS[] = {{
{params}
}};
static const tcl_param MOMENTUM[] = {{
{momentum}
}};

/* ---- the state tcl_init starts from ---- */
static const tcl_counters INIT_COUNTERS = {{{{{{{rng}}}}}, {size}, {seen}, {done}, {calibrated}, {steps}}};
{mem_arrays}{mix_table}{_array("float", "INIT_SCALE", scale)}{_array("int32_t", "INIT_ZERO", zero)}
static const tcl_learner_def DEF = {{
    {n_frozen}, FROZEN, {input_size}, {latent}, {lq.zero_point[0] - code_offset(lq)}, {_float(lq.scale[0])},
    {len(plan.records)}, LAYERS, {len(plan.params)}, {len(plan.momentum)}, {n_classes}, PARAMS, MOMENTUM,
    {_float(t.lr)}, {_float(first_lr)}, {_float(t.momentum)}, {_float(t.weight_decay)},
    {t.epochs}, {t.batch_size}, TCL_MIX_{t.mix_rule.upper()}, {cur}, {"MIX_CUR" if mix_table else "NULL"},
    {_float(BRN_EPS)}, {_float(BRN_MOMENTUM)}, {_float(BRN_LIMITS[0])}, {_float(BRN_LIMITS[1])}, {t.brn_warmup},
    {mem.capacity}, {mem.bits}, {dl.n_chan}, {dl.chan_size}, {dl.max_new}, TCL_POLICY_{dl.cfg.memory.policy.upper()},
    {int(dl.learner.quantize_new)},
    &INIT_COUNTERS, {"INIT_CODES" if init_memory else "NULL"}, {"INIT_LABELS" if init_memory else "NULL"},
    INIT_SCALE, INIT_ZERO
}};

/* ---- RAM: the training arena ({plan.arena_floats * 4} B), frozen-stage scratch, replay memory, this experience's
 * latents ---- */
static float arena[{plan.arena_floats}];
static int8_t scratch_a[{scratch}], scratch_b[{scratch}];
static uint8_t codes[{n_codes}], labels[{mem.capacity}];
static float scale[{dl.n_chan}];
static int32_t zero[{dl.n_chan}];
static int8_t new_codes[{dl.max_new * latent}];
static uint8_t new_labels[{dl.max_new}];
static uint16_t idx_new[{dl.max_new}], idx_slots[{mem.capacity}];

static tcl_learner learner = {{&DEF, arena, scratch_a, scratch_b, codes, labels, scale, zero, new_codes, new_labels,
                              idx_new, idx_slots, 0, {{{{{{0}}}}, 0, 0, 0, 0, 0}}}};
"""
    return header, source + (TEMPLATES / "api.c").read_text()
