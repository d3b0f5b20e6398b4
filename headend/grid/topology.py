"""Reading the grid topology from CSV: one row per meter with its feeder and transformer area.

```csv
meter,feeder,area,important
000000000001,F10,Area 10-1,0
000000000002,F10,Area 10-1,1
```

``important`` (0/1, optional) marks customers told first and earlier about planned outages
(hospitals, water works...); protected accounts and meters count as important anyway.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from headend.store import InvalidInput

__all__ = ["read_grid_csv", "COLUMNS"]

COLUMNS = ("meter", "feeder", "area", "important")


def read_grid_csv(source: str | Path | io.TextIOBase) -> list[tuple[str, str, str, str]]:
    """Rows (meter, feeder, area, important) of a grid CSV; InvalidInput names the line that is wrong."""
    if isinstance(source, (str, Path)):
        try:
            text = Path(source).read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise InvalidInput(f"grid file {source} does not exist") from None
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"grid file {source} is not UTF-8 text: {exc}") from None
        fh: io.TextIOBase = io.StringIO(text)
    else:
        fh = source
    reader = csv.DictReader(fh)
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS[:3] if c not in header]
    if missing:
        raise InvalidInput(f"grid CSV needs the columns {', '.join(COLUMNS[:3])} (and optionally important);"
                           f" missing {', '.join(missing)}")
    reader.fieldnames = header
    rows = []
    for r in reader:
        if not any((v or "").strip() for v in r.values() if isinstance(v, str)):
            continue
        rows.append((str(r["meter"] or "").strip(), str(r["feeder"] or "").strip(), str(r["area"] or "").strip(),
                     str(r.get("important") or "0").strip()))
    if not rows:
        raise InvalidInput("the grid CSV has no meter rows")
    return rows
