"""The event log kept packed in RAM (meter.events): every record reads back as it was added, under
CPython and under the micropython binary, whose small ints are what a board's are; the stored
form is the one older firmware wrote, so its records load."""

import json

from meter import disrec, events
from meter.events import Events
from meter.powerup import load_events, unpack_events
from tests.mpy import run_micropython

# a purchase that took a balance from below zero, a trip by the meter itself (operator
# 0xFFFFFFFF: past a 32-bit board's small ints), a token, a freeze
RECORDS = [
    (events.PURCHASE, (86400, 7, 5000, -1234, 3766, 99999999)),
    (events.TRIP, (86401, events.METER, 123456789, 0)),
    (events.TOKEN, (86402, 0x12, 0xFFFFFF, -5000, 100, -4900)),
    (events.FREEZE, (86400, 123456789, 1, 2, 3, 4)),
    (events.FAULT, (86403, events.CRASH, 0xDEADBEEF)),
]

CHECK = """
import json
from meter import disrec, events
e = events.Events()
for kind, rec in json.loads(%r):
    e.add(kind, tuple(rec))
print(json.dumps([disrec.last(e, kind, 1) for kind, _ in json.loads(%r)]))
"""


def _log(records=RECORDS):
    e = Events()
    for kind, rec in records:
        e.add(kind, rec)
    return e


def test_every_record_reads_back_as_added_on_cpython_and_micropython():
    e = _log()
    assert [disrec.last(e, kind, 1) for kind, _ in RECORDS] == [list(rec) for _, rec in RECORDS]
    text = json.dumps(RECORDS)
    r = run_micropython(CHECK % (text, text))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == [list(rec) for _, rec in RECORDS]


def test_values_past_32_bits_and_times_before_the_epoch_are_kept_whole():
    # a record moved from the 2000 epoch may fall before the meter epoch; stored records were
    # written in 8-byte fields where a value needed them, and read back whole
    e = _log([(events.PURCHASE, (10, 1, 100, -900, -800, 2 ** 40)), (events.TRIP, (-86400, 1, 2 ** 33, 0))])
    e.add(events.PURCHASE, (20, 2, 100, -800, -700, 5))
    assert disrec.last(e, events.PURCHASE, 1) == [20, 2, 100, -800, -700, 5]
    assert disrec.last(e, events.PURCHASE, 2) == [10, 1, 100, -900, -800, 2 ** 40]
    assert disrec.last(e, events.TRIP, 1) == [-86400, 1, 2 ** 33, 0]


def test_ten_kept_per_kind_newest_first_and_counted():
    e = Events()
    for i in range(13):
        e.add(events.PROGRAM, (i, 1, 0x04000401))
    assert e.counts[events.PROGRAM] == 13
    assert [r[0] for r in e.records(events.PROGRAM)] == list(range(12, 2, -1))
    assert disrec.last(e, events.PROGRAM, 10) == [3, 1, 0x04000401] and disrec.last(e, events.PROGRAM, 11) is None


def test_the_stored_form_is_what_older_firmware_wrote():
    # older firmware kept tuples and wrote the counts, then per kind (n,) and its records: the
    # same sequences come out now, and a record of fewer kinds loads (the rest empty)
    e = _log()
    out = []
    e.pack(out.append)
    assert out[0] == e.counts
    kinds = []
    i = 1
    for _ in range(8):
        n = out[i][0]
        kinds.append([tuple(r) for r in out[i + 1:i + 1 + n]])
        i += 1 + n
    assert kinds[events.PURCHASE] == [RECORDS[0][1]] and kinds[events.TRIP] == [RECORDS[1][1]]
    old = [[0, 0, 1, 0, 0], [[], [], [[5, 1, 100, -900, -800, 7]], [], []]]  # before freezes existed
    back = Events()
    load_events(back, old)
    assert back.counts == [0, 0, 1, 0, 0, 0, 0, 0] and disrec.last(back, events.PURCHASE, 1) == [5, 1, 100, -900, -800, 7]
    again = Events()
    it = iter(out)
    unpack_events(again, lambda: tuple(next(it)))
    assert [again.records(k) for k in range(8)] == [e.records(k) for k in range(8)]


def test_the_log_holds_its_records_in_bytes():
    # 80 records as tuples of ints took ~4.4 KB of a 64-bit heap; packed, 4 bytes a field
    e = Events()
    for _ in range(10):
        for kind, rec in RECORDS:
            e.add(kind, rec)
    assert sum(len(b) for b in e.logs) == 10 * 4 * sum(len(rec) for _, rec in RECORDS)
