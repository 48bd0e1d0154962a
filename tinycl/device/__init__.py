"""The device side from Python: the C runtime (tinycl.runtime: compiled on demand, loaded with cffi from tinycl.h; the
host's fast int8 kernels use it too), the arena plan
of a training step, and "device mode" training of an adaptive stage. The frozen stage on the C int8 kernels is
`tinycl.device.int8.DeviceIntegerModel` (not imported here: it depends on tinycl.quant)."""

from tinycl.device.arena import ArenaPlan, Schedule, plan_arena, training_schedule
from tinycl.device.rng import PortableRng
from tinycl.device.trainer import DeviceTrainer, device_predict
from tinycl.runtime import Library, compile_library, load_library

__all__ = ["ArenaPlan", "DeviceTrainer", "Library", "PortableRng", "device_predict", "Schedule", "compile_library",
           "load_library", "plan_arena", "training_schedule"]
