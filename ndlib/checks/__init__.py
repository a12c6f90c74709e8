"""Acceptance checks: programs that prove the library works on a given machine, not library code.

``ndlib.checks.gpu`` is ``make gpu-check`` (``python -m ndlib gpu-check``, ``python -m
ndlib.checks.gpu``): on one CUDA GPU, with the machine's own Python and torch and
``PYTHONPATH=.``, it compares every deconvolution layer in float32 with float64 on the CPU, runs
every model in float32, bfloat16 autocast and channels_last, times the Table 1 benchmark and
trains one epoch of VGG-16, and writes JSON files and a one-page summary.  Its steps 1 and 2 are
in ``ndlib.checks.compare``, what the steps share in ``ndlib.checks.common``.

The checks import the library; the library does not import them (``ndlib.cli`` only names
``ndlib.checks.gpu`` to register the ``gpu-check`` subcommand).  Importing the package imports
none of its modules, so ``python -m ndlib.checks.gpu`` runs the module once.
"""
