"""`python -m analytics ARGS` is `flowprobe analytics ARGS`."""

import sys

from collector.cli import main

if __name__ == "__main__":
    sys.exit(main(["analytics", *sys.argv[1:]]))
