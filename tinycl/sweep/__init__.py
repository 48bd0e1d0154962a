"""Design-space sweeps: a grid file of run configs (grid.py), run as Ray tasks sharing data, set-up and latents
(engine.py), and one table and Pareto plot of the results (results.py). `tinycl sweep` and `tinycl compare`."""

from tinycl.sweep.engine import run_sweep
from tinycl.sweep.grid import Grid, Trial, load_grid
from tinycl.sweep.results import device_bytes, pareto, plot_pareto, rows_from_results, write_tables

__all__ = ["Grid", "Trial", "load_grid", "run_sweep", "device_bytes", "pareto", "plot_pareto", "rows_from_results",
           "write_tables"]
