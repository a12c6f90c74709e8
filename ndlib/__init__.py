"""ndlib: network deconvolution (Ye et al., ICLR 2020), reproduced."""
from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["deconvolve", "__version__"]

if TYPE_CHECKING:
    from ndlib.convert import deconvolve


def __getattr__(name: str):
    # ``import ndlib`` stays cheap (no torch): ``ndlib.deconvolve`` imports ndlib.convert on first use.
    if name == "deconvolve":
        from ndlib.convert import deconvolve

        globals()["deconvolve"] = deconvolve
        return deconvolve
    raise AttributeError(f"module 'ndlib' has no attribute {name!r}")
