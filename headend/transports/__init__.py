"""Asyncio transports of the comms front-end: TCP dial-out, pyserial ports and URLs, dial-in."""

from headend.transports.base import LinkDown, LinkError, LinkSpec, LinkUnreachable, parse_link_url
from headend.transports.frontend import FrontEnd, Job, Link, LinkSettings, NoAnswer

__all__ = [
    "FrontEnd",
    "Job",
    "Link",
    "LinkDown",
    "LinkError",
    "LinkSettings",
    "LinkSpec",
    "LinkUnreachable",
    "NoAnswer",
    "parse_link_url",
]
