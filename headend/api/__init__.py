"""The payments API: channels pay over signed HTTP (FastAPI, served by uvicorn in `headend serve`).

    app.py       the endpoints and the order of checks     signing.py   the request signature
    service.py   the adapter to headend.payments            problems.py  refusals (RFC 9457)
    server.py    uvicorn on the caller's loop               models.py    bodies (the OpenAPI schema)
    config.py    the [api] config section                   callbacks.py result callbacks to channels

A channel's client signs with `ChannelAuth` (an httpx auth):

    client = httpx.Client(base_url="http://127.0.0.1:8080", auth=ChannelAuth(key_id, secret))
    client.post("/v1/payments", json={...})
"""

from headend.api.config import ApiConfig, api_config, parse_api_url
from headend.api.signing import ChannelAuth, sign, sign_headers, string_to_sign

__all__ = ["ApiConfig", "ChannelAuth", "api_config", "parse_api_url", "sign", "sign_headers", "string_to_sign"]
