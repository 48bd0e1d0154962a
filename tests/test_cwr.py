"""CWR*: the consolidation formula on a hand-computed case, and the head a learner trains and is evaluated with."""

from __future__ import annotations

import numpy as np
import torch

from tinycl.learners.cwr import ConsolidatedHead, consolidate
from tinycl.model.build import build
from tinycl.model.spec import Layer, ModelSpec


def test_consolidation_by_hand():
    cw = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 3.0]])  # consolidated rows of 3 classes
    w = np.array([[3.0, 4.0], [1.0, 1.0], [9.0, 9.0]])  # the rows after training
    past, cur = np.array([4.0, 0.0, 9.0]), np.array([1.0, 1.0, 0.0])
    new, past_new = consolidate(cw, w, past, cur, np.array([0, 1]))
    # mean of the trained rows of classes 0 and 1: (3 + 4 + 1 + 1) / 4 = 2.25
    # class 0: sqrt(4 / 1) = 2 -> ([1, 2] * 2 + [3, 4] - 2.25) / 3; class 1 (new): [1, 1] - 2.25; class 2 kept
    np.testing.assert_allclose(new, [[2.75 / 3, 5.75 / 3], [-1.25, -1.25], [3.0, 3.0]])
    np.testing.assert_array_equal(past_new, [5.0, 1.0, 9.0])
    np.testing.assert_array_equal(cw, [[1.0, 2.0], [0.0, 0.0], [3.0, 3.0]])  # inputs untouched


def test_head_loads_present_classes_and_ends_consolidated():
    module = build(ModelSpec((4,), (Layer("fc", "linear", channels=5, activation="relu"),
                                    Layer("head", "linear", channels=3))), generator=torch.Generator().manual_seed(0))
    head = ConsolidatedHead(module)
    head.cw_[:] = np.arange(18, dtype=np.float64).reshape(3, 6)  # 5 weights + 1 bias per class
    head.load(module, np.array([0, 2]))
    np.testing.assert_array_equal(module.params["head"].weight.detach().numpy(), [[0, 1, 2, 3, 4], [0] * 5,
                                                                                  [12, 13, 14, 15, 16]])
    np.testing.assert_array_equal(module.params["head"].bias.detach().numpy(), [5, 0, 17])
    with torch.no_grad():
        module.params["head"].weight.add_(1.0)  # "training"
    head.update(module, np.array([2, 2, 2]))  # only class 2 had new samples: a new class, cw = w - mean
    trained = np.array([13, 14, 15, 16, 17, 17], np.float64)
    np.testing.assert_allclose(head.cw_[2], trained - trained.mean())
    np.testing.assert_array_equal(head.cw_[0], np.arange(6))  # present but no new data: kept
    rows = np.concatenate([module.params["head"].weight.detach().numpy(),
                           module.params["head"].bias.detach().numpy()[:, None]], axis=1)
    np.testing.assert_allclose(rows, head.cw_, rtol=1e-6)  # evaluated with the consolidated rows
