"""CWR* (Lomonaco & Maltoni; as AR1* uses it with latent replay, Pellegrini et al. 2020): consolidated head weights.

The head is the adaptive stage's last weighted layer (one output row per class; its bias, if any, is consolidated
with the same formula, as one more column of the row). Per experience: every row starts at zero and the rows of
the classes present (new data + memory) are loaded with their consolidated values; after training, each class with
new data is consolidated,

    cw_c <- (cw_c * sqrt(past_c / cur_c) + (w_c - mean)) / (sqrt(past_c / cur_c) + 1),   past_c += cur_c,

where w_c is the trained row, mean the average of the trained rows of those classes and cur_c the class's new
samples; then the head holds the consolidated rows of every class, which is what the learner is evaluated with.
"""

from __future__ import annotations

import numpy as np
import torch

from tinycl.model.build import SpecModule

__all__ = ["consolidate", "ConsolidatedHead"]


def consolidate(cw: np.ndarray, w: np.ndarray, past: np.ndarray, cur: np.ndarray,
                classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(new consolidated rows, new past counts). cw, w: (n_classes, D) float; past, cur: (n_classes,) sample counts;
    classes: (k,) int, the classes consolidated now (each with cur > 0). The mean is over w[classes]."""
    cw, past = cw.copy(), past.astype(np.float64).copy()
    mean = w[classes].mean()
    ratio = np.sqrt(past[classes] / cur[classes])[:, None]
    cw[classes] = (cw[classes] * ratio + (w[classes] - mean)) / (ratio + 1)
    past[classes] += cur[classes]
    return cw, past


class ConsolidatedHead:
    """The consolidated rows `cw_` (n_classes, D) float64 and sample counts `past_` (n_classes,) of `module`'s
    head (its last weighted layer, whose output units are the classes). Starts at zero."""

    def __init__(self, module: SpecModule):
        self.name = [ly.name for ly in module.spec.layers if ly.has_weights][-1]
        rows = self._rows(module)
        self.cw_ = np.zeros_like(rows, dtype=np.float64)
        self.past_ = np.zeros(len(rows))

    def _params(self, module: SpecModule) -> list[torch.nn.Parameter]:
        p = module.params[self.name]
        return [p.weight] + ([p.bias] if p.bias is not None else [])

    def _rows(self, module: SpecModule) -> np.ndarray:
        """(n_classes, D) float64: each class's weights (flattened) and bias, side by side."""
        cols = [t.detach().double().reshape(len(t), -1).numpy() for t in self._params(module)]
        return np.concatenate(cols, axis=1)

    def _write(self, module: SpecModule, rows: np.ndarray) -> None:
        start = 0
        with torch.no_grad():
            for t in self._params(module):
                size = t[0].numel()
                t.copy_(torch.as_tensor(rows[:, start: start + size].reshape(t.shape), dtype=t.dtype))
                start += size

    def load(self, module: SpecModule, classes: np.ndarray) -> None:
        """Before training: zero rows, except the consolidated rows of `classes` (the classes present)."""
        rows = np.zeros_like(self.cw_)
        rows[classes] = self.cw_[classes]
        self._write(module, rows)

    def update(self, module: SpecModule, y_new: np.ndarray) -> None:
        """After training on new labels y_new: consolidate their classes, then put every consolidated row in."""
        cur = np.bincount(y_new, minlength=len(self.cw_)).astype(np.float64)
        self.cw_, self.past_ = consolidate(self.cw_, self._rows(module), self.past_, cur, np.flatnonzero(cur))
        self._write(module, self.cw_)

    def state_dict(self) -> dict:
        return {"cw": self.cw_.copy(), "past": self.past_.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.cw_, self.past_ = state["cw"].copy(), state["past"].copy()
