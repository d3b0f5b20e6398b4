"""Fen written as yuan by integer arithmetic (headend/money.py): the one formatter of amounts."""

import pytest

from headend.money import yuan


@pytest.mark.parametrize("fen, plain, grouped", [
    (0, "0.00", "0.00"), (5, "0.05", "0.05"), (-105, "-1.05", "-1.05"), (100000, "1000.00", "1,000.00"),
    (-123456789, "-1234567.89", "-1,234,567.89"), (2**53 + 1, "90071992547409.93", "90,071,992,547,409.93"),
])
def test_yuan(fen: int, plain: str, grouped: str) -> None:
    assert (yuan(fen), yuan(fen, grouped=True)) == (plain, grouped)
