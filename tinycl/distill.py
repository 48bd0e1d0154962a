"""Dataset distillation by Distribution Matching (Zhao & Bilen, WACV 2023), one class at a time.

For a class with real samples X (n, *shape), the synthetic set S (m, *shape) starts as m random real samples and
is optimised so that, under a freshly sampled random embedding network psi at every iteration,

    loss = sum_features (mean_i psi(A(X_batch))_i - mean_j psi(A(S))_j) ** 2

falls, A being the same differentiable augmentation (same random parameters) on both sides (DSA's "siamese"
augmentation: one transform per iteration, chosen at random). SGD on S with lr 1.0 and momentum 0.5, as the
paper. Only forward passes of random networks and the gradient to S are needed: no network is trained.

The embedding networks are built from layer records (tinycl.model.spec), never described twice:
- "model": the network that reads the data, without its output layer (in latent space: the adaptive stage),
  with fresh He-normal weights and zero biases each iteration;
- "convnet": DM's ConvNet without normalisation (conv 3x3 + ReLU + 2x2 average pool, 3 blocks, width 64);
- "mlp": two ReLU layers of 128 units.
Works on any sample shape: images and feature maps (C, H, W), sensor windows (C, T), feature vectors (D,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from tinycl.errors import ConfigError
from tinycl.model.build import SpecModule
from tinycl.model.spec import Layer, ModelSpec

__all__ = ["DistillConfig", "AUGMENTS", "EMBEDDERS", "class_budget", "embedder_spec", "convnet_spec", "mlp_spec",
           "RandomEmbedder", "resolve_augment", "augment", "DSA", "SIGNAL", "distill_class", "distill", "matching_loss"]

AUGMENTS = ("auto", "none", "image", "image_flip", "signal", "spectrogram")
EMBEDDERS = ("model", "convnet", "mlp")


@dataclass(frozen=True)
class DistillConfig:
    space: str = "latent"  # "latent": distil the frozen stage's outputs; "input": distil raw inputs
    ipc: int | None = None  # synthetic samples per class; None: `fraction` of the class's training samples
    fraction: float = 0.01  # share of a class's training samples kept as synthetic ones (>= 1 per class)
    budget: int | None = None  # synthetic samples in all, shared by the classes seen (DistilledReplay); None: ipc
    iterations: int = 200  # optimisation steps per class (DM: 20,000 on a GPU; a device cannot afford that)
    lr: float = 1.0  # SGD on the synthetic samples (DM's value)
    momentum: float = 0.5  # (DM's value)
    real_batch: int = 256  # real samples drawn per iteration (DM's value)
    embedder: str = "model"  # random embedding nets: model, convnet, mlp
    augment: str = "auto"  # auto, none, image (DSA: crop/scale/rotate/color), image_flip (+ flip),
    # signal (time shift/amplitude/noise), spectrogram (shift along frames/gain/noise)

    def __post_init__(self):
        if self.space not in ("latent", "input"):
            raise ConfigError(f"distill.space {self.space!r}; allowed: latent, input")
        if self.ipc is not None and self.ipc < 1:
            raise ConfigError(f"distill.ipc must be >= 1 or unset, got {self.ipc}")
        if self.budget is not None and (self.budget < 1 or self.ipc is not None):
            raise ConfigError(f"distill.budget must be >= 1 and excludes distill.ipc, got budget {self.budget} and "
                              f"ipc {self.ipc}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"distill.fraction must be in (0, 1], got {self.fraction}")
        if self.iterations < 0 or self.real_batch < 1:
            raise ConfigError("distill.iterations must be >= 0 and distill.real_batch >= 1")
        if self.lr <= 0 or not 0 <= self.momentum < 1:
            raise ConfigError("distill.lr must be > 0 and distill.momentum in [0, 1)")
        if self.embedder not in EMBEDDERS:
            raise ConfigError(f"distill.embedder {self.embedder!r}; allowed: {', '.join(EMBEDDERS)}")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"distill.augment {self.augment!r}; allowed: {', '.join(AUGMENTS)}")


def class_budget(n_real: int, cfg: DistillConfig) -> int:
    """Synthetic samples for a class with n_real training samples: cfg.ipc, else round(fraction * n_real),
    at least 1 and at most n_real."""
    m = cfg.ipc if cfg.ipc is not None else max(1, round(cfg.fraction * n_real))
    return int(min(m, n_real))


# -- embedding networks as layer records -------------------------------------------------------------------------
def mlp_spec(shape: tuple[int, ...], hidden: int = 128, depth: int = 2) -> ModelSpec:
    layers = [Layer("flatten", "flatten")]
    layers += [Layer(f"fc{i + 1}", "linear", channels=hidden, activation="relu") for i in range(depth)]
    return ModelSpec(tuple(shape), tuple(layers), name="dm_mlp")


def convnet_spec(shape: tuple[int, ...], width: int = 64, depth: int = 3) -> ModelSpec:
    """DM's ConvNet (Gidaris & Komodakis style, without instance norm): `depth` blocks of conv 3x3 + ReLU + 2x2
    average pool, then flatten. (C, T) signals are read as (C, 1, T) with 1x3 kernels; vectors get an MLP."""
    if len(shape) == 1:
        return mlp_spec(shape)
    layers: list[Layer] = []
    if len(shape) == 2:
        layers.append(Layer("as_image", "reshape", shape=(shape[0], 1, shape[1])))
        h, w = 1, shape[1]
    else:
        h, w = shape[1], shape[2]
    for i in range(depth):
        k = (3 if h > 1 else 1, 3 if w > 1 else 1)
        layers.append(Layer(f"conv{i + 1}", "conv2d", channels=width, kernel=k, padding="same", activation="relu"))
        p = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
        if p != (1, 1):
            layers.append(Layer(f"pool{i + 1}", "avg_pool2d", kernel=p, stride=p))
            h, w = h // p[0], w // p[1]
    layers.append(Layer("flatten", "flatten"))
    return ModelSpec(tuple(shape), tuple(layers), name="dm_convnet")


def embedder_spec(kind: str, model: ModelSpec | None, shape: tuple[int, ...]) -> ModelSpec:
    """The random embedding network for samples of `shape`. kind "model": `model` (whose input shape must be
    `shape`) up to, not including, its last weighted layer; if nothing weighted is left, a ConvNet/MLP."""
    if kind not in EMBEDDERS:
        raise ConfigError(f"distill.embedder {kind!r}; allowed: {', '.join(EMBEDDERS)}")
    if kind == "mlp":
        return mlp_spec(shape)
    if kind == "model" and model is not None:
        if tuple(model.input_shape) != tuple(shape):
            raise ConfigError(f"embedder model reads {model.input_shape}, but the samples are {shape}")
        weighted = [i for i, ly in enumerate(model.layers) if ly.has_weights]
        if len(weighted) >= 2:
            layers = [replace(ly, quant=None) for ly in model.layers[: weighted[-1]]]
            return model.with_layers(layers, name=f"{model.name}[embed]")
    return convnet_spec(shape)


class RandomEmbedder:
    """A network of `spec` whose weights are redrawn (He normal, zero biases) by `resample`; output flattened.
    He init keeps the activations' scale through ReLU layers, as DM's normalised ConvNet does."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.module = SpecModule(spec).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def resample(self, generator: torch.Generator) -> None:
        with torch.no_grad():
            for holder in self.module.params.values():
                w = holder.weight
                fan_in = math.prod(w.shape[1:])
                w.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
                if holder.bias is not None:
                    holder.bias.zero_()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x).flatten(1)


