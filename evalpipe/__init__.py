"""evalpipe: paired accuracy evaluation of inference-engine parallel layouts.

Public entry points live in :mod:`evalpipe.api`; this module stays import-light so that
``evalpipe --help`` never pulls in vllm or torch.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
