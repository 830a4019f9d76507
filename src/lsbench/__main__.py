"""``python -m lsbench`` runs the command-line interface."""

import sys

from lsbench.cli import main

sys.exit(main())
