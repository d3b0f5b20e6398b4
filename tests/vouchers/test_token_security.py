"""Security evidence for the keypad token codec (protocol/TOKENS.md, "What a guess is worth"):
random guesses, another meter's token, changed digits, replays and the bad-entry limit."""

import json
import random

from headend.vouchers import token as H
from meter import token as T
from tests.mpy import run_micropython

KEY_A = bytes(range(16))
KEY_B = bytes(range(1, 17))
P_ANY = 0.738 * (1 / 64 + 6 / 64) / 65536      # one random string accepted as anything
P_CREDIT = 0.738 * (1 / 64) / 65536             # ... as credit


def _random_strings(n, seed):
    rng = random.Random(seed)
    return [f"{rng.randrange(10 ** 20):020d}" for _ in range(n)]


def _tokens(key, n, seed):
    rng = random.Random(seed)
    return [H.encode(key, H.CREDIT, 0, rng.randrange(1 << 24), rng.randrange(1 << 16), rng.randrange(16))
            for _ in range(n)]


def test_a_million_random_strings_are_rejected_at_the_expected_rate_and_the_limit_slows_guessing():
    guesses = _random_strings(1_000_000, seed=19)
    got = H.decode_many(KEY_A, guesses)
    accepted = [g for g in got if g is not None]
    credit = [g for g in accepted if g[0] == H.CREDIT]
    # expected 1.23 and 0.18; a Poisson count above these bounds has odds below 1e-5
    assert len(accepted) <= 8, accepted
    assert len(credit) <= 4, credit
    assert 1_000_000 * P_ANY < 8
    # and every accepted one really decodes so on the meter's decoder
    for s, g in zip(guesses, got):
        if g is not None:
            assert T.decode(KEY_A, s) == g
    # the same million typed one a second with the bad-entry limit on: only the first burst and
    # one an hour are even checked
    lim, checked = [0, 0], 0
    for t in range(1_000_000):
        if not T.locked(lim, t):
            checked += 1
            T.bad(lim, t)
    assert checked == 5 + (1_000_000 - 1) // 3600
    assert checked * P_CREDIT < 1e-4


def test_micropython_decodes_a_sample_exactly_as_the_vectorised_decoder():
    key = KEY_A
    sample = _random_strings(300, seed=7) + _tokens(key, 20, seed=8)
    want = H.decode_many(key, sample)
    assert sum(w is not None for w in want) == 20
    code = ("from meter import token\n"
            f"k = {key!r}\n"
            f"for s in {sample!r}:\n    print(token.decode(k, s))\n")
    r = run_micropython(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:-1] == [str(w) for w in want]


def test_a_token_for_meter_a_fails_on_meter_b():
    toks = _tokens(KEY_A, 2000, seed=1)
    assert all(g is not None for g in H.decode_many(KEY_A, toks))
    assert H.decode_many(KEY_B, toks) == [None] * len(toks)
    assert all(T.decode(KEY_B, s) is None for s in toks[:50])


def test_a_changed_digit_anywhere_fails():
    for tok in _tokens(KEY_A, 40, seed=2):
        variants = [tok[:i] + d + tok[i + 1:] for i in range(20) for d in "0123456789" if d != tok[i]]
        assert len(variants) == 180
        assert H.decode_many(KEY_A, variants) == [None] * 180
    tok = _tokens(KEY_A, 1, seed=3)[0]
    variants = [tok[:i] + d + tok[i + 1:] for i in range(20) for d in "0123456789" if d != tok[i]]
    code = f"from meter import token\nprint(sum(token.decode({KEY_A!r}, s) is None for s in {variants!r}))\n"
    r = run_micropython(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "180"


def _enter(used, balance, key, s):
    """What a meter does with a typed token, as far as the codec decides it: (shown, balance)."""
    d = T.decode(key, s)
    if d is None:
        return "invalid", balance
    state = T.seen(used, d[2])
    if state:
        return "used", balance
    T.use(used, d[2])
    return "ok", balance + T.fen(d[3])


def test_a_replayed_token_adds_nothing_and_tokens_out_of_order_within_the_window_all_count():
    toks = [H.encode(KEY_A, H.CREDIT, 0, 1000 + i, H.amount_field(100 * (i + 1))) for i in range(20)]
    used, bal = [], 0
    order = [5, 1, 0, 3, 2, 4]            # out of order, all within the window
    for i in order:
        shown, bal = _enter(used, bal, KEY_A, toks[i])
        assert shown == "ok"
    assert bal == sum(100 * (i + 1) for i in order)
    for i in order:                       # every one again: shown as used, nothing added
        assert _enter(used, bal, KEY_A, toks[i]) == ("used", bal)
    # the memory survives a power cycle as the list it is
    used = json.loads(json.dumps(used))
    assert _enter(used, bal, KEY_A, toks[3]) == ("used", bal)
    for i in range(6, 20):
        shown, bal = _enter(used, bal, KEY_A, toks[i])
        assert shown == "ok"
    assert len(used) == 16 and used[0] == 1004
    # TIDs 1000..1003 fell out of the memory: older than all it holds, so still refused
    for i in range(4):
        assert T.seen(used, 1000 + i) == 2
        assert _enter(used, bal, KEY_A, toks[i]) == ("used", bal)
    # a valid token older than the memory that was never entered is refused too (STS "old")
    older = H.encode(KEY_A, H.CREDIT, 0, 900, H.amount_field(100))
    assert _enter(used, bal, KEY_A, older) == ("used", bal)
    # an invalid string is a different answer
    assert _enter(used, bal, KEY_A, "12345678901234567890")[0] == "invalid"


def test_bad_entry_limit_bursts_five_then_one_an_hour_and_survives_a_power_cycle():
    lim = [0, 0]
    t = 10_000
    for _ in range(5):
        assert not T.locked(lim, t)
        T.bad(lim, t)
    assert T.locked(lim, t)
    lim = json.loads(json.dumps(lim))     # persisted as it is
    assert T.locked(lim, t + 3599)
    assert not T.locked(lim, t + 3600)    # one forgiven after an hour
    T.bad(lim, t + 3600)
    assert T.locked(lim, t + 3601)
    assert not T.locked(lim, t + 5 * 3600 + 3600)
    assert lim[0] == 0
    # a clock set back does not unlock early
    lim = [5, 50_000]
    assert T.locked(lim, 40_000)
    assert T.locked(lim, 40_000 + 3599)
