"""Who may call the studio, how often, and from where: one ASGI middleware in front of every route of the server.

The rules, in the order they are applied to a request under ``/sdapi``, ``/api/v1``, ``/v1``, ``/v2beta``,
``/controlnet`` or ``/extensions`` (``/docs`` and ``/openapi.json`` stay open):

1. Bound to localhost, the ``Host`` header must name localhost: a web page cannot reach the studio by making
   its own domain resolve to 127.0.0.1 (DNS rebinding).
2. A state-changing request (POST, PUT, PATCH, DELETE, or a WebSocket) that carries an ``Origin`` must come from
   the server's own origin or one allowed with ``--cors-allow-origins``: a page on another site cannot make the
   studio generate. Scripts send no ``Origin`` and pass.
3. With ``--api-auth`` and/or ``--api-keys`` the caller must present HTTP Basic credentials or an API key
   (``Authorization: Bearer <key>`` or ``x-api-key``): 401 otherwise, with ``WWW-Authenticate``. With neither,
   the API is open on localhost and refused at start-up when exposed (``--listen``, ``--share``).
4. Each identity has a tier: requests per minute (``X-RateLimit-*`` on every admitted response, 429 with
   ``Retry-After`` over it), and on generation routes at most so many queued or running jobs and so many images
   per calendar month.

Every other route (the web UI's page, Gradio's ``/gradio_api/*``, ``/config``, ``/file=...``) passes rules 1 and 2
too. When the studio is exposed and the API has credentials but the UI has no login of its own (no
``--gradio-auth``), the UI is a way around the API's login, limits and quotas (a UI job has no API owner), so it
needs the API's credentials as well, and only the operator's: an ``--api-auth`` login (a browser asks for it) or a
key marked ``admin``; other keys get 403 there. With ``--gradio-auth`` Gradio's own login guards the UI and every
Gradio route that runs an event or reads a file (``/gradio_api/queue/join``, ``/call/*``, ``/run/*``, ``/upload``,
``/file=``, ``/config``): its users are the operator's logins. Rate limits count API requests only (a browser
polls the UI's routes constantly).

The admitted identity is left on ``request.state.api_owner`` for the dialects to pass as the job's owner, and
whether it is the operator on ``request.state.api_admin``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.context import ApiContext
from app.api.errors import error_body
from app.api.keys import KeyRing, KeysFileError, Tier, digest_of, load_keys, safety_rule
from app.api.ratelimit import MonthlyUsage, RateLimiter, month_key, seconds_to_next_month
from modules.safety import SafetyRule, apply_rule

if TYPE_CHECKING:
    from modules.jobs.queue import Job

API_PREFIXES = ("/sdapi/", "/api/v1/", "/v1/", "/v2beta/", "/extensions/", "/controlnet/")
OPEN_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})  # the API's description
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# POST routes that submit work to the queue: the job and monthly-image limits apply to these only.
GENERATION_ROUTES = re.compile(
    r"^(/sdapi/v1/(txt2img|img2img|extra-single-image|extra-batch-images|interrogate)|/api/v1/jobs"
    r"|/v1/images/(generations|edits|variations)"
    r"|/v2beta/stable-image/.+)/?$"
)
ACTIVE_STATES = ("queued", "running")
REALM = 'realm="Sfumato API"'
EXPOSED_WITHOUT_CREDENTIALS = (
    "Refusing to serve the API on a network address (--listen) or a public link (--share) without credentials: "
    "anyone who can reach it could use this machine. Set --api-auth user:password and/or --api-keys FILE."
)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class AccessConfigError(RuntimeError):
    """The access settings cannot be served safely (or the keys file is unusable); the message says why."""


def check_access_settings(context: ApiContext) -> KeyRing:
    """Fail before serving anything: the API exposed without credentials, a bad keys file, a malformed origin."""
    if context.serves_api and context.exposed and not context.has_credentials:
        raise AccessConfigError(EXPOSED_WITHOUT_CREDENTIALS)
    for origin in context.allowed_origins:
        if origin != "*" and _normal_origin(origin) is None:
            raise AccessConfigError(f"--cors-allow-origins: {origin!r} is not an origin like https://example.com")
    try:
        return load_keys(context.keys_file)
    except KeysFileError as error:
        raise AccessConfigError(f"--api-keys: {error}") from None


def access_policy(context: ApiContext) -> AccessPolicy:
    """The access rules of one server, hooked to its queue (job limits at submission, image counts at the end);
    ``AccessConfigError`` if unsafe to serve. Made once per server, before it serves anything."""
    policy = AccessPolicy(context, check_access_settings(context), RateLimiter(), MonthlyUsage(context.usage_file))
    queue = context.services.queue
    queue.add_listener(policy.on_job_end)
    queue.add_admission_check(policy.admit_job)
    queue.add_submission_rule(policy.apply_rules)
    return policy


def access_middleware(policy: AccessPolicy) -> Middleware:
    """The middleware, for an app that takes its middleware when it is built (Gradio's, through ``app_kwargs``):
    then no request is ever served before the rules are in place."""
    return Middleware(AccessMiddleware, policy=policy)


def install_access(app: FastAPI, context: ApiContext, policy: AccessPolicy | None = None) -> AccessPolicy:
    """Put the access middleware in front of every route of ``app``; ``AccessConfigError`` if unsafe to serve.

    ``policy`` is one whose middleware the app already has (built in by ``access_middleware``): it is only
    recorded, never stacked twice (which would count each request twice). Otherwise the middleware is added, also
    to an app that is already serving: Starlette builds its middleware stack on the first request and then
    refuses additions, so the stack is dropped here and rebuilt, with this middleware and every handler added so
    far, on the next request.
    """
    if policy is not None:
        app.state.sfumato_access = policy
        return policy
    policy = access_policy(context)
    app.state.sfumato_access = policy
    app.middleware_stack = None
    app.add_middleware(AccessMiddleware, policy=policy)
    return policy


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


# -- the decisions -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """Who a request counts against: ``key`` for counters, ``owner`` for jobs (None: anonymous local client)."""

    key: str
    owner: str | None
    label: str
    tier: Tier
    admin: bool = False  # the studio's operator: global options, launch flags, the guarded web UI
    safety: SafetyRule | None = None  # the NSFW filter its key (or tier) imposes; None: the studio's default


@dataclass(eq=False)
class Refusal(Exception):
    """A request turned away, as the JSON error every dialect uses."""

    status: int
    message: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    def add_missing(self, headers: dict[str, str]) -> None:
        present = {name.lower() for name, _ in self.headers}
        self.headers.extend(item for item in headers.items() if item[0].lower() not in present)

    def response(self, path: str = "") -> Response:
        """The refusal in the error shape the caller's client parses: OpenAI's under /v1, Stability's under
        /v2beta, A1111's (error/detail) elsewhere."""
        response = JSONResponse(dialect_error_body(path, self.status, self.message), status_code=self.status)
        for name, value in self.headers:
            response.headers.append(name, value)
        return response


def dialect_error_body(path: str, status: int, message: str) -> dict:
    if path.startswith("/v1/"):
        kinds = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
        return {"error": {"message": message, "type": kinds.get(status, "invalid_request_error"), "param": None,
                          "code": None}}
    if path.startswith("/v2beta/"):
        names = {401: "unauthorized", 403: "forbidden", 429: "rate_limit_exceeded"}
        return {"name": names.get(status, "bad_request"), "errors": [message]}
    return error_body(status, message, None)


class AccessPolicy:
    """The access rules of one API app, with its own counters (so apps and tests never share them)."""

    def __init__(self, context: ApiContext, keys: KeyRing, limiter: RateLimiter, usage: MonthlyUsage) -> None:
        self.context = context
        self.keys = keys
        self.limiter = limiter
        self.usage = usage
        self.known: dict[str, Identity] = {}  # owner -> identity, for the queue's admission check

    def admit(self, conn: HTTPConnection) -> tuple[Identity, dict[str, str]]:
        """The caller and the headers for its response, or ``Refusal`` (carrying the same headers)."""
        self.check_host(conn)
        headers = self.cors_headers(conn)
        try:
            self.check_origin(conn)
            try:
                identity = self.authenticate(conn)
            except Refusal as refusal:
                # a refused login still counts against its client address: the limit headers are on every
                # response, and guessing credentials is throttled like any other burst
                refusal.add_missing(self.count_request(self.client_identity(conn)))
                raise
            if identity.owner:
                self.known[identity.owner] = identity
            headers.update(self.count_request(identity))
            if _submits_generation(conn):
                self.check_jobs(identity)
                self.check_quota(identity)
        except Refusal as refusal:
            refusal.add_missing(headers)
            raise
        return identity, headers

    def admit_ui(self, conn: HTTPConnection) -> None:
        """A request for the web UI or one of Gradio's routes: the Host and Origin rules, and when the API's
        credentials guard the UI (``ApiContext.guards_ui``) the operator's login; ``Refusal`` otherwise."""
        self.check_host(conn)
        self.check_origin(conn)
        if not self.context.guards_ui:
            return
        try:
            identity = self.authenticate(conn)
        except Refusal as refusal:  # guessing the login through the UI is throttled like through the API
            refusal.add_missing(self.count_request(self.client_identity(conn)))
            raise
        if not identity.admin:
            raise Refusal(403, f"{identity.label} may use the API routes only; the web UI and Gradio's routes "
                               "need an --api-auth login or a key marked admin")

    # Host and Origin
    def check_host(self, conn: HTTPConnection) -> None:
        """While bound to localhost, only a localhost ``Host`` is served (DNS-rebinding protection)."""
        host = conn.headers.get("host")
        if self.context.exposed or host is None:
            return
        name = _split_authority(host)[0]
        if name not in self.context.local_hosts:
            raise Refusal(403, f"Host {host!r} is not this studio's address; it serves localhost only "
                               "(use --listen to serve other names)")

    def check_origin(self, conn: HTTPConnection) -> None:
        """A state-changing call from a page on another origin is refused."""
        origin = conn.headers.get("origin")
        unsafe = conn.scope["type"] == "websocket" or conn.scope.get("method") in STATE_CHANGING
        if origin is None or not unsafe or self.same_origin(conn, origin) or self.allowed_origin(origin):
            return
        raise Refusal(403, f"cross-origin request from {origin} refused; allow it with --cors-allow-origins")

    def same_origin(self, conn: HTTPConnection, origin: str) -> bool:
        normal = _normal_origin(origin)
        host = conn.headers.get("host")
        return normal is not None and host is not None and normal[1] == _authority(*_split_authority(host))

    def allowed_origin(self, origin: str) -> bool:
        allowed = self.context.allowed_origins
        normal = _normal_origin(origin)
        return "*" in allowed or (normal is not None and normal in {_normal_origin(item) for item in allowed})

    def cors_headers(self, conn: HTTPConnection) -> dict[str, str]:
        """Headers that let a browser page on an allowed origin read the response."""
        origin = conn.headers.get("origin")
        if origin is None or self.same_origin(conn, origin) or not self.allowed_origin(origin):
            return {}
        return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true",
                "Access-Control-Expose-Headers": "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, "
                                                 "Retry-After", "Vary": "Origin"}

    def preflight(self, conn: HTTPConnection) -> Response:
        """Answer a browser's CORS preflight: allowed origins may send any method and header."""
        self.check_host(conn)
        origin = conn.headers.get("origin", "")
        if not self.allowed_origin(origin):
            raise Refusal(403, f"cross-origin request from {origin} refused; allow it with --cors-allow-origins")
        headers = {**self.cors_headers(conn), "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
                   "Access-Control-Max-Age": "600"}
        requested = conn.headers.get("access-control-request-headers")
        if requested:
            headers["Access-Control-Allow-Headers"] = requested
        return Response(status_code=204, headers=headers)

    # who is calling
    def client_identity(self, conn: HTTPConnection) -> Identity:
        """The caller known only by its address: an anonymous local client, or one whose login failed."""
        client = conn.client.host if conn.client else "unknown"
        local_user = not self.context.has_credentials  # nobody logs in: whoever can reach it is the operator
        return Identity(f"ip:{client}", None, f"client {client}", self.keys.default_tier, admin=local_user)

    def authenticate(self, conn: HTTPConnection) -> Identity:
        """Basic credentials or an API key when any are configured; otherwise the anonymous local client."""
        if not self.context.has_credentials:
            return self.client_identity(conn)
        scheme, _, value = conn.headers.get("authorization", "").partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "basic" and self.context.api_auth:
            return self._basic_user(value)
        token = value if scheme == "bearer" else conn.headers.get("x-api-key", "").strip()
        if token and self.keys.keys:
            key = self.keys.find(token)
            if key is None:
                raise self._unauthorized("unknown API key")
            return Identity(f"key:{key.name}", f"key:{key.name}", f"API key {key.name!r}", key.tier, admin=key.admin,
                            safety=key.safety_rule)
        raise self._unauthorized("this API needs credentials: " + self._accepted())

    def _basic_user(self, value: str) -> Identity:
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise self._unauthorized("malformed Basic credentials") from None
        if not sep:
            raise self._unauthorized("malformed Basic credentials")
        matched = None
        for known_user, known_password in self.context.api_auth:  # compare every pair, digests of equal length
            user_ok = hmac.compare_digest(digest_of(user), digest_of(known_user))
            password_ok = hmac.compare_digest(digest_of(password), digest_of(known_password))
            if user_ok and password_ok:
                matched = known_user
        if matched is None:
            raise self._unauthorized("wrong user name or password")
        tier = self.keys.default_tier
        return Identity(f"user:{matched}", f"user:{matched}", f"user {matched!r}", tier, admin=True,
                        safety=safety_rule(tier.safety, tier.safety_always))

    def _accepted(self) -> str:
        ways = []
        if self.context.api_auth:
            ways.append("HTTP Basic (user:password)")
        if self.keys.keys:
            ways.append("an API key as 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
        return " or ".join(ways)

    def _unauthorized(self, message: str) -> Refusal:
        challenges = []
        if self.context.api_auth:
            challenges.append(("WWW-Authenticate", f"Basic {REALM}"))
        if self.keys.keys:
            challenges.append(("WWW-Authenticate", f"Bearer {REALM}"))
        return Refusal(401, message, challenges)

    # what it may do
    def count_request(self, identity: Identity) -> dict[str, str]:
        decision = self.limiter.hit(identity.key, identity.tier.requests_per_minute)
        headers = decision.headers()
        if not decision.allowed:
            raise Refusal(429, f"{identity.label} made more than {decision.limit} requests this minute "
                               f"(tier {identity.tier.name!r}); retry in {decision.reset_after} s",
                          [*headers.items(), ("Retry-After", str(decision.reset_after))])
        return headers

    def active_jobs(self, owner: str | None) -> list[Job]:
        if owner is None:
            return []
        return [job for job in self.context.services.queue.jobs()
                if job.owner == owner and job.state in ACTIVE_STATES]

    def check_jobs(self, identity: Identity) -> None:
        limit = identity.tier.concurrent_jobs
        if limit is None:
            return
        active = len(self.active_jobs(identity.owner))
        if active >= limit:
            raise Refusal(429, f"{identity.label} already has {active} job(s) queued or running; tier "
                               f"{identity.tier.name!r} allows {limit} at once. Wait for one to finish.")

    def check_quota(self, identity: Identity, adding: int = 0) -> None:
        """Images made this month plus those its queued and running jobs will make (plus ``adding``, the new
        job's) must stay under the quota."""
        limit = identity.tier.monthly_images
        if limit is None:
            return
        pending = sum(job.requested_images for job in self.active_jobs(identity.owner))
        used = self.usage.used(identity.key) + pending
        if used >= limit or used + adding > limit:
            wait = seconds_to_next_month()
            raise Refusal(429, f"{identity.label} has used its {limit} images for {month_key()} (tier "
                               f"{identity.tier.name!r}, {pending} of them still being made); the quota starts "
                               f"over next month", [("Retry-After", str(wait))])

    def admit_job(self, job: Job) -> None:
        """Queue admission check: the owner's job and image limits, checked atomically with the submission (the
        middleware's early check can be raced by parallel requests; this one cannot)."""
        from modules.jobs.queue import SubmissionRefused

        identity = self.known.get(job.owner) if job.owner else None
        if identity is None:
            return
        try:
            self.check_jobs(identity)
            self.check_quota(identity, adding=job.requested_images)
        except Refusal as refusal:
            retry = next((value for name, value in refusal.headers if name.lower() == "retry-after"), None)
            raise SubmissionRefused(refusal.message, refusal.status, int(retry) if retry else None) from None

    def apply_rules(self, request: object, owner: str | None) -> object:
        """Queue submission rule: a request from a key (or login) runs with the NSFW filter its rule imposes
        (``SafetyRule.apply``); anonymous callers and the web UI get the studio's default."""
        identity = self.known.get(owner) if owner else None
        return apply_rule(request, identity.safety if identity is not None else None)

    def on_job_end(self, job: Job) -> None:
        """Queue listener: count an owned job's images against its owner's month (every image generated, also
        the cells of a sweep whose result shows only its grids: the result's ``counted_images``)."""
        if job.owner and job.result is not None and job.result.counted_images:
            self.usage.add(job.owner, job.result.counted_images)


def _submits_generation(conn: HTTPConnection) -> bool:
    return conn.scope["type"] == "http" and conn.scope["method"] == "POST" and bool(
        GENERATION_ROUTES.match(conn.scope["path"]))


# -- origins and hosts ---------------------------------------------------------------------------------------------
def _split_authority(authority: str) -> tuple[str, int | None]:
    """``Host`` header -> (lower-case host name without IPv6 brackets, port or None)."""
    try:
        parts = urlsplit("//" + authority.strip())
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return authority.strip().lower(), None


def _authority(host: str, port: int | None, scheme: str | None = None) -> str:
    """``host[:port]`` with a default port (80/443, or the scheme's) left out, so equal addresses compare equal."""
    defaults = {_DEFAULT_PORTS[scheme]} if scheme in _DEFAULT_PORTS else {80, 443}
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None or port in defaults else f"{shown}:{port}"


def _normal_origin(origin: str) -> tuple[str, str] | None:
    """``scheme://host[:port]`` -> (scheme, authority); None for ``null`` or anything that is not an origin."""
    try:
        parts = urlsplit(origin.strip().rstrip("/"))
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path or parts.query:
        return None
    return scheme, _authority(parts.hostname.lower(), port, scheme)


# -- the middleware --------------------------------------------------------------------------------------------------
class AccessMiddleware:
    """Pure ASGI (no body buffering): refuses early, or adds the rate-limit headers to the route's answer."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        if not is_api_path(scope["path"]):
            try:
                self.policy.admit_ui(conn)
            except Refusal as refusal:
                await _refuse(refusal, scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        try:
            if _is_preflight(conn):
                await self.policy.preflight(conn)(scope, receive, send)
                return
            identity, headers = self.policy.admit(conn)
        except Refusal as refusal:
            await _refuse(refusal, scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["api_owner"], state["api_identity"], state["api_admin"] = identity.owner, identity.key, identity.admin
        await self.app(scope, receive, _adding_headers(send, headers))


def _is_preflight(conn: HTTPConnection) -> bool:
    return (conn.scope["type"] == "http" and conn.scope["method"] == "OPTIONS" and "origin" in conn.headers
            and "access-control-request-method" in conn.headers)


async def _refuse(refusal: Refusal, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":  # closing before accepting answers the handshake with 403
        await send({"type": "websocket.close", "code": 1008, "reason": refusal.message[:120]})
        return
    await refusal.response(scope.get("path", ""))(scope, receive, send)


def _adding_headers(send: Send, headers: dict[str, str]) -> Callable[[Message], Awaitable[None]]:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            response_headers = MutableHeaders(scope=message)
            for name, value in headers.items():
                response_headers[name] = value
        await send(message)

    return send_with_headers
