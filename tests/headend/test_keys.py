"""Key store: encryption at rest, derivation per protocol/SECURITY.md, and no leaks."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import logging
import os
import pickle
import stat
from pathlib import Path

import pytest

from headend.keys import KeyStore, KeyStoreError, WrongPassphrase, derive_meter_key

MASTER = bytes(range(32))
PASS = "correct horse battery"


def leak_forms(secret: bytes) -> list[bytes]:
    """Every plain spelling of a secret we would consider a leak."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret),
        repr(secret).encode(),
    ]


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "h.key"
    KeyStore.create(path, PASS, master=MASTER, scrypt_n=2**14)
    return path


def test_derivation_takes_only_a_12_digit_address() -> None:
    for bad in ("12345678901", "1234567890AA", "AAAAAAAAAAAA", 123456789012):
        with pytest.raises(ValueError):
            derive_meter_key(MASTER, bad, 0)  # type: ignore[arg-type]


def test_meter_key_matches_the_documented_formula(keyfile: Path) -> None:
    ks = KeyStore.open(keyfile, PASS)
    addr = "112233445566"
    expect = hmac.new(MASTER, b"prepaid645/meter" + bytes([0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 3]),
                      hashlib.sha256).digest()[:16]
    assert ks.meter_key(addr, 3) == expect
    assert len({ks.meter_key(addr, k) for k in range(5)}) == 5
    assert ks.meter_key("112233445567", 3) != expect
    with pytest.raises(ValueError):
        ks.meter_key(addr, 256)


def test_meter_key_matches_the_firmware_hmac(keyfile: Path) -> None:
    from meter.codec import addr_bytes
    from meter.security import hmac_sha256

    ks = KeyStore.open(keyfile, PASS)
    for addr, krn in (("000000000001", 0), ("123456789012", 1), ("999999999999", 255)):
        want = hmac_sha256(MASTER, b"prepaid645/meter" + bytes(addr_bytes(addr)) + bytes([krn]))[:16]
        assert ks.meter_key(addr, krn) == derive_meter_key(MASTER, addr, krn) == want


def test_file_is_private_and_holds_no_plain_key(keyfile: Path) -> None:
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    raw = keyfile.read_bytes()
    for form in leak_forms(MASTER):
        assert form not in raw
    doc = json.loads(raw)
    assert doc["kdf"]["name"] == "scrypt" and doc["cipher"] == "AES-256-GCM"
    assert len(base64.b64decode(doc["ciphertext"])) == 32 + 16  # key + GCM tag, nothing else


def test_generated_keys_are_random(tmp_path: Path) -> None:
    a = KeyStore.create(tmp_path / "a.key", PASS, scrypt_n=2**14)
    b = KeyStore.create(tmp_path / "b.key", PASS, scrypt_n=2**14)
    assert a.meter_key("000000000001", 0) != b.meter_key("000000000001", 0)
    reopened = KeyStore.open(tmp_path / "a.key", PASS)
    assert reopened.meter_key("000000000001", 0) == a.meter_key("000000000001", 0)


def test_wrong_passphrase_is_a_clear_error(keyfile: Path) -> None:
    with pytest.raises(WrongPassphrase, match="wrong passphrase for key file .*h.key"):
        KeyStore.open(keyfile, "not the passphrase")


def test_weakened_kdf_in_the_file_does_not_unlock(keyfile: Path) -> None:
    doc = json.loads(keyfile.read_text())
    doc["kdf"]["n"] = 2**10  # an attacker lowering the work factor for later guessing
    keyfile.write_text(json.dumps(doc))
    with pytest.raises(WrongPassphrase):
        KeyStore.open(keyfile, PASS)


@pytest.mark.parametrize("damage", ["not json", '{"format": "other"}', '{"format": "prepaid645-master-key", "version": 7}'])
def test_damaged_file_is_named(keyfile: Path, damage: str) -> None:
    keyfile.write_text(damage)
    with pytest.raises(KeyStoreError, match=str(keyfile.name)):
        KeyStore.open(keyfile, PASS)


