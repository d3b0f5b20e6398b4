"""`python -m headend`: the same command line as the `headend` script."""

import sys

from headend.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
