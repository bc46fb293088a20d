"""Who may call the API: JWT bearer tokens carrying a role, checked before any handler runs.

Roles and what they may do:
- `viewer`: read (every GET);
- `analyst`: read, and score, explain and label transactions;
- `ml-engineer`: read, and train, tune and promote models;
- `admin`: all of it.

A token is a JWT signed with HS256 (`FRAUD_JWT_SECRET`) or RS256 (verified with
`FRAUD_JWT_PUBLIC_KEY`), with an expiry (`exp`) and a `role` claim. `fraud token --role R --ttl T`
mints one for local use. A request without a valid token is answered 401 with `WWW-Authenticate`;
one whose role does not allow the endpoint 403. The paths in `FRAUD_AUTH_OPEN_PATHS` (liveness,
readiness, Prometheus scraping by default) need no token. With no key configured the API refuses to
start, unless `FRAUD_AUTH=disabled` says so explicitly (and /health then says auth is disabled).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from aiohttp import web

from core.settings import Settings
from ops_api.limits import RateLimits

READ, ANALYSE, TRAIN = "read", "analyse", "train"
ROLES: dict[str, frozenset[str]] = {
    "viewer": frozenset({READ}),
    "analyst": frozenset({READ, ANALYSE}),
    "ml-engineer": frozenset({READ, TRAIN}),
    "admin": frozenset({READ, ANALYSE, TRAIN}),
}
REALM = "fraud-scorer"


class AuthNotConfigured(Exception):
    """Neither a key to check tokens with nor FRAUD_AUTH=disabled."""


@dataclass(frozen=True)
class Auth:
    """How tokens are checked; `key` is None when auth is disabled."""

    algorithm: str
    key: str | None
    open_paths: frozenset[str]

    @property
    def enabled(self) -> bool:
        return self.key is not None

    def describe(self) -> dict:
        if not self.enabled:
            return {"mode": "disabled", "warning": "FRAUD_AUTH=disabled: every request is served without a token"}
        return {"mode": "jwt", "algorithm": self.algorithm, "open_paths": sorted(self.open_paths)}

    def claims_of(self, token: str) -> dict:
        """The token's claims, its role checked; jwt.InvalidTokenError when it is not to be trusted."""
        claims = jwt.decode(token, self.key, algorithms=[self.algorithm], options={"require": ["exp", "role"]})
        if claims["role"] not in ROLES:
            raise jwt.InvalidTokenError(f"unknown role {claims['role']!r}")
        return claims


def auth_from(settings: Settings) -> Auth:
    """The settings' auth; AuthNotConfigured when there is no key and auth is not disabled."""
    open_paths = frozenset(p.strip() for p in settings.auth_open_paths.split(",") if p.strip())
    if settings.auth == "disabled":
        return Auth(settings.jwt_algorithm, None, open_paths)
    key = settings.jwt_secret if settings.jwt_algorithm == "HS256" else _pem(settings.jwt_public_key)
    if not key:
        needed = "FRAUD_JWT_SECRET" if settings.jwt_algorithm == "HS256" else "FRAUD_JWT_PUBLIC_KEY"
        raise AuthNotConfigured(f"the API needs {needed} to check tokens with ({settings.jwt_algorithm}), "
                                f"or FRAUD_AUTH=disabled to serve every request without one")
    return Auth(settings.jwt_algorithm, key, open_paths)


def _pem(value: str | None) -> str | None:
    """A PEM given inline, or the path of a file holding it."""
    if not value or value.lstrip().startswith("-----BEGIN"):
        return value
    return Path(value).read_text()


def mint(settings: Settings, role: str, ttl_seconds: float, subject: str = "local",
         private_key: str | None = None) -> str:
    """A token for `role`, valid `ttl_seconds`: HS256 with the settings' secret, or RS256 with
    `private_key` (a PEM, or the path of one)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if ttl_seconds <= 0:
        raise ValueError("ttl must be positive")
    now = int(time.time())
    claims = {"sub": subject, "role": role, "iat": now, "exp": now + int(ttl_seconds)}
    if settings.jwt_algorithm == "RS256":
        key = _pem(private_key)
        if not key:
            raise ValueError("RS256 tokens are signed with a private key: give --private-key")
        return jwt.encode(claims, key, algorithm="RS256")
    if not settings.jwt_secret:
        raise ValueError("FRAUD_JWT_SECRET is not set: there is nothing to sign HS256 tokens with")
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


LIMITED = "rate_limited_as"  # request key: (class, endpoint, callers) the request was counted as


def _refused(status: int, message: str, challenge: str | None = None) -> web.Response:
    response = web.json_response({"error": {"status": status, "message": message}}, status=status)
    if challenge is not None:
        response.headers["WWW-Authenticate"] = challenge
    return response


def authorize(auth: Auth, permissions: dict[tuple[str, str], str], limits: RateLimits | None = None,
              limit_classes: dict[tuple[str, str], str] | None = None):
    """The middleware: `permissions` maps (method, route path) to what the caller's role must allow;
    `limits` then counts the request against the caller's token and address (ops_api/limits.py), in
    the route's class of `limit_classes`, by default the permission it needs. With authentication
    disabled, only the address is counted."""
    limit_classes = {} if limit_classes is None else limit_classes

    @web.middleware
    async def middleware(request: web.Request, handler):
        # OPTIONS: a browser's CORS preflight, which carries no token (aiohttp-cors answers it).
        route = request.match_info.route.resource
        if (request.path in auth.open_paths or request.method == "OPTIONS"
                or (route is not None and route.canonical in auth.open_paths)):
            return await handler(request)
        # None: no such route, where any valid token gets its 404 or 405.
        need = permissions.get((request.method, route.canonical)) if route is not None else None
        callers = [f"address:{request.remote}"]
        if auth.enabled:
            refused, caller = _authorized(request, need)
            if refused is not None:
                return refused
            callers.insert(0, caller)
        if limits is not None and need is not None:
            endpoint = (request.method, route.canonical)
            request[LIMITED] = (limit_classes.get(endpoint, need), " ".join(endpoint), callers)
            refusal = await limits.hit(*request[LIMITED])
            if refusal is not None:
                response = _refused(429, f"rate limit of {refusal['X-RateLimit-Limit']} requests per window "
                                         f"on {request.method} {route.canonical} reached: retry in "
                                         f"{refusal['Retry-After']} s")
                response.headers.update(refusal)
                return response
        return await handler(request)

    def _authorized(request: web.Request, need: str | None) -> tuple[web.Response | None, str]:
        """(the refusal, "") for a request without a valid token or whose role may not do `need`;
        else (None, the caller as the rate limits count it)."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _refused(401, "a bearer token is required (Authorization: Bearer <token>)",
                            f'Bearer realm="{REALM}"'), ""
        try:
            claims = auth.claims_of(token.strip())
            role = claims["role"]
        except jwt.ExpiredSignatureError:
            return _refused(401, "the token has expired",
                            f'Bearer realm="{REALM}", error="invalid_token", error_description="expired"'), ""
        except jwt.InvalidTokenError as exc:
            return _refused(401, f"invalid token: {exc}",
                            f'Bearer realm="{REALM}", error="invalid_token"'), ""
        if need is not None and need not in ROLES[role]:
            allowed = sorted(r for r, can in ROLES.items() if need in can)
            return _refused(403, f"role {role!r} may not {request.method} {request.path}: "
                                 f"it needs one of {', '.join(allowed)}"), ""
        return None, f"token:{claims.get('sub', '')}:{role}"

    return middleware
