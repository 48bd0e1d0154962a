"""Continual-learning metrics from the accuracy matrix R[i, j]: accuracy on the test data that experience j
introduced, after training on experience i (NaN where experience j introduced no test data).

Conventions (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018): one head over all classes seen, no task id.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AccuracyMatrix", "summarize"]


class AccuracyMatrix:
    """Accumulates R and the accuracy on all test data seen so far, one experience at a time, and how many classes
    the learner predicts on that data against how many it holds (a learner that predicts one class is collapsed)."""

    def __init__(self, n_experiences: int):
        self.R = np.full((n_experiences, n_experiences), np.nan)
        self.seen_accuracy = np.full(n_experiences, np.nan)  # accuracy on the union of seen test data
        self.predicted = np.full((n_experiences, 2), np.nan)  # classes predicted on it, classes in it
        self.done = 0  # rows filled

    def update(self, i: int, row: np.ndarray, seen_accuracy: float, predicted: tuple[int, int] = (np.nan, np.nan)
               ) -> None:
        self.R[i] = row
        self.seen_accuracy[i] = seen_accuracy
        self.predicted[i] = predicted
        self.done = i + 1

    def result(self) -> dict[str, float]:
        return summarize(self.R[: self.done], self.seen_accuracy[: self.done])

    def collapsed(self) -> list[int]:
        """Experiences (from 1) after which the learner predicted one class for every seen test sample of two or
        more classes: a finite loss that no longer tells classes apart (e.g. too large an lr)."""
        return [i + 1 for i, (p, n) in enumerate(self.predicted[: self.done]) if p == 1 and n > 1]

    def reset(self) -> None:
        self.__init__(len(self.R))


def summarize(R: np.ndarray, seen_accuracy: np.ndarray) -> dict[str, float]:
    """final_accuracy: accuracy on all test data of the classes seen, after the last experience (sample
    weighted). average_incremental_accuracy: mean of that over experiences. forgetting: mean over earlier
    experiences j of max_{l<T} R[l, j] - R[T, j]. backward_transfer: mean over j<T of R[T, j] - R[j, j].
    final_mean_task_accuracy: mean of R[T, j] over experiences with test data."""
    T = len(R) - 1
    if T < 0:
        return {}
    last = R[T]
    cols = [j for j in range(T) if not np.isnan(R[j, j])]
    forgetting = [np.nanmax(R[j:T, j]) - last[j] for j in cols]
    bwt = [last[j] - R[j, j] for j in cols]
    return {
        "final_accuracy": float(seen_accuracy[T]),
        "average_incremental_accuracy": float(np.mean(seen_accuracy)),
        "forgetting": float(np.mean(forgetting)) if forgetting else 0.0,
        "backward_transfer": float(np.mean(bwt)) if bwt else 0.0,
        "final_mean_task_accuracy": float(np.nanmean(last)) if not np.all(np.isnan(last)) else float("nan"),
    }
