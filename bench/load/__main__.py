"""Entry point of `python -m bench.load`."""

import sys

from bench.load.run import main

sys.exit(main())
