"""What in a piece of text gives away a secret or the machine: credentials in URLs, key-like URL
parameters, absolute paths. One home for the patterns, used where text leaves the researcher's
hands or is stored for good:

- the HTTP providers' error messages (stored on failed dialogues, printed by ``batch``), which
  name the endpoint: :func:`without_credentials`;
- the report's copy of the spec (:func:`clonechat.analysis.provenance.redacted_spec`);
- the share bundle's scrubbing (:mod:`clonechat.share.scrub`), which also counts what it took.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

#: ``scheme://userinfo@``: the userinfo cannot hold ``/``, ``@``, spaces, quotes or brackets
#: (so ``[redacted]@`` is not found again).
URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s/@\"'<>\[\]]+)@")
#: A URL parameter named like a key (``?api_key=...``, ``&token=...``) and its value.
URL_PARAMETER = re.compile(
    r"(?P<name>[?&;][\w.-]*(?:key|token|secret|password|signature)[\w.-]*=)(?P<value>[^&#\s\"'<>\[\]:;,]+)",
    re.IGNORECASE,
)
#: An absolute path of at least two parts (``/home/me/x``, ``C:\\runs\\x``, ``~/models/y``), or a
#: ``file://`` URL. Not inside a URL: a path's first ``/`` follows no word, dot or slash.
PATH = re.compile(
    r"\bfile://[^\s\"'<>]*|(?<![\w.~/\\\]])(?:~|[A-Za-z]:)?[/\\](?:[\w.~-]+[/\\])+[\w.~-]*", re.IGNORECASE
)
#: Any URL (``scheme://...``) up to a space or quote.
ADDRESS = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]*")


def without_credentials(text: str) -> str:
    """``text`` with every URL's ``user:password@`` and key-like parameters replaced by
    ``[redacted]`` (the host stays: it says which server failed)."""
    text = URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    return URL_PARAMETER.sub(lambda m: f"{m.group('name')}{REDACTED}", text)
