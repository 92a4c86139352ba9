"""``python -m tcpkit``: the same command as the ``tcpkit`` entry point."""

import sys

from tcpkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
