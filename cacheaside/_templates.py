"""Templates: readable keys (``key="user:{user_id}"``, values escaped) and tags (formatted as they are).

A key template's substituted values keep ``A-Z a-z 0-9 _ . -`` and percent-escape every
other character, so no value can forge the separator of another key. A tag is the
formatted string itself, so ``invalidate_tags("email:ada@example.com")`` names the tag
``tags=["email:{email}"]`` gave that call: both sides render it with ``render_tag``
(or take it as it is), and the store alone decides how a tag is named in its bookkeeping.
"""

from __future__ import annotations

import re
import string
from collections.abc import Collection, Mapping
from typing import Any

from ._encoding import escape
from .exceptions import CacheKeyError, warn

__all__ = ["FORMATTER", "check_template", "field_text", "render_tag", "template_fields", "warn_on_ambiguous_fields"]


def field_text(value: Any) -> str:
    """A plain template field's text: ``format(value, "")``, escaped (ints have nothing to escape)."""
    if type(value) is int:
        return str(value)
    return escape(format(value, ""))


class EscapingFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        return escape(super().format_field(value, format_spec))


FORMATTER = EscapingFormatter()
PLAINFORMATTER = string.Formatter()


def template_fields(template: str) -> list[str]:
    """The parameter names a ``str.format`` template refers to (``"{order.id}"`` -> ``order``)."""
    names = []
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None:
            continue
        root = re.match(r"[^.\[]*", field)
        names.append(root.group(0) if root else "")
    return names


def check_template(template: object, names: Collection[str], owner: str, what: str) -> str:
    """A ``str.format`` template whose fields all name parameters in ``names``, else a clear error."""
    if not isinstance(template, str):
        raise TypeError(f"{owner}: each {what} must be a str.format template, got {type(template).__name__}")
    try:
        fields = template_fields(template)
    except ValueError as exc:
        raise ValueError(f"{owner}: {what} {template!r} is not a valid str.format template ({exc})") from None
    for field in fields:
        if field not in names:
            raise ValueError(
                f"{owner}: {what} {template!r} has the field {{{field}}}, which names no parameter; "
                f"use one of {list(names)} (attribute and index access are allowed: {{order.id}}, {{items[0]}})."
            )
    return template


def render_tag(template: str, mapping: Mapping[str, Any], owner: str) -> str:
    """A tag: ``template`` formatted with ``mapping``, unescaped (a tag is the formatted string itself)."""
    try:
        return PLAINFORMATTER.vformat(template, (), mapping)
    except Exception as exc:
        raise CacheKeyError(
            f"{owner}: tag template {template!r} cannot be formatted with this call's arguments "
            f"({type(exc).__name__}: {exc})"
        ) from None


def warn_on_ambiguous_fields(template: str, parts: list[Any], name: str) -> None:
    """Warn when two fields are separated only by characters substituted values keep (``A-Za-z0-9_.-``):
    ``"doc:{tenant}-{doc}"`` gives ``("acme-corp", "1")`` and ``("acme", "corp-1")`` one key."""
    previous = None
    for literal, field, spec, _ in parts:
        if field is not None and spec and "." in spec:
            warn(
                f"{name}: key template {template!r} formats {{{field}}} with a precision ({spec!r}), which "
                "cuts values short, so different arguments can give one key; leave the precision out."
            )
            return
        if previous is not None and (field is not None) and _KEPT.fullmatch(literal):
            sep = f"separated only by {literal!r}" if literal else "side by side"
            warn(
                f"{name}: key template {template!r} has {{{previous}}} and {{{field}}} {sep}, which substituted "
                "values may contain as they are, so different arguments can give one key; separate fields "
                "with a character that is escaped, such as ':' or '/'."
            )
            return
        if field is not None:
            previous = field
        elif literal:
            previous = None


#: What a separator between two fields must not be made of only: characters values keep, and "%",
#: which starts the escapes of the others.
_KEPT = re.compile(r"[A-Za-z0-9_.%\-]*")
