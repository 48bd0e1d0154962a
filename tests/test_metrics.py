import numpy as np
import pytest

from tinycl.metrics import AccuracyMatrix, summarize


def test_hand_computed_matrix():
    R = np.array([[0.9, np.nan, np.nan],
                  [0.6, 0.8, np.nan],
                  [0.3, 0.7, 0.95]])
    seen = np.array([0.9, 0.7, 0.65])
    m = summarize(R, seen)
    assert m["final_accuracy"] == pytest.approx(0.65)
    assert m["average_incremental_accuracy"] == pytest.approx((0.9 + 0.7 + 0.65) / 3)
    # forgetting: j=0: max(0.9, 0.6) - 0.3 = 0.6; j=1: 0.8 - 0.7 = 0.1
    assert m["forgetting"] == pytest.approx(0.35)
    # backward transfer: (0.3 - 0.9 + 0.7 - 0.8) / 2
    assert m["backward_transfer"] == pytest.approx(-0.35)
    assert m["final_mean_task_accuracy"] == pytest.approx((0.3 + 0.7 + 0.95) / 3)


def test_experiences_without_test_data_are_skipped():
    R = np.array([[0.9, np.nan], [0.5, np.nan]])
    m = summarize(R, np.array([0.9, 0.5]))
    assert m["forgetting"] == pytest.approx(0.4)


def test_accumulator():
    acc = AccuracyMatrix(2)
    acc.update(0, np.array([1.0, np.nan]), 1.0)
    assert acc.result()["final_accuracy"] == 1.0 and acc.result()["forgetting"] == 0.0
    acc.update(1, np.array([0.5, 1.0]), 0.75)
    assert acc.result()["forgetting"] == pytest.approx(0.5)
    acc.reset()
    assert acc.done == 0
