"""The request signature: known answers computed with openssl, the header checks, the httpx signer."""

from __future__ import annotations

import httpx
import pytest

from headend.api.signing import (
    HEADER_KEY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    ChannelAuth,
    SignatureFormError,
    check_signature,
    read_signature_headers,
    sign,
    sign_headers,
)

SECRET = "channel-secret-1"
NONCE = "abcdefghijklmnop0123"

# printf 'PP645-HMAC-SHA256\nPOST\n/v1/payments\n1796461200\nabcdefghijklmnop0123\n%s' \
#   "$(printf '{"a":1}' | sha256sum | cut -d' ' -f1)" | openssl dgst -sha256 -hmac channel-secret-1
OPENSSL_POST = "31ab0142444112822d459b5b6860b280261046f4e1b4e0c51a8e238116668e53"
OPENSSL_GET_QUERY = "0011f7b6c04217d2983514ff6411ff4d2d9dcc30fdb35e033b285719cfcc7f2e"


def test_signature_matches_openssl():
    assert sign(SECRET, "POST", "/v1/payments", 1796461200, NONCE, b'{"a":1}') == OPENSSL_POST
    assert sign(SECRET.encode(), "get", "/v1/accounts/000000000042?x=1", 1796461200, NONCE, b"") == OPENSSL_GET_QUERY


@pytest.mark.parametrize("change", ["method", "path", "timestamp", "nonce", "body", "secret"])
def test_every_signed_part_changes_the_signature(change):
    args = dict(secret=SECRET, method="POST", path="/v1/payments", timestamp=1796461200, nonce=NONCE, body=b'{"a":1}')
    args[change] = {"secret": "other", "method": "PUT", "path": "/v1/payment", "timestamp": 1796461201,
                    "nonce": NONCE + "x", "body": b'{"a":2}'}[change]
    assert sign(**args) != OPENSSL_POST


def test_headers_round_trip_and_check():
    h = sign_headers("bank-1", SECRET, "POST", "/v1/payments", b"{}", timestamp=1796461200, nonce=NONCE)
    parts = read_signature_headers(h)
    assert (parts.key_id, parts.timestamp, parts.nonce) == ("bank-1", 1796461200, NONCE)
    assert check_signature(SECRET, parts, "POST", "/v1/payments", b"{}")
    assert not check_signature(SECRET, parts, "POST", "/v1/payments", b"{ }")
    assert not check_signature("wrong", parts, "POST", "/v1/payments", b"{}")


@pytest.mark.parametrize("header,value", [
    (HEADER_KEY, None), (HEADER_TIMESTAMP, None), (HEADER_NONCE, None), (HEADER_SIGNATURE, None),
    (HEADER_TIMESTAMP, "12.5"), (HEADER_TIMESTAMP, "-5"), (HEADER_NONCE, "short"), (HEADER_NONCE, "a b" * 8),
    (HEADER_SIGNATURE, "zz" * 32), (HEADER_SIGNATURE, "ab" * 31), (HEADER_KEY, "k" * 129),
])
def test_bad_headers_name_the_header(header, value):
    h = sign_headers("bank-1", SECRET, "POST", "/v1/payments", b"{}", timestamp=1796461200, nonce=NONCE)
    if value is None:
        del h[header]
    else:
        h[header] = value
    with pytest.raises(SignatureFormError) as e:
        read_signature_headers(h)
    assert e.value.field == header
    assert ("missing" in str(e.value)) == (value is None)


def test_httpx_auth_signs_what_is_sent():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        parts = read_signature_headers(request.headers)
        seen.append(parts)
        ok = check_signature(SECRET, parts, request.method, request.url.raw_path.decode(), request.content)
        return httpx.Response(200 if ok else 401)

    nonces = iter([NONCE, NONCE + "2"])
    auth = ChannelAuth("bank-1", SECRET, clock=lambda: 1796461200.7, nonce=lambda: next(nonces))
    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://x", auth=auth) as client:
        assert client.post("/v1/payments", json={"a": 1}).status_code == 200
        assert client.get("/v1/accounts/000000000042", params={"x": 1}).status_code == 200
    assert [p.nonce for p in seen] == [NONCE, NONCE + "2"]
    assert {p.timestamp for p in seen} == {1796461200}
