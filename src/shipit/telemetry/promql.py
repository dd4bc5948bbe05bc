"""Which series names a PromQL expression selects: a small lexer, enough to check references.

Owns ``selected_names(expr)``, used by tests and generators to prove that every rule and panel
reads only metrics the catalog defines (or recording rules shipit itself defines). It is not a
PromQL parser: it strips strings, label matchers, range/offset brackets and grouping clauses,
then returns the identifiers that are not functions or keywords. It must not evaluate anything.
"""

from __future__ import annotations

import re

_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
        "offset", "bool", "inf", "nan", "atan2",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER_BEFORE = re.compile(r"[0-9.]$")


def selected_names(expr: str) -> set[str]:
    """Metric names ``expr`` selects (``rate(x_total[5m])`` -> ``{"x_total"}``).

    Grafana's ``$__rate_interval``-style variables are treated as durations and ignored.
    """
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        word, end = match.group(0), match.end()
        before = text[: match.start()]
        if word.lower() in _KEYWORDS or before.endswith("$"):
            continue
        if _NUMBER_BEFORE.search(before):  # the "e3" of 1e3, the "m" of 5m
            continue
        if text[end:].lstrip().startswith("("):  # a function call
            continue
        names.add(word)
    return names
