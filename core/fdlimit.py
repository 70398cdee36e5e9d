"""The process's open-file limit (RLIMIT_NOFILE): raised at start, read to size the caps.

Every poll, store connection, page and HTTP client holds a file descriptor. Distributions
start services with a soft limit of 1,024 and a hard limit far above it; `dutyd run` raises
the soft limit to the hard one, and the HTTP front door takes at most a quarter of what is
there (`dutyd.web.frontdoor.fit_to_descriptors`), so inbound connections never starve the
collectors' outbound sockets.
"""

from __future__ import annotations

import resource


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (as far as the OS allows); the soft
    limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        # An unlimited hard limit is refused by Linux above fs.nr_open: keep a finite one.
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def open_file_limit() -> int:
    """The soft open-file limit now in force (a large number when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20
