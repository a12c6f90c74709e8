"""``python -m ndlib ...``: see :mod:`ndlib.cli`."""
import sys

from ndlib.cli import main

if __name__ == "__main__":
    sys.exit(main())
