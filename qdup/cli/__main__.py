"""`python -m qdup.cli`: the same as the `qdup` command."""

import sys

from qdup.cli.main import main

sys.exit(main())
