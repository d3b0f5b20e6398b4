"""Links partitioned between serves (headend/frontends.py): rendezvous slots, the handover
through recorded views, holds that delay it, and no slot ever worked by two serves at once."""

from __future__ import annotations

import random

from headend.frontends import SLOTS, Share, owner_of, slot_of, slots_of

A, B, C = "host-a pid 1", "host-b pid 2", "host-c pid 3"


def _beat(serves: dict[str, Share], views: dict[str, str], who: str) -> None:
    """One heartbeat of ``who``: read the live leases, update, record its view."""
    views[who] = serves[who].update({o: views.get(o, "") for o in serves})


def _working(share: Share) -> set[int]:
    return set(share.slots) | {s for s in range(SLOTS) if share._held[s] > 0}


def test_slots_are_stable_and_spread_and_only_the_leavers_move() -> None:
    links = [f"tcp://10.0.{i // 250}.{i % 250}:8899" for i in range(5000)]
    assert [slot_of(x) for x in links] == [slot_of(x) for x in links] and all(0 <= slot_of(x) < SLOTS for x in links)
    three = {s: owner_of(s, [A, B, C]) for s in range(SLOTS)}
    assert all(300 < sum(o == who for o in three.values()) < 390 for who in (A, B, C))  # about a third each
    two = {s: owner_of(s, [A, B]) for s in range(SLOTS)}
    assert all(two[s] == three[s] for s in range(SLOTS) if three[s] != C)  # only C's slots move when C leaves
    assert slots_of(A, [A, B]) | slots_of(B, [A, B]) == set(range(SLOTS))
    assert not slots_of(A, [A, B]) & slots_of(B, [A, B]) and slots_of(C, [A, B]) == frozenset()


def test_a_joining_serve_gets_its_share_only_after_the_holder_lets_go() -> None:
    serves, views = {A: Share(A)}, {}
    _beat(serves, views, A)
    assert serves[A].slots == frozenset(range(SLOTS))  # alone: every link
    serves[B] = Share(B)
    _beat(serves, views, B)
    assert serves[B].slots == frozenset()  # A's recorded view still gives it everything
    _beat(serves, views, A)
    assert serves[A].slots == slots_of(A, [A, B])
    _beat(serves, views, B)
    assert serves[B].slots == slots_of(B, [A, B])


def test_work_in_flight_on_a_lost_link_holds_the_handover_back() -> None:
    serves, views = {A: Share(A)}, {}
    _beat(serves, views, A)
    lost = next(s for s in range(SLOTS) if s in slots_of(B, [A, B]))
    held = serves[A].hold_slots([lost])
    serves[B] = Share(B)
    _beat(serves, views, B)
    _beat(serves, views, A)
    assert lost not in serves[A].slots and serves[A].slots == slots_of(A, [A, B])  # starts nothing new there
    _beat(serves, views, B)
    assert serves[B].slots == frozenset()  # A still records the old view: nothing moves yet
    serves[A].release(held)
    _beat(serves, views, A)
    _beat(serves, views, B)
    assert serves[B].slots == slots_of(B, [A, B]) and lost in serves[B].slots


def test_a_dead_serves_links_go_to_the_living_at_once_and_a_fenced_serve_works_nothing() -> None:
    serves, views = {A: Share(A), B: Share(B)}, {}
    for who in (A, B, A, B):
        _beat(serves, views, who)
    del serves[A]  # killed: its lease lapses, it is no longer live
    _beat(serves, views, B)
    assert serves[B].slots == frozenset(range(SLOTS))
    lonely = Share(C)
    lonely.update({C: ""})
    assert lonely.slots == frozenset(range(SLOTS))
    assert lonely.update({B: views[B]}) == "" and lonely.slots == frozenset()  # its own lease lapsed


def test_no_slot_is_ever_worked_by_two_serves_through_joins_deaths_and_holds() -> None:
    rng = random.Random(645)
    serves: dict[str, Share] = {}
    views: dict[str, str] = {}
    holds: dict[str, list[list[int]]] = {}
    n = 0
    for _step in range(600):
        r = rng.random()
        if (r < 0.06 and len(serves) < 4) or not serves:
            n += 1
            who = f"host pid {n}"
            serves[who], holds[who] = Share(who), []
        elif r < 0.1 and len(serves) > 1:
            dead = rng.choice(sorted(serves))
            del serves[dead]  # SIGKILL: nothing of its in-flight work goes on
            views.pop(dead, None)
        else:
            who = rng.choice(sorted(serves))
            s = serves[who]
            if rng.random() < 0.3 and s.slots:
                holds[who].append(s.hold_slots(rng.sample(sorted(s.slots), min(3, len(s.slots)))))
            elif rng.random() < 0.4 and holds[who]:
                s.release(holds[who].pop(rng.randrange(len(holds[who]))))
            else:
                _beat(serves, views, who)
        seen: dict[int, str] = {}
        for who, s in serves.items():
            for slot in _working(s):
                assert slot not in seen, f"slot {slot} worked by {seen[slot]} and {who}"
                seen[slot] = who
    # once everything in flight is done and everyone beat twice, the share is everyone's again
    for who, s in serves.items():
        for h in holds[who]:
            s.release(h)
    for _ in range(2):
        for who in sorted(serves):
            _beat(serves, views, who)
    assert set().union(*(s.slots for s in serves.values())) == set(range(SLOTS))
