"""Learners: `partial_fit(experience) -> self`, `predict(x)`."""

from tinycl.learners.base import Learner, TrainConfig
from tinycl.learners.distilled import DistilledReplay
from tinycl.learners.replay import Joint, LatentReplay, RawReplay

__all__ = ["Learner", "TrainConfig", "Joint", "LatentReplay", "RawReplay", "DistilledReplay"]
