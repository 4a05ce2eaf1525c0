"""``python -m infergraph.events``: the S3 events bridge as a long-running service."""

import sys

from infergraph.events.service import main

sys.exit(main())
