#!/usr/bin/env python3
"""Sign requests for Rampart's HMAC request signatures (v2), standard library only.

    from rampart_sign import sign
    headers = sign("POST", "https://api.example.com/api/orders?b=2&a=1",
                   b'{"item": "book"}', key_id="hk_...", secret="hks_...")
    # -> {"X-Rampart-Key-Id": ..., "X-Rampart-Timestamp": ..., "X-Rampart-Nonce": ...,
    #     "X-Rampart-Signature": "v2=<hex>"}

Send the request exactly as signed: the same method, path and query text, and
the same body bytes. Each signed request gets a fresh nonce, so sign every
request (retries included) anew.

As a command (prints the response status, headers and body):

    python3 rampart_sign.py --key-id hk_... --secret hks_... GET 'https://api.example.com/api/x?q=1'
    python3 rampart_sign.py --key-id hk_... --secret hks_... POST https://api.example.com/api/orders '{"a": 1}'

The canonical request (see README.md, "Signed requests"): seven lines joined by
"\\n" -- "v2", the method in upper case, the path as sent, the canonical query,
the timestamp, the nonce, the lowercase hex SHA-256 of the body -- and the MAC
is HMAC-SHA256 of it keyed with the secret's ASCII bytes. (version="v1" makes
the older form, whose query sorts a repeated name's values; Rampart accepts it
only when they were sent in that order.)
"""

import argparse
import hashlib
import hmac
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["sign", "canonical_query", "canonical_request"]


def _form_decode(text):
    # `+` is a space and %XX a byte; a `%` without two hex digits stays as is
    # (unquote_to_bytes does exactly that).
    return urllib.parse.unquote_to_bytes(text.replace("+", " "))


def _encode(raw):
    # RFC 3986 unreserved characters stay, every other byte is %XX (upper case).
    return urllib.parse.quote_from_bytes(raw, safe="")


def canonical_query(query, version="v2"):
    """The canonical form of a raw query string (without the "?")."""
    pairs = []
    for piece in query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        pairs.append((_form_decode(name), _form_decode(value)))
    if version == "v1":
        pairs.sort()
    else:
        # Stable: the values of a repeated name keep the order they are sent in.
        pairs.sort(key=lambda pair: pair[0])
    return "&".join(_encode(n) + "=" + _encode(v) for n, v in pairs)


def canonical_request(method, path, query, timestamp, nonce, body, version="v2"):
    """The seven lines the MAC covers."""
    return "\n".join([
        version,
        method.upper(),
        path or "/",
        canonical_query(query or "", version),
        timestamp,
        nonce,
        hashlib.sha256(body or b"").hexdigest(),
    ])


def sign(method, url, body, key_id, secret, timestamp=None, nonce=None, version="v2"):
    """The four headers that sign this request.

    url: the full URL (or just the path and query) exactly as it will be sent.
    body: bytes (a str is encoded as UTF-8), or None for no body.
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    parts = urllib.parse.urlsplit(url)
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_urlsafe(24)
    canonical = canonical_request(method, parts.path, parts.query, timestamp, nonce, body, version)
    mac = hmac.new(secret.encode("ascii"), canonical.encode("utf-8"), hashlib.sha256).hexdigest()
    return {
        "X-Rampart-Key-Id": key_id,
        "X-Rampart-Timestamp": timestamp,
        "X-Rampart-Nonce": nonce,
        "X-Rampart-Signature": version + "=" + mac,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description="Send one request signed for Rampart.")
    parser.add_argument("--key-id", required=True)
    parser.add_argument("--secret", required=True, help="the signing secret (hks_...)")
    parser.add_argument("--header", "-H", action="append", default=[],
                        help="an extra header, 'Name: value' (repeatable)")
    parser.add_argument("method")
    parser.add_argument("url")
    parser.add_argument("body", nargs="?", help="the request body (sent as UTF-8)")
    args = parser.parse_args(argv)

    body = None if args.body is None else args.body.encode("utf-8")
    headers = sign(args.method, args.url, body, args.key_id, args.secret)
    for h in args.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    if body is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(args.url, data=body, headers=headers, method=args.method.upper())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, reply_headers, reply = response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        status, reply_headers, reply = e.code, e.headers, e.read()
    print(status)
    for name, value in reply_headers.items():
        print(f"{name}: {value}")
    print()
    sys.stdout.write(reply.decode("utf-8", "replace"))
    sys.stdout.write("\n")
    return 0 if status < 400 else 1


if __name__ == "__main__":
    sys.exit(main())
