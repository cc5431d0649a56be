"""An AI quote service that leaves security to Rampart.

Rampart (see rampart.toml beside this file) registers and logs in users,
checks their tokens, enforces roles, rate limits and a daily spending budget,
and forwards allowed requests here with the caller's identity. This app only
does its own work:

- ``POST /quotes``: a quote for a prompt. The "AI" is a stand-in: the price
  follows from the prompt's length, deterministically. What the call cost is
  reported in the ``X-Cost`` header, which Rampart debits from the caller's
  daily budget.
- ``GET /quotes``: the caller's own quotes.
- ``GET /admin/stats``: quotes per user (Rampart admits only the ``admin``
  role; the app checks again).

Who is calling comes from one of two sources, chosen at start:

- Header mode (default): ``X-Rampart-User`` and ``X-Rampart-Roles``. Rampart
  removes any copy a client sends, on every route, so these headers are true
  exactly when every request passes through Rampart: bind the app to loopback
  or a private network that only Rampart reaches.
- JWT mode (``QUOTES_JWKS_URL`` set): the short-lived token Rampart adds in
  ``X-Rampart-Jwt`` (``[auth.headers] internal_jwt``) is verified with PyJWT
  against Rampart's JWKS; the plain headers are ignored. A request that did
  not come through Rampart has no valid token and is refused, wherever the
  app listens.

Environment (the ``QUOTES_`` prefix keeps these apart from Rampart's own
``RAMPART_*`` overrides):

- ``QUOTES_JWKS_URL``: e.g. ``http://127.0.0.1:8080/.well-known/jwks.json``.
- ``QUOTES_JWT_ISSUER``: Rampart's ``[identity] issuer`` (required in JWT mode).
- ``QUOTES_JWT_AUDIENCE``: ``[auth.headers] internal_jwt_audience``
  (default ``rampart-upstream``).
- ``QUOTES_JWT_HEADER``: ``[auth.headers] internal_jwt`` (default ``x-rampart-jwt``).

Run: ``uvicorn app:app --host 127.0.0.1 --port 8000``.
"""

import json
import logging
import math
import os
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Deque, Dict, FrozenSet, List, Optional, Tuple
from urllib.parse import unquote

import jwt
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel, Field

log = logging.getLogger("quotes")

# Pricing of the stand-in model: a "token" per four characters of prompt.
COST_PER_TOKEN = Decimal("0.01")  # what a call costs us, reported in X-Cost
PRICE_BASE = Decimal("1.00")  # what the quote offers the customer
PRICE_PER_TOKEN = Decimal("0.05")
MAX_PROMPT_CHARS = 4000
# In-memory storage: the newest quotes of each user are kept, no more.
QUOTES_KEPT_PER_USER = 100

# Only asymmetric algorithms: Rampart's JWKS publishes public keys, and a key
# is used with its own algorithm only.
ALLOWED_ALGORITHMS = {"EdDSA", "ES256", "RS256"}
# Unknown key ids make the JWKS be fetched again, at most this often.
JWKS_MIN_REFRESH_SECONDS = 10.0
JWKS_FETCH_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Caller:
    user: str
    roles: FrozenSet[str]


