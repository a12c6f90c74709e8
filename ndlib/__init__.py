"""ndlib: network deconvolution (Ye et al., ICLR 2020), reproduced."""
__version__ = "0.1.0"
