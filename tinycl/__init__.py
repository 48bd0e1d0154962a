"""tinycl: on-device continual learning for microcontroller-class devices.

The data flow, one module each: data -> scenarios -> frozen stage (int8) -> latents -> replay memory (Q-bit)
-> adaptive stage + learner -> metrics -> device cost -> C export."""

__all__ = ["__version__"]
__version__ = "0.1.0"
