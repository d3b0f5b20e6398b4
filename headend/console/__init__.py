"""The operator console: server-rendered pages at ``/`` on the payments API's listener.

    app.py        pages, forms and their checks       sessions.py   server-side sessions, wrong-password limit
    charts.py     inline SVG bar charts               templates/    Jinja2 pages; static/ CSS and the polling script

`headend serve --api tcp://HOST:PORT` serves it unless `--no-console`; operators sign in with
their `headend operator` accounts.
"""

from headend.console.app import COOKIE, METER_ACTIONS, Console, add_console

__all__ = ["COOKIE", "METER_ACTIONS", "Console", "add_console"]
