"""``python -m automl``: the same command line as ``automl`` (for an interpreter whose
environment has no ``automl`` script on its PATH)."""

import sys

from automl.cli import main

if __name__ == "__main__":  # (imported, as the docstring tests do, it runs nothing)
    sys.exit(main())
