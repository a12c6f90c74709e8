"""ndlib: network deconvolution (Ye et al., ICLR 2020), reproduced."""
from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["deconvolve", "recalibrate", "__version__"]

if TYPE_CHECKING:
    from ndlib.convert import deconvolve
    from ndlib.recalibrate import recalibrate


def __getattr__(name: str):
    # ``import ndlib`` stays cheap (no torch): ``ndlib.deconvolve`` imports ndlib.convert on first use.
    if name == "deconvolve":
        from ndlib.convert import deconvolve

        globals()["deconvolve"] = deconvolve
        return deconvolve
    if name == "recalibrate":
        from ndlib.recalibrate import recalibrate

        globals()["recalibrate"] = recalibrate
        return recalibrate
    raise AttributeError(f"module 'ndlib' has no attribute {name!r}")