# -- differentiable augmentation, same parameters for real and synthetic samples ------------------------------------
def resolve_augment(kind: str, shape: tuple[int, ...], space: str) -> str:
    """"auto": in input space, image transforms for images (C, H, W with H, W >= 8) and time shift / amplitude /
    noise for sensor windows ((C, T), or (C, 1, T) as HAR's are stored); none in latent space (feature maps are
    not images) and for feature vectors. Log-mel spectrograms look like images by shape: their configs name
    "spectrogram"."""
    if kind != "auto":
        return kind
    if space == "input" and (len(shape) == 2 or (len(shape) == 3 and shape[1] == 1)):
        return "signal"
    if space == "input" and len(shape) == 3 and min(shape[1:]) >= 8:
        return "image"
    return "none"


# DSA (Zhao & Bilen 2021) draws one of its transforms per iteration ("single" mode): crop, scale, rotate, flip,
# color. Signals get their own: a circular time shift, an amplitude (or, for log-mels, an additive gain), noise.
_TRANSFORMS = {"none": (), "image": ("scale", "crop", "rotate", "color"),
               "image_flip": ("scale", "crop", "rotate", "color", "flip"),
               "signal": ("shift", "amplitude", "noise"), "spectrogram": ("time_shift", "gain", "noise")}
