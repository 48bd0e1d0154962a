"""The C exporter: a configured learner as a self-contained C99 project that keeps learning on a microcontroller.

    dl = DeviceLearner.build(cfg)            # what `tinycl run` builds, in device mode (checks the options first)
    fit(dl, get_target("mps2-an386"))        # the cost model's buffers on the board, one line if one overflows
    export_project(dl, Path("fw"))           # src/ (runtime + generated tables), main.c, Makefile, scenario.bin
    footprint(Path("fw"))                    # flash / RAM of the Cortex-M4F ELF
    reference_lines(dl)                      # what `make -C fw run-qemu` must print, from the host learner

See docs/firmware.md.
"""

from tinycl.export.learner import DeviceLearner, input_codes, unsupported_ops
from tinycl.export.project import Footprint, export_project, fit, footprint, missing_tools, predicted
from tinycl.export.scenario import reference_lines, write_scenario

__all__ = ["DeviceLearner", "Footprint", "export_project", "fit", "footprint", "input_codes", "missing_tools",
           "predicted", "reference_lines", "unsupported_ops", "write_scenario"]