def test_missing_shared_and_existing_files(tmp_path: Path, keyfile: Path) -> None:
    with pytest.raises(KeyStoreError, match="keys init"):
        KeyStore.open(tmp_path / "none.key", PASS)
    os.chmod(keyfile, 0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        KeyStore.open(keyfile, PASS)
    os.chmod(keyfile, 0o600)
    before = keyfile.read_bytes()
    with pytest.raises(KeyStoreError, match="already exists"):
        KeyStore.create(keyfile, PASS)
    assert keyfile.read_bytes() == before
    with pytest.raises(KeyStoreError, match="at least"):
        KeyStore.create(tmp_path / "short.key", "short")
    assert not (tmp_path / "short.key").exists()


def test_change_passphrase_keeps_meter_keys(keyfile: Path) -> None:
    ks = KeyStore.open(keyfile, PASS)
    k = ks.meter_key("000000000007", 1)
    ks.change_passphrase("a new long passphrase", scrypt_n=2**14)
    with pytest.raises(WrongPassphrase):
        KeyStore.open(keyfile, PASS)
    assert KeyStore.open(keyfile, "a new long passphrase").meter_key("000000000007", 1) == k
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert [p.name for p in keyfile.parent.iterdir()] == [keyfile.name]  # no temp file left


def test_unlock_reads_the_environment(keyfile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREPAID645_KEY_PASSPHRASE", PASS)
    assert KeyStore.unlock(keyfile).meter_key("000000000001", 0) == KeyStore.in_memory(MASTER).meter_key(
        "000000000001", 0)


def test_no_leak_through_repr_logs_pickle_or_errors(keyfile: Path, caplog: pytest.LogCaptureFixture) -> None:
    ks = KeyStore.open(keyfile, PASS)
    shown = (repr(ks) + str(ks) + f"{ks}" + repr([ks])).encode()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("headend").debug("key store %r %s", ks, ks)
        logging.getLogger("headend").exception("boom", exc_info=(None, None, None))
    shown += caplog.text.encode()
    for form in leak_forms(MASTER):
        assert form not in shown
    assert not hasattr(ks, "__dict__")
    for attempt in (lambda: pickle.dumps(ks), lambda: copy.copy(ks), lambda: copy.deepcopy(ks)):
        with pytest.raises(TypeError, match="cannot be pickled"):
            attempt()
    try:
        KeyStore.open(keyfile, "wrong passphrase!")
    except WrongPassphrase as exc:
        text = (str(exc) + repr(exc) + repr(exc.__context__) + repr(exc.__cause__)).encode()
        for form in leak_forms(MASTER):
            assert form not in text


def test_rotation_keeps_old_krns_and_changes_new_ones(keyfile: Path) -> None:
    ks = KeyStore.open(keyfile, PASS)
    addr = "000000000001"
    before = {k: ks.meter_key(addr, k) for k in (0, 1, 2, 3)}
    ks.rotate(PASS, 2, scrypt_n=2**14)
    assert ks.generations == [0, 2]
    for reopened in (ks, KeyStore.open(keyfile, PASS)):
        assert reopened.generations == [0, 2]
        assert [reopened.meter_key(addr, k) == before[k] for k in (0, 1, 2, 3)] == [True, True, False, False]
    assert ks.meter_key(addr, 2) == KeyStore.open(keyfile, PASS).meter_key(addr, 2)
    new_master_forms = leak_forms(ks._masters[-1][1])  # type: ignore[attr-defined]
    raw = keyfile.read_bytes()
    assert not any(f in raw for f in new_master_forms + leak_forms(MASTER))
    with pytest.raises(KeyStoreError, match="3..255"):
        ks.rotate(PASS, 2, scrypt_n=2**14)
    ks.change_passphrase("a new long passphrase", scrypt_n=2**14)
    assert KeyStore.open(keyfile, "a new long passphrase").meter_key(addr, 3) == ks.meter_key(addr, 3)


def test_moving_a_generation_in_the_file_does_not_unlock(keyfile: Path) -> None:
    ks = KeyStore.open(keyfile, PASS)
    ks.rotate(PASS, 5, scrypt_n=2**14)
    doc = json.loads(keyfile.read_text())
    doc["generations"][0]["from_krn"] = 1  # would hand the new master to meters at KRN 1..4
    keyfile.write_text(json.dumps(doc))
    with pytest.raises(WrongPassphrase):
        KeyStore.open(keyfile, PASS)


@pytest.mark.parametrize("field, value, words", [
    (("kdf", "n"), 2**30, "kdf.n"),          # 128 GiB of scrypt memory: refused, not a MemoryError
    (("kdf", "n"), 3000, "kdf.n"),           # scrypt needs a power of two
    (("kdf", "r"), 10**6, "kdf.r"),
    (("kdf", "p"), 10**6, "kdf.p"),
    (("kdf", "n"), "many", "kdf.n"),
    (("kdf", "salt"), base64.b64encode(b"x" * 4096).decode(), "kdf.salt"),
    (("nonce",), base64.b64encode(b"x" * 5).decode(), "nonce"),
    (("ciphertext",), base64.b64encode(b"x" * 1000).decode(), "ciphertext"),
])
def test_every_key_file_field_is_bounded_before_use(keyfile: Path, field, value, words) -> None:
    doc = json.loads(keyfile.read_text())
    at = doc
    for k in field[:-1]:
        at = at[k]
    at[field[-1]] = value
    keyfile.write_text(json.dumps(doc))
    with pytest.raises(KeyStoreError, match=words) as got:
        KeyStore.open(keyfile, PASS)
    assert not isinstance(got.value, WrongPassphrase)
    assert "h.key" in str(got.value)


def test_a_huge_key_file_is_refused_unread(keyfile: Path) -> None:
    doc = json.loads(keyfile.read_text())
    doc["generations"] = [{"from_krn": 1, "nonce": "", "ciphertext": ""}] * 100_000
    keyfile.write_text(json.dumps(doc))
    with pytest.raises(KeyStoreError, match="too large"):
        KeyStore.open(keyfile, PASS)