DSA = {"scale": 1.2, "rotate": 15.0, "crop": 0.125, "flip": 0.5, "brightness": 1.0, "saturation": 2.0,
       "contrast": 0.5}
SIGNAL = {"shift": 1 / 8, "amplitude": 0.2, "gain": 0.2, "noise": 0.05}  # noise/gain: in normalised units


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=gen))


def _color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """DSA's color: brightness (+-brightness/2), saturation (x0..saturation around the channel mean), contrast
    (x0.5..1.5 around the sample mean), one draw each for the whole batch."""
    x = x + (_uniform(gen, 0, 1) - 0.5) * DSA["brightness"]
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * (_uniform(gen, 0, 1) * DSA["saturation"]) + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (_uniform(gen, 0, 1) + DSA["contrast"]) + m


def _affine(x: torch.Tensor, name: str, gen: torch.Generator) -> torch.Tensor:
    """DSA's scale (x1/1.2..1.2 per axis), crop (translate by up to 1/8 of the size) or rotate (+-15 degrees)."""
    theta = torch.eye(2, 3)
    if name == "scale":
        r = DSA["scale"]
        theta[0, 0], theta[1, 1] = _uniform(gen, 1 / r, r), _uniform(gen, 1 / r, r)
    elif name == "crop":  # normalised coordinates span 2, so 1/8 of the size is 0.25
        c = 2 * DSA["crop"]
        theta[0, 2], theta[1, 2] = _uniform(gen, -c, c), _uniform(gen, -c, c)
    else:
        a = math.radians(_uniform(gen, -DSA["rotate"], DSA["rotate"]))
        theta[:2, :2] = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def _signal(x: torch.Tensor, name: str, gen: torch.Generator) -> torch.Tensor:
    if name == "amplitude":
        return x * _uniform(gen, 1 - SIGNAL["amplitude"], 1 + SIGNAL["amplitude"])
    if name == "gain":  # a louder or quieter clip shifts every log-mel value alike
        return x + _uniform(gen, -SIGNAL["gain"], SIGNAL["gain"])
    if name == "noise":
        return x + SIGNAL["noise"] * torch.randn(x.shape, generator=gen)
    axis = -2 if name == "time_shift" else -1  # log-mels are (1, frames, bins); sensor windows (C, [1,] T)
    n = x.shape[axis]
    return torch.roll(x, shifts=int(round(_uniform(gen, -n * SIGNAL["shift"], n * SIGNAL["shift"]))), dims=axis)


