"""The reports over HTTP for operators and the console: ``GET /v1/reports/{name}``.

Operators, not channels, read the books: the request carries the operator's name and password
(HTTP Basic; the same argon2-checked accounts as the CLI) and the role must allow "read_books".
Query parameters mirror ``headend report``: from, to, by, district, segment, channel, group,
stale_days. The body is ``Report.to_dict()`` (integer fen, rates as ratios).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from typing import Any

from fastapi import FastAPI, Request

from headend.api.problems import ApiProblem
from headend.store import Store

__all__ = ["add_report_routes"]


def _operator(store: Store, request: Request) -> str:
    from headend.operators import AuthError, authenticate

    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("basic "):
        raise ApiProblem(401, "operator_auth_missing", "reports need an operator: HTTP Basic with the operator's"
                         " name and password")
    try:
        name, _, password = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        raise ApiProblem(401, "operator_auth_missing", "the Basic credentials are not base64 of name:password") from None
    try:
        return authenticate(store, name, password, "read_books").name
    except AuthError as exc:
        raise ApiProblem(403, "operator_refused", str(exc)) from None


def add_report_routes(app: FastAPI, store: Store, responses: dict[int | str, dict[str, Any]]) -> None:
    """Add ``GET /v1/reports/{name}`` to the API app, served from ``store``."""
    from headend.reports import REPORTS, Query, ReportError, run_report

    @app.get("/v1/reports/{name}", tags=["reports"], responses=responses,
             summary="A report for operators (HTTP Basic: operator name and password)",
             openapi_extra={"security": [{"operatorBasic": []}]})
    async def get_report(name: str, request: Request, to: str | None = None, by: str = "day",
                         district: str | None = None, segment: str | None = None, channel: str | None = None,
                         group: str | None = None, stale_days: int = 3) -> dict[str, Any]:
        request.state.target = name[:32]
        if name not in REPORTS:
            raise ApiProblem(404, "not_found", f"no report {name!r}; one of {', '.join(REPORTS)}", "name")
        first = request.query_params.get("from")   # "from" is a Python keyword: read it by hand
        op = _operator(store, request)
        last = to or (dt.datetime.fromtimestamp(store.now(), dt.timezone.utc)
                      + dt.timedelta(seconds=store.utc_offset_s)).date().isoformat()
        if first is None:
            try:
                first = (dt.date.fromisoformat(last) - dt.timedelta(days=30)).isoformat()
            except ValueError:
                first = last
        q = Query(first=first, last=last, by=by, district=district, segment=segment, channel=channel, group=group,
                  stale_days=stale_days)
        try:
            # a year of books is seconds of work: off the event loop that also serves payments
            rep = await asyncio.to_thread(run_report, store, name, q)
        except ReportError as exc:
            raise ApiProblem(422, "invalid_field", str(exc), exc.field) from None
        store.log_action(op, "report.read", name, {"from": first, "to": last, "by": by})
        return rep.to_dict()
