"""The firmware copies some module-private constants on purpose: a `const()` name starting with `_`
is folded into the bytecode and never interned, while importing it from its module would keep that
module resident and intern the name (heap the board does not have). A copy that drifts from its
original is a silent bug (a relay state read as another), so every such name must have one value
in every module that defines it; the few names that mean different things in different modules
are listed with what each means."""

from __future__ import annotations

import ast

from tools.sim import FIRMWARE

# the same name, on purpose not the same constant
DIFFERENT = {
    "TRIP": {"relay": "the 1AH trip command code", "wallet": "the local relay command Relay.local() takes"},
    "_LEAK": {"core": "bad-MAC lockout leak per second", "token": "bad-token lockout leak per second"},
    "_RATES": {"diwrite": "the flag of a tariff write that changes the rates", "tariffcheck": "rates in a tariff"},
}


# copies kept under another name: (module, name) of the copy -> (module, name) of the original
RENAMED = {("powerup", "_METER"): ("relay", "METER")}


def _consts() -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    for path in sorted(FIRMWARE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "const"):
                arg = node.value.args[0]
                try:
                    value: object = ast.literal_eval(arg)
                except ValueError:   # made of other constants: compared as written
                    value = ast.unparse(arg)
                found.setdefault(node.targets[0].id, {})[path.stem] = value
    return found


def test_every_copied_constant_equals_its_original() -> None:
    consts = _consts()
    copied = {name: where for name, where in consts.items() if len(where) > 1 and name not in DIFFERENT}
    assert {"_R_TRIP", "_LOC_TRIP", "_ERR_AUTH"} <= set(copied)   # the relay's and the error bits' copies
    drifted = {name: where for name, where in copied.items() if len(set(where.values())) > 1}
    assert not drifted, f"copies of a constant that differ (make them equal, or list the name in DIFFERENT): {drifted}"


def test_the_names_that_differ_on_purpose_are_still_defined_where_listed() -> None:
    consts = _consts()
    for name, where in DIFFERENT.items():
        assert set(where) <= set(consts.get(name, {})), f"{name}: DIFFERENT lists modules that no longer define it"


def test_every_copy_under_another_name_equals_its_original() -> None:
    consts = _consts()
    for (mod, name), (orig_mod, orig) in RENAMED.items():
        assert consts[name][mod] == consts[orig][orig_mod], f"meter.{mod}.{name} differs from meter.{orig_mod}.{orig}"