def unauthenticated(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


class RampartJwtVerifier:
    """Verifies Rampart's internal identity token against its JWKS.

    Keys are cached by ``kid``; a token naming an unknown ``kid`` (Rampart
    rotated its key) makes the JWKS be fetched again, at most once per
    ``JWKS_MIN_REFRESH_SECONDS``, so forged key ids cannot turn the app into a
    JWKS flooder.
    """

    def __init__(self, jwks_url: str, issuer: str, audience: str) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self._lock = threading.Lock()
        # kid → (key, its one algorithm)
        self._keys: Dict[str, Tuple[jwt.PyJWK, str]] = {}
        self._fetched_at = -math.inf

    def _fetch(self) -> None:
        with urllib.request.urlopen(self.jwks_url, timeout=JWKS_FETCH_TIMEOUT_SECONDS) as resp:
            document = json.load(resp)
        keys = {}
        for data in document.get("keys", []):
            if data.get("alg") in ALLOWED_ALGORITHMS and data.get("kid"):
                keys[data["kid"]] = (jwt.PyJWK(data), data["alg"])
        self._keys = keys

    def _key(self, kid: str) -> Optional[Tuple[jwt.PyJWK, str]]:
        with self._lock:
            key = self._keys.get(kid)
            if key is not None or time.monotonic() - self._fetched_at < JWKS_MIN_REFRESH_SECONDS:
                return key
            self._fetched_at = time.monotonic()
            try:
                self._fetch()
            except (OSError, ValueError, jwt.PyJWTError) as error:
                log.warning("cannot fetch the JWKS from %s: %s", self.jwks_url, error)
                raise HTTPException(status_code=503, detail="identity keys unavailable") from error
            return self._keys.get(kid)

    def caller(self, token: Optional[str]) -> Caller:
        if not token:
            raise unauthenticated("no identity token: call this service through Rampart")
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            found = self._key(kid) if isinstance(kid, str) else None
            if found is None:
                raise unauthenticated("identity token signed by an unknown key")
            key, algorithm = found
            if header.get("alg") != algorithm:
                raise unauthenticated("identity token has the wrong algorithm")
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=5,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise unauthenticated(f"invalid identity token ({type(error).__name__})") from error
        roles = claims.get("roles", [])
        if not isinstance(roles, list):
            raise unauthenticated("invalid identity token (roles)")
        return Caller(user=str(claims["sub"]), roles=frozenset(str(r) for r in roles))


JWKS_URL = os.environ.get("QUOTES_JWKS_URL", "")
JWT_HEADER = os.environ.get("QUOTES_JWT_HEADER", "x-rampart-jwt")
VERIFIER: Optional[RampartJwtVerifier] = None
if JWKS_URL:
    issuer = os.environ.get("QUOTES_JWT_ISSUER", "")
    if not issuer:
        raise RuntimeError("QUOTES_JWT_ISSUER must be set with QUOTES_JWKS_URL (Rampart's [identity] issuer)")
    VERIFIER = RampartJwtVerifier(JWKS_URL, issuer, os.environ.get("QUOTES_JWT_AUDIENCE", "rampart-upstream"))


def current_caller(request: Request) -> Caller:
    """The caller, as Rampart vouches for it. A plain (non-async) dependency:
    FastAPI runs it in a worker thread, so a JWKS fetch blocks no event loop."""
    if VERIFIER is not None:
        return VERIFIER.caller(request.headers.get(JWT_HEADER))
    user = unquote(request.headers.get("x-rampart-user", ""))
    if not user:
        raise unauthenticated("no caller identity: call this service through Rampart")
    roles = unquote(request.headers.get("x-rampart-roles", ""))
    return Caller(user=user, roles=frozenset(r for r in roles.split(",") if r))


class QuoteRequest(BaseModel):
    prompt: str = Field(..., min_length=1, max_length=MAX_PROMPT_CHARS)


class Quote(BaseModel):
    id: int
    prompt: str
    tokens: int
    price: str
    created_at: str


class QuoteStore:
    """Quotes in memory, per user (a demo: they are gone on restart)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_id = 1
        self._quotes: Dict[str, Deque[Quote]] = {}
        self._counts: Dict[str, int] = {}

    def add(self, user: str, prompt: str, tokens: int, price: Decimal) -> Quote:
        with self._lock:
            quote = Quote(
                id=self._next_id,
                prompt=prompt,
                tokens=tokens,
                price=str(price),
                created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            self._next_id += 1
            self._quotes.setdefault(user, deque(maxlen=QUOTES_KEPT_PER_USER)).append(quote)
            self._counts[user] = self._counts.get(user, 0) + 1
            return quote

    def of(self, user: str) -> List[Quote]:
        with self._lock:
            return list(self._quotes.get(user, ()))

    def counts(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._counts)


store = QuoteStore()

# Declares Rampart's token endpoint in the OpenAPI document, so that Swagger
# UI's "Authorize" button logs in through Rampart. The token itself is checked
# by Rampart, never here.
login_through_rampart = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)

app = FastAPI(title="AI quotes behind Rampart", dependencies=[Depends(login_through_rampart)])


@app.post("/quotes", status_code=201, response_model=Quote)
def create_quote(body: QuoteRequest, response: Response, caller: Caller = Depends(current_caller)) -> Quote:
    tokens = max(1, math.ceil(len(body.prompt) / 4))
    price = PRICE_BASE + tokens * PRICE_PER_TOKEN
    quote = store.add(caller.user, body.prompt, tokens, price)
    # Rampart reads this after the response and debits the caller's budget.
    response.headers["X-Cost"] = str(tokens * COST_PER_TOKEN)
    return quote


@app.get("/quotes")
def list_quotes(caller: Caller = Depends(current_caller)) -> dict:
    return {"quotes": store.of(caller.user)}


@app.get("/admin/stats")
def admin_stats(caller: Caller = Depends(current_caller)) -> dict:
    # Rampart already requires the role on /admin/**; checking again costs
    # nothing and keeps the rule true if the route table changes.
    if "admin" not in caller.roles:
        raise HTTPException(status_code=403, detail="requires role admin")
    counts = store.counts()
    return {"users": len(counts), "quotes": sum(counts.values()), "quotes_per_user": counts}