def augment(x: torch.Tensor, kind: str, seed: int) -> torch.Tensor:
    """One random transform of `kind` (see _TRANSFORMS; DSA's parameters for images), its parameters drawn from
    `seed` and shared by the whole batch: equal seeds give the same transform, so real and synthetic batches are
    augmented alike (DSA's siamese augmentation). x: (N, *shape) float32, differentiable."""
    names = _TRANSFORMS[kind]
    if not names:
        return x
    gen = torch.Generator().manual_seed(seed)
    name = names[int(torch.randint(len(names), (), generator=gen))]
    if name == "flip":
        return torch.flip(x, dims=[-1]) if _uniform(gen, 0, 1) < DSA["flip"] else x
    if name == "color":
        return _color(x, gen) if x.shape[1] == 3 else x + (_uniform(gen, 0, 1) - 0.5) * DSA["brightness"]
    if name in ("scale", "crop", "rotate"):
        return _affine(x, name, gen)
    return _signal(x, name, gen)


# -- distribution matching --------------------------------------------------------------------------------------
def _loss(embed: RandomEmbedder, real: torch.Tensor, syn: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        target = embed(real).mean(0)
    return ((target - embed(syn).mean(0)) ** 2).sum()


def distill_class(x: np.ndarray, n_syn: int, embed_spec: ModelSpec, cfg: DistillConfig,
                  rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """Synthetic samples (n_syn, *shape) float32 for one class's real samples x (n, *shape), and the matching
    loss at each iteration. Values stay inside the real data's [min, max], so the input's own quantizer (or the
    replay memory's) represents them."""
    x = np.asarray(x, dtype=np.float32)
    if not 1 <= n_syn <= len(x):
        raise ConfigError(f"cannot distil {len(x)} samples into {n_syn}; need 1 <= samples <= {len(x)}")
    kind = resolve_augment(cfg.augment, x.shape[1:], cfg.space)
    real_all = torch.as_tensor(x)
    syn = torch.tensor(x[rng.choice(len(x), size=n_syn, replace=False)], requires_grad=True)
    lo, hi = float(x.min()), float(x.max())
    opt = torch.optim.SGD([syn], lr=cfg.lr, momentum=cfg.momentum)
    embed = RandomEmbedder(embed_spec)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    losses = []
    for _ in range(cfg.iterations):
        embed.resample(gen)
        idx = rng.choice(len(x), size=min(cfg.real_batch, len(x)), replace=False)
        seed = int(rng.integers(2**62))
        loss = _loss(embed, augment(real_all[idx], kind, seed), augment(syn, kind, seed))
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            syn.clamp_(lo, hi)
        losses.append(float(loss.detach()))
    return syn.detach().numpy().copy(), losses


def matching_loss(x_real: np.ndarray, x_syn: np.ndarray, embed_spec: ModelSpec, n_nets: int = 8,
                  seed: int = 0) -> float:
    """Mean DM loss over `n_nets` random embedding nets drawn from `seed` (none of the nets distillation used,
    if seeds differ), all real samples, no augmentation: how well the synthetic set matches the real one."""
    embed = RandomEmbedder(embed_spec)
    gen = torch.Generator().manual_seed(seed)
    real, syn = torch.as_tensor(np.asarray(x_real, np.float32)), torch.as_tensor(np.asarray(x_syn, np.float32))
    total = 0.0
    with torch.no_grad():
        for _ in range(n_nets):
            embed.resample(gen)
            total += float(_loss(embed, real, syn))
    return total / n_nets


def distill(x: np.ndarray, y: np.ndarray, cfg: DistillConfig, embed_spec: ModelSpec,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[int, dict]]:
    """Distil every class in y separately. Returns (x_syn (m, *shape) float32, y_syn (m,) int64, sorted by
    class, and per class {"real": n, "synthetic": m_c, "first_loss", "last_loss"})."""
    xs, ys, info = [], [], {}
    for c in np.unique(y).tolist():
        xc = x[y == c]
        m = class_budget(len(xc), cfg)
        syn, losses = distill_class(xc, m, embed_spec, cfg, rng)
        xs.append(syn)
        ys.append(np.full(m, c, np.int64))
        info[int(c)] = {"real": int(len(xc)), "synthetic": m,
                        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}
    if not xs:
        return np.zeros((0, *x.shape[1:]), np.float32), np.zeros(0, np.int64), info
    return np.concatenate(xs), np.concatenate(ys), info
