"""Print the lowest versions pyproject.toml allows for the runtime dependencies, as pins.

``make test-lowest`` installs these beside the dev tools and runs the test suite, so a
floor that no longer works (an API the code uses arrived later) fails CI. Every runtime
dependency must declare a floor with ``>=``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib


def main() -> int:
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    pins = []
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([^,;\s]+)\s*(?:,.*)?", requirement)
        if match is None:
            print(f"lowest.py: {requirement!r} declares no '>=' floor; give it one", file=sys.stderr)
            return 1
        pins.append(f"{match[1]}=={match[2]}")
    print(" ".join(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main())
