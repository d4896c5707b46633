"""``python -m kernelized.experiments.bench``: the same as ``kernelized bench``."""

import sys

from kernelized.experiments.bench import main

sys.exit(main())
