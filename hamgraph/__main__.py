"""`python -m hamgraph ...` is the `hamgraph` command."""

import sys

from hamgraph.cli import main

sys.exit(main())
