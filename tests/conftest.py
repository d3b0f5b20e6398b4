import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The firmware is laid out for a board (firmware/ is the device's root), so tests see it the same way.
sys.path.insert(0, str(ROOT / "firmware"))

# store_db: the store suite runs on SQLite and on a PostgreSQL server the tests start
pytest_plugins = ["tests.store_backends"]
