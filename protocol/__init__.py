"""DL/T 645-2007 frames, payloads and data identifiers for prepaid645 (head-end side).

``FrameSchema`` (construct) is the canonical definition; ``parse_frame``/``build_frame`` are
the fast codec the head-end uses, proven identical to it by tests/protocol.
"""

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
    "parse_frame",
]
