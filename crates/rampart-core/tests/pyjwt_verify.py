"""Verify tokens issued by Rampart with PyJWT, as a FastAPI service would.

Used by `token_interop.rs`; needs PyJWT and cryptography. Reads one JSON object
on stdin:

    {"jwks": {"keys": [...]},
     "cases": [{"name": "...", "token": "...", "issuer": "...", "audience": "...",
                "hs256_secret_hex": "..."}]}   # the secret only for HS256 cases

and prints one JSON object: {"NAME": {"ok": true, "header": {...}, "claims": {...}}
or {"ok": false, "error": "ExceptionName: message"}, ...}. The key is found by
the token's `kid` in the JWKS (or is the given HS256 secret), and only that
key's `alg` is allowed, as PyJWT's documentation recommends.
"""

import json
import sys

import jwt


def verify(jwks, case):
    header = jwt.get_unverified_header(case["token"])
    if "hs256_secret_hex" in case:
        key, alg = bytes.fromhex(case["hs256_secret_hex"]), "HS256"
    else:
        jwk = next(k for k in jwks["keys"] if k["kid"] == header.get("kid"))
        key, alg = jwt.PyJWK(jwk).key, jwk["alg"]
    claims = jwt.decode(
        case["token"],
        key,
        algorithms=[alg],
        audience=case["audience"],
        issuer=case["issuer"],
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    return {"ok": True, "header": header, "claims": claims}


def main():
    request = json.load(sys.stdin)
    results = {}
    for case in request["cases"]:
        try:
            results[case["name"]] = verify(request["jwks"], case)
        except Exception as error:  # every refusal is a result, not a crash
            results[case["name"]] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
