"""DL/T 645 link layer of the head-end, with no I/O: request/response matching and security sessions."""

from headend.link.security import SecurityError, SecuritySession, WalletStatus
from headend.link.session import Failure, LinkSession, LinkStats, LocalUsageError, Reply, Request

__all__ = [
    "Failure",
    "LinkSession",
    "LinkStats",
    "LocalUsageError",
    "Reply",
    "Request",
    "SecurityError",
    "SecuritySession",
    "WalletStatus",
]
