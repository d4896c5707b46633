import sys

from kernelized.cli import main

sys.exit(main())
