"""URLs as shipit prints and serves them: credentials in a URL never leave the process.

``redact_url`` is the one place that hides the user-info part of a URL
(``http://user:secret@host:8000/v1`` -> ``http://***@host:8000/v1``); every log line,
``/shipit/status`` answer, table and error message that shows a replica URL goes through it.
The URL used to connect keeps its credentials. Pure: no I/O.
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s]*@")


def redact_url(url: str) -> str:
    """``url`` with its ``user:password@`` replaced by ``***@``; otherwise unchanged. Also
    takes a message that quotes URLs (an HTTP client's error): each one is redacted."""
    if "@" not in url:
        return url
    return _USERINFO.sub(r"\1***@", url)
