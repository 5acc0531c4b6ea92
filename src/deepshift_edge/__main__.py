"""``python -m deepshift_edge``: the command line (deepshift_edge.tools.cli)."""
import sys

from .tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
