"""Target addresses fit to show to people: in the API, the status page, logs, metrics and
error messages. A URL may carry a password (`http://user:pw@host/`), a token in its query
(`?apikey=...`) or in its path (push URLs: `https://push.example/api/push/<token>`); those
parts never leave the config: a URL shows as its scheme, host and first path segment."""

from __future__ import annotations

import re

# What may stand between `scheme://` and the path once user info is gone: a host name or an
# IPv4 address or a bracketed IPv6 literal, and an optional numeric port.
_AUTHORITY = re.compile(r"(\[[0-9A-Za-z:.%]*\]|[^\s:/@\[\]]*)(:[0-9]*)?")


def redact_address(address: str) -> str:
    """`address` without user info, query and fragment when it is a URL (`scheme://...`), and
    its path cut after the first segment (`/api/…`); host, host:port and [v6]:port addresses
    as they are.

    Works on malformed URLs too (a config error quotes them): user info is everything up to
    the last `@` before the query, so a password holding `/` does not show either; what is left
    must then look like host[:port], else the whole authority is withheld (a password holding
    `?` or `#` would otherwise show in part)."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        return address
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    head = rest[:cut]
    at = head.rfind("@")
    if at >= 0:
        head = head[at + 1 :]
    authority, slash, path = head.partition("/")
    if not _AUTHORITY.fullmatch(authority):
        return f"{scheme}://<address withheld: not host[:port]>"
    first, more, rest = path.partition("/")
    if more and rest:
        first += "/…"
    elif more:
        first += "/"
    return f"{scheme}://{authority}{slash}{first}"
