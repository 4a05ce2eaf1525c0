"""One retry delay for every AWS call that is resent: exponential backoff with full jitter.

Full jitter (a uniform draw below the exponential cap) spreads the retries of many
workers throttled at the same moment, which fixed delays would send back in step.
"""

from __future__ import annotations

import random


def jittered_delay(attempt: int, base: float = 0.05, cap: float = 5.0) -> float:
    """Seconds to wait before retry ``attempt`` (0 for the first retry)."""
    return random.uniform(0, min(cap, base * 2**attempt))
