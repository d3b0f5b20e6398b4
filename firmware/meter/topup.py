# The wallet's top-ups, account opening, wallet initialisation and limit changes (spec
# prepaid-meter.md sections 3 and 5), on a meter.wallet.Wallet. Loaded for a purchase (03H), a
# limit write (14H), a power-hold release (1CH) or a keypad token, and let go after it: a running
# meter deducts, and its heap holds only that code (meter.wallet).

from meter.wallet import ALARM2, CUSTOMER_ERR, OK, OVERDRAFT, PRETRIP, RECHARGED, REPEAT, TRIP, ZERO, _fen

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# recharge results beside meter.wallet's: the SERR bit numbers of the 645 security error word
_COUNT_ERR = const(5)
_HOARD_ERR = const(6)


def sticky_evaluate(w):
    """Balance state with the sticky rule: once OVERDRAFT, only a balance above the
    close-permitted amount lets it go."""
    if w.state == OVERDRAFT and w.balance <= w.close_ok:
        return OVERDRAFT
    return w.evaluate()


def topped_up(w):
    """The state after money came in (sticky rule) and its local relay command."""
    w.state = sticky_evaluate(w)
    w.last_cmd = TRIP if w.state == OVERDRAFT else RECHARGED
    return w.last_cmd


def _check(w, amount, count, customer):
    _fen(amount, "amount")
    if count == w.count:
        return REPEAT
    if count != w.count + 1:
        return _COUNT_ERR
    if customer != w.customer:
        return CUSTOMER_ERR
    if w.hoard and w.balance + amount > w.hoard:  # hoard 0 = no limit
        return _HOARD_ERR
    return OK


def credit(w, amount, count):
    """amount fen in, the purchase count set to count (nothing checked: the caller has)."""
    w.balance += amount
    w.total_bought += amount
    w.count = count


def recharge(w, amount, count, customer):
    """Top-up of `amount` fen carrying purchase count `count`: applies only when count
    is the current count + 1; the current count again is a REPEAT (nothing applied).
    Returns (result, local relay command or None)."""
    if not w.opened:
        return CUSTOMER_ERR, None
    res = _check(w, amount, count, customer)
    if res != OK:
        return res, None
    credit(w, amount, count)
    return OK, topped_up(w)


def open_account(w, amount, count, customer):
    """Open the account for `customer` (or top up, if it is already theirs) with the
    same count rules as recharge(). Returns (result, local relay command or None)."""
    if w.opened:
        if customer != w.customer:
            return CUSTOMER_ERR, None
        return recharge(w, amount, count, customer)
    if not isinstance(customer, str) or len(customer) > 12:
        return CUSTOMER_ERR, None
    saved = w.customer
    w.customer = customer
    res = _check(w, amount, count, customer)
    if res != OK:
        w.customer = saved
        return res, None
    w.opened = True
    credit(w, amount, count)
    # opening is a wallet preset: full evaluation, the never-opened state does not stick
    w.state = w.evaluate()
    w.last_cmd = TRIP if w.state == OVERDRAFT else RECHARGED
    return OK, w.last_cmd


def init_wallet(w, amount):
    """Wallet initialisation (645 070103FF): balance preset to `amount`, purchase count
    0, account closed, full evaluation. Returns the local relay command."""
    _fen(amount, "amount")
    w.balance = amount
    w.rem = 0
    w.count = 0
    w.total_bought = 0
    w.customer = ""
    w.opened = False
    w.state = w.evaluate()
    w.last_cmd = TRIP if w.state == OVERDRAFT else RECHARGED
    return w.last_cmd


def set_limits(w, alarm1=None, alarm2=None, overdraft=None, hoard=None, close_ok=None):
    """Change limits (fen). A1/A2 changes re-evaluate with the sticky rule, an overdraft
    limit change re-evaluates fully. Returns the local command on a state change."""
    # validate all first so a bad write changes nothing
    vals = [None if v is None else _fen(v, n) for v, n in
            ((alarm1, "alarm1"), (alarm2, "alarm2"), (overdraft, "overdraft"),
             (hoard, "hoard"), (close_ok, "close_ok"))]
    if vals[0] is not None:
        w.alarm1 = vals[0]
    if vals[1] is not None:
        w.alarm2 = vals[1]
    if vals[3] is not None:
        w.hoard = vals[3]
    if vals[4] is not None:
        w.close_ok = vals[4]
    if vals[2] is not None:
        w.overdraft = vals[2]
        return w._change(w.evaluate())
    if vals[0] is not None or vals[1] is not None:
        return w._change(sticky_evaluate(w))
    return None


def release_cmd(w):
    """Command to re-send when power hold is released (spec section 3): trip in
    OVERDRAFT, pre-trip in ALARM2/ZERO if that was the last command, else None."""
    if w.state == OVERDRAFT:
        return TRIP
    if w.state in (ALARM2, ZERO) and w.last_cmd == PRETRIP:
        return PRETRIP
    return None
