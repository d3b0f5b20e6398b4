"""Payloads (the PLAIN data field) of every function code: construct schemas and builders.

``SCHEMAS`` maps each control byte (request, normal reply, follow-up reply, abnormal reply) to
the construct ``Struct`` that defines its data field; ``parse_payload(control, data)`` and
``build_payload(control, fields)`` use them.  The 03H security family and the level-99
forms of 14H and 1CH follow ``protocol/SECURITY.md``.  Choices the public sources leave open
are listed in ``protocol/README.md``.

One module per family: ``reads`` (11H/12H/13H), ``commands`` (08H, 14H..1DH), ``security``
(03H), what they share in ``_blocks``, and the table of them all in ``schemas``; every public
name is importable from ``protocol.payloads``.
"""

from __future__ import annotations

from protocol.payloads import _blocks, commands, reads, security
from protocol.payloads._blocks import *  # noqa: F403 - codes, flags, field types
from protocol.payloads.commands import *  # noqa: F403
from protocol.payloads.reads import *  # noqa: F403
from protocol.payloads.schemas import SCHEMAS, build_payload, parse_payload
from protocol.payloads.security import *  # noqa: F403

__all__ = ["SCHEMAS", "build_payload", "parse_payload"]
__all__ += _blocks.__all__
__all__ += reads.__all__
__all__ += commands.__all__
__all__ += security.__all__
