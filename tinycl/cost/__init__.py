"""Device cost model: will a learner fit a device, and what do its learning steps cost there?

`estimate(Workload(...), get_target("vega"))` -> CostReport (bytes per memory tier, MACs, latency, energy,
battery lifetime); `format_report` renders it. See docs/cost_model.md.
"""

from tinycl.cost.model import Battery, CostReport, estimate
from tinycl.cost.report import format_report, format_summary
from tinycl.cost.targets import TARGETS, Target, Tier, get_target
from tinycl.cost.workload import Workload, from_config, paper_workload

__all__ = ["Battery", "CostReport", "estimate", "format_report", "format_summary", "TARGETS", "Target", "Tier",
           "get_target", "Workload", "from_config", "paper_workload"]
