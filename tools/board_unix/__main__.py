import sys

from tools.board_unix import __doc__, build
from pathlib import Path

if len(sys.argv) not in (2, 3):
    sys.exit(__doc__)
print(build(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) == 3 else "build/board-unix")))
