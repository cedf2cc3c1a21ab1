"""Container health check: the consumer loop touches NEUROCYTE_HEALTH_FILE after every poll;
healthy means it did so recently (a stuck or crashed loop turns the task unhealthy).

    python -m neurocyte_shared.messaging.health        exit 0 if healthy, 1 otherwise
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

DEFAULT_FILE = "/tmp/neurocyte-alive"


def touch() -> None:
    path = os.environ.get("NEUROCYTE_HEALTH_FILE")
    if path:
        Path(path).touch()


def main() -> int:
    path = Path(os.environ.get("NEUROCYTE_HEALTH_FILE", DEFAULT_FILE))
    max_age = float(os.environ.get("NEUROCYTE_HEALTH_MAX_AGE_S", "300"))
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        print(f"unhealthy: {path} missing (the consumer loop has not polled yet)")
        return 1
    if age > max_age:
        print(f"unhealthy: last poll {age:.0f} s ago")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
