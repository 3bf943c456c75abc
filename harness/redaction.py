"""Hiding passwords in any text that may quote a connection string.

A URL's userinfo is everything between ``scheme://`` and the LAST ``@`` before its host, and
the password is what follows the userinfo's first ``:``. A password typed unescaped may hold
``/``, ``@``, ``:``, ``?``, ``#``, ``%`` or spaces (``redis://:Sl4sh/PW77@h:6379/0``,
``redis://:At@PW77@h:6379/0``), so the userinfo cannot be found with a character class: a
regex that stops at the first ``/`` or ``@`` printed such passwords whole, or half.

Where a URL ends in free text is a guess, so the guess errs towards hiding: the userinfo may
run up to the last ``@`` on the same line, unless another URL (a whitespace-separated token
holding ``scheme://``) starts first. A URL without a password followed on the same line by an
``@`` (an e-mail address) therefore loses its host to ``***``; a password is never shown.
What is not handled: a password holding whitespace followed by ``x://`` reads as the start of
another URL.

This runs on every log line, so text without ``://`` or ``=`` costs two substring tests.
"""

from __future__ import annotations

import re

SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# Where a userinfo must stop at the latest: the end of the line, or the next URL on it.
BOUNDARY = re.compile(r"\n|\s\S*?[A-Za-z][A-Za-z0-9+.-]*://")
QUERY_SECRET = re.compile(r"(?i)\b(password|pwd)=([^&\s]*)")
MASK = "***"


def redact(text: str) -> str:
    """``text`` with the password of every URL in it, and every ``password=``/``pwd=``
    query value, replaced by ``***``; everything else (scheme, user, host, path) kept."""
    if "://" in text:
        text = _redact_userinfo(text)
    if "=" in text:
        text = QUERY_SECRET.sub(r"\1=" + MASK, text)
    return text


def _redact_userinfo(text: str) -> str:
    parts: list[str] = []
    pos = 0
    while (scheme := SCHEME.search(text, pos)) is not None:
        start = scheme.end()
        boundary = BOUNDARY.search(text, start)
        end = boundary.start() if boundary is not None else len(text)
        at = text.rfind("@", start, end)
        colon = text.find(":", start, at) if at >= 0 else -1
        if colon < 0:  # no userinfo, or a user name without a password
            parts.append(text[pos:start])
            pos = start
            continue
        parts.append(text[pos:colon + 1])
        parts.append(MASK)
        pos = at
    parts.append(text[pos:])
    return "".join(parts)
