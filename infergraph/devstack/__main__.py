"""``python -m infergraph.devstack up|status|enqueue|down``."""

import sys

from infergraph.devstack import main

sys.exit(main())
