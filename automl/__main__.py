"""``python -m automl``: the same command line as ``automl`` (for an interpreter whose
environment has no ``automl`` script on its PATH)."""

import sys

from automl.cli import main

sys.exit(main())
