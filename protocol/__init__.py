"""DL/T 645-2007 frames, payloads and data identifiers for prepaid645 (head-end side).

``FrameSchema`` (construct) is the canonical definition; ``parse_frame``/``build_frame`` are
the fast codec the head-end uses, proven identical to it by tests/protocol.  Submodules:
``di`` (data-identifier registry), ``payloads`` (per-function payload schemas and builders),
``formats`` (value formats), ``annotate`` (frames explained for people), ``deframer``.
"""

from protocol import di, payloads
from protocol.deframer import Deframer
from protocol.errors import ProtocolError
from protocol.frame import BROADCAST, WILDCARD, Frame, FrameSchema, build_frame, parse_frame

__all__ = [
    "BROADCAST",
    "WILDCARD",
    "Deframer",
    "Frame",
    "FrameSchema",
    "ProtocolError",
    "build_frame",
    "di",
    "parse_frame",
    "payloads",
]
