"""A scripted DL/T 645 answering machine for transport tests (the meter itself is tested end to end
in test_e2e*.py; here only byte movement, timing and failure handling are under test)."""

from __future__ import annotations

import asyncio
import os
import threading

from protocol import Deframer, build_frame, parse_frame


class Responder:
    """Answers 11H reads with DI + the address digits, 13H with the address, for ``addresses``.

    ``drop_first`` replies are swallowed; ``garbage`` answers with noise instead; ``concurrent``
    records the most requests seen before answering (a bus must never exceed 1).
    """

    def __init__(self, addresses, *, drop_first: int = 0, garbage: bool = False, delay: float = 0.0):
        self.addresses = set(addresses)
        self.drop_first = drop_first
        self.garbage = garbage
        self.delay = delay
        self.requests: list = []
        self.outstanding = 0
        self.max_outstanding = 0

    def answer(self, raw: bytes) -> bytes | None:
        f = parse_frame(raw)
        self.requests.append(f)
        if self.garbage:
            return b"\x68\x12\x34garbage\x16" + os.urandom(7)
        if f.control == 0x13:
            if len(self.addresses) != 1:
                return None
            (a,) = self.addresses
            return build_frame(a, 0x93, bytes.fromhex(a)[::-1], preamble=0)
        if f.address not in self.addresses:
            return None
        if self.drop_first > 0:
            self.drop_first -= 1
            return None
        if f.control == 0x11:
            return build_frame(f.address, 0x91, f.data[:4] + bytes.fromhex(f.address)[::-1][:4], preamble=2)
        return build_frame(f.address, 0xC0 | f.control, b"\x01", preamble=0)

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        d = Deframer()
        try:
            while chunk := await reader.read(4096):
                d.feed(chunk)
                for raw in d.frames():
                    self.outstanding += 1
                    self.max_outstanding = max(self.max_outstanding, self.outstanding)
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    out = self.answer(raw)
                    self.outstanding -= 1
                    if out:
                        writer.write(out)
        except ConnectionError:
            pass
        finally:
            writer.close()

    def serve_fd(self, fd: int, stop: threading.Event) -> threading.Thread:
        """Serve a pty master fd from a thread."""

        def run():
            import select

            d = Deframer()
            while not stop.is_set():
                r, _, _ = select.select([fd], [], [], 0.05)
                if not r:
                    continue
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    return
                d.feed(chunk)
                for raw in d.frames():
                    out = self.answer(raw)
                    if out:
                        os.write(fd, out)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t
