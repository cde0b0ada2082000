"""`python -m restorer_core ...`: see restorer_core.cli."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
