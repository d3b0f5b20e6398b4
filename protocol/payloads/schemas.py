"""SCHEMAS: every control byte (request, normal reply, follow-up reply, abnormal reply) to the
construct ``Struct`` of its data field, and parse_payload/build_payload over them."""

from __future__ import annotations

from typing import Any

from construct import Construct

from protocol.errors import ProtocolError
from protocol.payloads._blocks import (
    BROADCAST_TIME,
    CHANGE_BAUD,
    CHANGE_PASSWORD,
    CONTROL,
    DEMAND_CLEAR,
    EVENT_CLEAR,
    FREEZE,
    FUNCTION_NAMES,
    METER_CLEAR,
    OUTPUT,
    READ,
    READ_ADDRESS,
    READ_FOLLOWUP,
    SECURITY,
    WRITE,
    WRITE_ADDRESS,
    Empty,
    ErrReply,
    build_with,
    parse_with,
)
from protocol.payloads.commands import (
    BroadcastTimeRequest,
    ChangeBaudReply,
    ChangeBaudRequest,
    ChangePasswordReply,
    ChangePasswordRequest,
    ClearRequest,
    ControlErrorReply,
    ControlRequest,
    EventClearRequest,
    FreezeRequest,
    OutputReply,
    OutputRequest,
    WriteAddressRequest,
    WriteRequest,
)
from protocol.payloads.reads import ReadAddressReply, ReadFollowupReply, ReadFollowupRequest, ReadReply, ReadRequest
from protocol.payloads.security import SecurityReply, SecurityRequest, SecuritySerrReply

def _abnormal(fn: int) -> Construct:
    if fn == SECURITY:
        return SecuritySerrReply
    if fn == CONTROL:
        return ControlErrorReply
    return ErrReply


_REQUESTS: dict[int, Construct] = {
    SECURITY: SecurityRequest,
    BROADCAST_TIME: BroadcastTimeRequest,
    READ: ReadRequest,
    READ_FOLLOWUP: ReadFollowupRequest,
    READ_ADDRESS: Empty,
    WRITE: WriteRequest,
    WRITE_ADDRESS: WriteAddressRequest,
    FREEZE: FreezeRequest,
    CHANGE_BAUD: ChangeBaudRequest,
    CHANGE_PASSWORD: ChangePasswordRequest,
    DEMAND_CLEAR: ClearRequest,
    METER_CLEAR: ClearRequest,
    EVENT_CLEAR: EventClearRequest,
    CONTROL: ControlRequest,
    OUTPUT: OutputRequest,
}
_REPLIES: dict[int, Construct] = {
    SECURITY: SecurityReply,
    READ: ReadReply,
    READ_FOLLOWUP: ReadFollowupReply,
    READ_ADDRESS: ReadAddressReply,
    WRITE: Empty,
    WRITE_ADDRESS: Empty,
    FREEZE: Empty,
    CHANGE_BAUD: ChangeBaudReply,
    CHANGE_PASSWORD: ChangePasswordReply,
    DEMAND_CLEAR: Empty,
    METER_CLEAR: Empty,
    EVENT_CLEAR: Empty,
    CONTROL: Empty,
    OUTPUT: OutputReply,
}

#: control byte -> schema of its data field
SCHEMAS: dict[int, Construct] = {}
SCHEMAS.update(_REQUESTS)
SCHEMAS.update({0x80 | fn: schema for fn, schema in _REPLIES.items()})
SCHEMAS.update({0xC0 | fn: _abnormal(fn) for fn in _REPLIES})
# B1/B2: more follows (or, on 2013 meters, events pending)
SCHEMAS.update({0xA0 | fn: _REPLIES[fn] for fn in (READ, READ_FOLLOWUP)})


def _schema_for(control: int) -> Construct:
    schema = SCHEMAS.get(control)
    if schema is None:
        fn = control & 0x1F
        if fn not in FUNCTION_NAMES:
            raise ProtocolError("control", f"function code {fn:02X}H is not a DL/T 645-2007 function this project uses")
        if fn == BROADCAST_TIME and control & 0x80:
            raise ProtocolError("control", "08H broadcast time never gets a reply; the control byte is wrong")
        raise ProtocolError("control", f"control byte {control:02X}H is not a valid combination of direction/flags for {fn:02X}H")
    return schema


def parse_payload(control: int, data: bytes) -> dict[str, Any]:
    """The data field (PLAIN) of a frame with this control byte -> dict of its fields."""
    return parse_with(control, _schema_for(control), data)


def build_payload(control: int, fields: dict[str, Any] | None = None) -> bytes:
    """Fields -> the PLAIN data field for this control byte (inverse of parse_payload)."""
    return build_with(control, _schema_for(control), fields)


