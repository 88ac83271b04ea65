"""Who may talk to `gpt-tui serve`: the token, the Host header and the Origin header.

Whoever drives the app can run code (an expression typed at a line pause is evaluated), so
every request must carry the launch's token, as Jupyter's server asks: `?token=` in the URL,
an `Authorization: token ...` header, or (the page's own WebSocket) `/ws/TOKEN`. No cookie:
browsers send a cookie for 127.0.0.1 to every port there, so any other local web server
would receive it. Only textual-serve's static files (its script, styles and fonts) are served
without it. A Host that is not the address serve is bound to is refused (DNS rebinding), and
so is an Origin that is not the page's own: browsers let any web page open a WebSocket to any
address, so the Origin is the only sign of who asked.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from .common import UserError

TOKEN_CHARS = re.compile(r"[A-Za-z0-9_.~-]+")
MIN_TOKEN = 16
WILDCARDS = {"0.0.0.0", "::", ""}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def check_token(token: str) -> str:
    """A --token given by hand: long enough to guess at no better than chance, URL-safe."""
    if len(token) < MIN_TOKEN or not TOKEN_CHARS.fullmatch(token):
        raise UserError(
            f"--token needs at least {MIN_TOKEN} characters, each a letter, digit or one of "
            "'-_.~' (leave --token out for a random one)"
        )
    return token


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """`host` as it appears in a URL and a Host header: IPv6 literals in brackets."""
    host = host.lower().strip("[]").split("%")[0]
    return f"[{host}]" if ":" in host else host


def machine_names() -> set[str]:
    """Every name and address of this machine, for a server bound to all interfaces."""
    import psutil

    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    for addrs in psutil.net_if_addrs().values():
        names.update(a.address for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6))
    return {url_host(n) for n in names}


def allowed_names(host: str) -> set[str]:
    """The Host names a browser may use to reach a server bound to `host`."""
    if host in WILDCARDS:
        return machine_names()
    names = {url_host(host)}
    if is_loopback(host):
        names |= {"localhost", "127.0.0.1", "[::1]"}
    return names


def split_host(header: str) -> tuple[str, str]:
    """A Host header's name and port (the scheme's default, 80, when it names none)."""
    header = header.lower()
    if header.startswith("["):  # an IPv6 literal
        name, _, rest = header.partition("]")
        name, sep, port = name + "]", rest[:1], rest[1:]
        if rest and sep != ":":
            return name, ""
    else:
        name, sep, port = header.partition(":")
    return name, port if sep else "80"


@dataclass(frozen=True)
class Guard:
    """The checks every request passes before textual-serve sees it."""

    token: str
    port: int
    names: frozenset[str]

    def host_ok(self, host: str | None) -> bool:
        if not host:
            return False
        name, port = split_host(host)
        return name in self.names and port == str(self.port)

    def origin_ok(self, request: web.Request) -> bool:
        """No Origin (not a browser) or the page's own; the Host was checked already."""
        origin = request.headers.get("Origin")
        return origin is None or origin.lower() == f"http://{request.host.lower()}"

    def token_in(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("token "):
            return auth[6:].strip()
        return request.query.get("token") or request.match_info.get("token")

    def token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def refusal(self, request: web.Request) -> str | None:
        """Why `request` is refused, or None."""
        if not self.host_ok(request.headers.get("Host")):
            return f"Host {request.headers.get('Host')!r} is not the address gpt-tui serves on"
        if not self.origin_ok(request):
            return f"a page from {request.headers.get('Origin')!r} may not drive this app"
        if isinstance(request.match_info.route.resource, web.StaticResource):
            return None  # textual-serve's own script, styles and fonts: the same for everyone
        given = self.token_in(request)
        if given is None:
            return "this server needs its token: open the URL gpt-tui serve printed (?token=...)"
        if not self.token_ok(given):
            return "wrong token: open the URL gpt-tui serve printed (?token=...)"
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        why = self.refusal(request)
        if why is not None:
            raise web.HTTPForbidden(text=f"403 Forbidden: {why}\n")
        response = await handler(request)
        if not response.prepared:  # a WebSocket's handler returns when it has ended
            response.headers.setdefault("Referrer-Policy", "no-referrer")
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response
