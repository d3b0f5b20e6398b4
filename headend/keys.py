"""The head-end key store: one master key, encrypted at rest, and the meter keys derived from it.

File format (JSON, mode 0600, written atomically):

    {"format": "prepaid645-master-key", "version": 1,
     "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "<base64, 16 bytes>"},
     "cipher": "AES-256-GCM", "nonce": "<base64, 12 bytes>", "ciphertext": "<base64, 32 + 16 bytes>"}

The AES key is scrypt(passphrase, salt); the header (everything but nonce and ciphertext) is
authenticated as associated data, so nobody can weaken the KDF parameters in the file without the
unlock failing. A wrong passphrase and a tampered file both fail the GCM tag: we cannot tell them
apart, and say so.

Meter keys follow protocol/SECURITY.md: K = HMAC-SHA256(master, b"prepaid645/meter" + addr + KRN)[:16]
with addr the 12-digit address as 6 BCD bytes, low byte first.

Master key rotation (`headend keys rotate`): a rotated file (version 2) adds
`"generations": [{"from_krn": R, "nonce": ..., "ciphertext": ...}, ...]`, each a further master
encrypted the same way (its from_krn bound in as associated data). A meter key at revision KRN
derives from the newest master whose from_krn <= KRN, so meters still at an old KRN keep working
and a key update to KRN >= R moves a meter onto the new master.

Key material never leaves this module except as the return value of `meter_key`: not in repr,
not in exceptions, not in logs, not picklable.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Mapping, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from headend.config import ENV_PASSPHRASE
from protocol.frame import address_to_wire

__all__ = [
    "KeyStore",
    "KeyStoreError",
    "WrongPassphrase",
    "read_passphrase",
    "derive_meter_key",
    "MASTER_KEY_BYTES",
    "METER_KEY_BYTES",
]

MASTER_KEY_BYTES = 32
METER_KEY_BYTES = 16
_FORMAT = "prepaid645-master-key"
_VERSION = 1          # one master
_VERSION_ROTATED = 2  # a master per generation
_SCRYPT_N = 2**15  # ~32 MiB and ~0.1 s per unlock: cheap for an operator, costly for a guesser
_SCRYPT_R = 8
_SCRYPT_P = 1
_MIN_PASSPHRASE = 8
# What a key file may ask for, checked before any of it is used: the file is read before it is
# authenticated, so a raised scrypt cost would otherwise run (or exhaust memory) first.
_MAX_FILE_BYTES = 64 * 1024
_SCRYPT_N_RANGE = (2**10, 2**20)
_SCRYPT_R_RANGE = (1, 32)
_SCRYPT_P_RANGE = (1, 16)
_SCRYPT_MAX_MEMORY = 1 << 30  # 128 * n * r bytes
_SALT_BYTES = (16, 64)
_NONCE_BYTES = 12
_SEALED_BYTES = MASTER_KEY_BYTES + 16  # the key and its GCM tag


class KeyStoreError(Exception):
    """The key file is missing, unreadable, malformed or locked; the message says what to do."""


class WrongPassphrase(KeyStoreError):
    """The passphrase does not unlock the key file (or the file was altered)."""


def derive_meter_key(master: bytes, address: str, krn: int) -> bytes:
    """Meter key K = HMAC-SHA256(master, b"prepaid645/meter" + addr + KRN)[:16] (protocol/SECURITY.md):
    the one derivation of a meter key, for the key store, the simulators and the tests."""
    if not isinstance(address, str) or len(address) != 12 or not address.isdigit():
        raise ValueError(f"bad meter address {address!r}: need exactly 12 decimal digits")
    if not isinstance(krn, int) or isinstance(krn, bool) or not 0 <= krn <= 255:
        raise ValueError(f"key revision (KRN) must be 0..255, got {krn!r}")
    msg = b"prepaid645/meter" + address_to_wire(address) + bytes([krn])
    return hmac.new(master, msg, hashlib.sha256).digest()[:METER_KEY_BYTES]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str, path: Path, size: tuple[int, int]) -> bytes:
    lo, hi = size
    if not isinstance(text, str) or len(text) > (hi + 2) // 3 * 4:
        raise KeyStoreError(f"key file {path} is damaged: field {what} must be base64 of {lo}..{hi} bytes")
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise KeyStoreError(f"key file {path} is damaged: field {what} is not base64") from exc
    if not lo <= len(raw) <= hi:
        raise KeyStoreError(f"key file {path} is damaged: field {what} has {len(raw)} bytes, expected {lo}..{hi}")
    return raw


def _kdf_int(kdf: dict, name: str, bounds: tuple[int, int], path: Path) -> int:
    value = kdf.get(name)
    lo, hi = bounds
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise KeyStoreError(f"key file {path} is refused: field kdf.{name} is {value!r}, allowed {lo}..{hi}"
                            " (a damaged or altered file; restore it from a backup)")
    return value


def _header_aad(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def read_passphrase(*, confirm: bool = False, environ: Mapping[str, str] | None = None, prompt: str | None = None) -> str:
    """The key passphrase from $PREPAID645_KEY_PASSPHRASE, else from a terminal prompt (twice if confirm)."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_PASSPHRASE)
    if value:
        return value
    if not sys.stdin.isatty():
        raise KeyStoreError(
            f"no key passphrase: set {ENV_PASSPHRASE} or run the command in a terminal to be asked for it"
        )
    first = getpass.getpass(prompt or "Key passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise KeyStoreError("the two passphrases differ; nothing was written")
    return first


class KeyStore:
    """An unlocked master key. Get one with KeyStore.create, KeyStore.open or KeyStore.unlock."""

    __slots__ = ("_masters", "path")

    def __init__(self, master: bytes, path: Path | None = None, later: tuple[tuple[int, bytes], ...] = ()) -> None:
        for m in (master, *(m for _, m in later)):
            if not isinstance(m, (bytes, bytearray)) or len(m) != MASTER_KEY_BYTES:
                raise KeyStoreError(f"a master key is {MASTER_KEY_BYTES} bytes")
        # (from_krn, master), from_krn strictly increasing from 0
        self._masters: tuple[tuple[int, bytes], ...] = ((0, bytes(master)), *((k, bytes(m)) for k, m in later))
        self.path = path

    @property
    def generations(self) -> list[int]:
        """The first KRN of each master key generation ([0] until the first rotation); no secrets."""
        return [k for k, _ in self._masters]

    # -- never reveal the key: not in repr/str, not via pickle or copy
    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "in memory"
        return f"<KeyStore {where} (unlocked)>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a KeyStore cannot be pickled or copied: the master key stays in this process")

    def __getstate__(self) -> NoReturn:
        raise TypeError("a KeyStore cannot be pickled or copied: the master key stays in this process")

    @classmethod
    def in_memory(cls, master: bytes) -> "KeyStore":
        """A key store over a given master key, never written anywhere (tests, simulators, benchmarks)."""
        return cls(master, None)

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        passphrase: str,
        *,
        overwrite: bool = False,
        master: bytes | None = None,
        scrypt_n: int = _SCRYPT_N,
    ) -> "KeyStore":
        """Generate a random 32-byte master key (unless given), encrypt it under passphrase, write path 0600."""
        p = Path(path)
        if len(passphrase) < _MIN_PASSPHRASE:
            raise KeyStoreError(f"the passphrase must have at least {_MIN_PASSPHRASE} characters")
        if p.exists() and not overwrite:
            raise KeyStoreError(
                f"key file {p} already exists; every meter key derives from it, so it is not replaced"
                " (move it away first if you really mean to start over)"
            )
        ks = cls(master if master is not None else secrets.token_bytes(MASTER_KEY_BYTES), p)
        ks._write(p, passphrase, scrypt_n)
        return ks

    @classmethod
    def open(cls, path: str | os.PathLike[str], passphrase: str) -> "KeyStore":
        """Read and decrypt a key file; WrongPassphrase if the passphrase does not fit."""
        p = Path(path)
        try:
            st = p.stat()
        except FileNotFoundError as exc:
            raise KeyStoreError(f"no key file at {p}: create one with `headend keys init`") from exc
        if os.name == "posix" and st.st_mode & 0o077:
            raise KeyStoreError(
                f"key file {p} can be read by other users (mode {st.st_mode & 0o777:o}); run `chmod 600 {p}`"
            )
        if st.st_size > _MAX_FILE_BYTES:
            raise KeyStoreError(f"key file {p} is too large ({st.st_size} bytes; a key file has well under"
                                f" {_MAX_FILE_BYTES}): it is not a prepaid645 key file or it was altered")
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"key file {p} is not readable JSON: {exc.__class__.__name__}") from exc
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise KeyStoreError(f"{p} is not a prepaid645 key file")
        if doc.get("version") not in (_VERSION, _VERSION_ROTATED):
            raise KeyStoreError(f"key file {p} has version {doc.get('version')!r}; this program reads"
                                f" {_VERSION} and {_VERSION_ROTATED}")
        header = {k: v for k, v in doc.items() if k not in ("nonce", "ciphertext", "generations")}
        kdf = doc.get("kdf")
        if not isinstance(kdf, dict) or kdf.get("name") != "scrypt" or doc.get("cipher") != "AES-256-GCM":
            raise KeyStoreError(f"key file {p} is damaged: unknown or missing KDF/cipher settings")
        n = _kdf_int(kdf, "n", _SCRYPT_N_RANGE, p)
        r = _kdf_int(kdf, "r", _SCRYPT_R_RANGE, p)
        par = _kdf_int(kdf, "p", _SCRYPT_P_RANGE, p)
        if n & (n - 1):
            raise KeyStoreError(f"key file {p} is refused: field kdf.n is {n}, which is not a power of two")
        if 128 * n * r > _SCRYPT_MAX_MEMORY:
            raise KeyStoreError(f"key file {p} is refused: kdf.n {n} with kdf.r {r} needs {128 * n * r >> 20} MiB,"
                                f" allowed {_SCRYPT_MAX_MEMORY >> 20} MiB")
        salt = _unb64(kdf.get("salt"), "kdf.salt", p, _SALT_BYTES)
        nonce = _unb64(doc.get("nonce"), "nonce", p, (_NONCE_BYTES, _NONCE_BYTES))
        ct = _unb64(doc.get("ciphertext"), "ciphertext", p, (_SEALED_BYTES, _SEALED_BYTES))
        gens = doc.get("generations", []) if doc.get("version") == _VERSION_ROTATED else []
        if not isinstance(gens, list) or not all(isinstance(g, dict) for g in gens) or len(gens) > 255:
            raise KeyStoreError(f"key file {p} is damaged: generations must be a list of at most 255")
        try:
            aes = AESGCM(_derive(passphrase, salt, n, r, par))
            aad = _header_aad(header)
            master = aes.decrypt(nonce, ct, aad)
            later = []
            for g in gens:
                k = int(g.get("from_krn", -1))
                later.append((k, aes.decrypt(_unb64(g.get("nonce"), "generation nonce", p, (_NONCE_BYTES, _NONCE_BYTES)),
                                             _unb64(g.get("ciphertext"), "generation ciphertext", p,
                                                    (_SEALED_BYTES, _SEALED_BYTES)),
                                             aad + b"|from_krn=%d" % k)))
            if [k for k, _ in later] != sorted({k for k, _ in later}) or any(not 0 < k <= 255 for k, _ in later):
                raise KeyStoreError(f"key file {p} is damaged: generations must start at increasing KRNs 1..255")
        except InvalidTag:
            raise WrongPassphrase(
                f"wrong passphrase for key file {p} (or the file was altered); check {ENV_PASSPHRASE}"
            ) from None
        except ValueError as exc:
            raise KeyStoreError(f"key file {p} is damaged: {exc}") from None
        return cls(master, p, tuple(later))

    @classmethod
    def unlock(cls, path: str | os.PathLike[str], passphrase: str | None = None) -> "KeyStore":
        """Open the key file with the given passphrase, or $PREPAID645_KEY_PASSPHRASE, or a prompt."""
        return cls.open(path, passphrase if passphrase is not None else read_passphrase())

    def change_passphrase(self, new_passphrase: str, *, scrypt_n: int = _SCRYPT_N) -> None:
        """Re-encrypt the same master key under a new passphrase (meter keys do not change)."""
        if self.path is None:
            raise KeyStoreError("this key store is in memory only; there is no file to re-encrypt")
        if len(new_passphrase) < _MIN_PASSPHRASE:
            raise KeyStoreError(f"the passphrase must have at least {_MIN_PASSPHRASE} characters")
        self._write(self.path, new_passphrase, scrypt_n)

    def rotate(self, passphrase: str, from_krn: int, *, scrypt_n: int = _SCRYPT_N) -> None:
        """Add a new random master used for every KRN >= from_krn, and rewrite the file under passphrase.

        Meter keys below from_krn do not change; a meter moves to the new master with a key
        update to a KRN >= from_krn. from_krn must be above every earlier generation's.
        """
        if self.path is None:
            raise KeyStoreError("this key store is in memory only; there is no file to rotate")
        last = self._masters[-1][0]
        if not isinstance(from_krn, int) or not last < from_krn <= 255:
            raise KeyStoreError(f"a new master generation must start at a KRN in {last + 1}..255, got {from_krn!r}")
        before = self._masters
        self._masters = (*before, (from_krn, secrets.token_bytes(MASTER_KEY_BYTES)))
        try:
            self._write(self.path, passphrase, scrypt_n)
        except BaseException:
            self._masters = before
            raise

    def meter_key(self, address: str, krn: int) -> bytes:
        """The 16-byte key of one meter at key revision krn (protocol/SECURITY.md)."""
        if not isinstance(krn, int) or isinstance(krn, bool) or not 0 <= krn <= 255:
            raise ValueError(f"key revision (KRN) must be 0..255, got {krn!r}")
        master = next(m for k, m in reversed(self._masters) if k <= krn)
        return derive_meter_key(master, address, krn)

    def seal(self, label: str, secret: bytes) -> str:
        """Encrypt a secret the head-end must keep readable (a payment channel's API secret) for
        storing: AES-256-GCM under a key derived from the first master, bound to ``label`` (e.g.
        "channel:ID:KEY_ID") so a sealed value cannot be moved to another record."""
        nonce = secrets.token_bytes(12)
        return "v1:" + _b64(nonce + AESGCM(self._sealing_key()).encrypt(nonce, bytes(secret), label.encode()))

    def unseal(self, label: str, sealed: str) -> bytes:
        """The secret ``seal(label, secret)`` sealed; KeyStoreError if it was sealed under another
        master key or label, or altered."""
        try:
            if not sealed.startswith("v1:"):
                raise ValueError("unknown format")
            raw = base64.b64decode(sealed[3:], validate=True)
            return AESGCM(self._sealing_key()).decrypt(raw[:12], raw[12:], label.encode())
        except (InvalidTag, ValueError, TypeError, AttributeError):
            raise KeyStoreError(f"the sealed secret of {label} does not open with this master key (another key"
                                " file, or the record was altered): issue a new secret") from None

    def _sealing_key(self) -> bytes:
        return hmac.new(self._masters[0][1], b"prepaid645/sealed-secrets", hashlib.sha256).digest()

    def _write(self, path: Path, passphrase: str, scrypt_n: int) -> None:
        salt = secrets.token_bytes(16)
        nonce = secrets.token_bytes(12)
        header = {
            "format": _FORMAT,
            "version": _VERSION if len(self._masters) == 1 else _VERSION_ROTATED,
            "kdf": {"name": "scrypt", "n": scrypt_n, "r": _SCRYPT_R, "p": _SCRYPT_P, "salt": _b64(salt)},
            "cipher": "AES-256-GCM",
        }
        aes = AESGCM(_derive(passphrase, salt, scrypt_n, _SCRYPT_R, _SCRYPT_P))
        aad = _header_aad(header)
        ct = aes.encrypt(nonce, self._masters[0][1], aad)
        doc: dict = dict(header, nonce=_b64(nonce), ciphertext=_b64(ct))
        if len(self._masters) > 1:
            gens = []
            for k, m in self._masters[1:]:
                gn = secrets.token_bytes(12)
                sealed = aes.encrypt(gn, m, aad + b"|from_krn=%d" % k)
                gens.append({"from_krn": k, "nonce": _b64(gn), "ciphertext": _b64(sealed)})
            doc["generations"] = gens
        data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        # Created 0600 from the first byte (no window with wider permissions), then renamed into
        # place so a crash leaves the old file or the new one, never half of one.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
