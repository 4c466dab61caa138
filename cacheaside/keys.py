"""Cache keys: a canonical encoding of bound arguments, its digest, readable templates, and tags.

A default key is ``<prefix>:<module.qualname>[@v<version>]:<digest>``. The digest is a
128-bit BLAKE2b of a canonical msgpack encoding of the bound arguments: stable across
processes, machines and Python runs (never ``hash()``), fixed in length, free of argument
values in plain text, and independent of ambient state (a ``Decimal`` is keyed exactly,
whatever the decimal context).

A template key (``key="user:{user_id}"``) is ``<prefix>:<formatted>[@v<version>]``.
Substituted values keep ``A-Z a-z 0-9 _ . -`` and percent-escape every other character,
so no value can forge the separator of another key. A tag (``tags=["user:{email}"]``) is
the formatted string itself, unescaped: ``invalidate_tags("user:ada@example.com")`` names
the same tag.

``KeyBuilder`` is made once per decorated function, and is the one place that knows how
``self`` and ``cls`` take part in keys: for calls, and for writers that evict the function.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from ._arguments import ArgMap, Plans, identity
from ._encoding import (
    PLAIN,
    SIMPLE,
    Unsupported,
    by_values,
    digest,
    encode_values,
    escape,
    instance_part,
    keyed_instance,
    norm,
    plain_digest,
)
from ._templates import FORMATTER, check_template, field_text, render_tag, template_fields, warn_on_ambiguous_fields
from .exceptions import CacheKeyError

__all__ = ["KeyBuilder", "check_template", "digest", "encode_values", "escape", "render_tag", "template_fields"]

def class_qualname(func: Any) -> str | None:
    """The qualname of the class a function is defined in (its qualname's parent), or None.

    A parent in angle brackets is a scope, not a class: ``<locals>``, and ``<listcomp>``,
    ``<genexpr>``, ... for a function made in a comprehension (their own scope before Python 3.12).
    """
    parts = getattr(func, "__qualname__", "").split(".")
    if len(parts) > 1 and not parts[-2].startswith("<"):
        return ".".join(parts[:-1])
    return None


def _params_of(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return []


#: ``build(prefix, instance, skip, args, kwargs)``: the key of one call (``instance`` is the bound
#: ``self``/``cls`` or None; ``skip``: the call's arguments leave out the first parameter).
Build = Callable[[str, Any, bool, tuple[Any, ...], dict[str, Any]], str]

#: ``key(prefix, writer_self, mapping)``: a target's key from a writer's arguments by name.
WriterKey = Callable[[str, Any, Mapping[str, Any]], str]


class KeyBuilder:
    """Builds the keys of one decorated function, for its calls and for the writers that evict it.

    Args:
        func: the undecorated function (unwrapped from ``classmethod``/``staticmethod``).
        name: ``module.qualname``, used in errors and as the namespace.
        binding: ``"function"`` (methods included: wrapt gives the instance with each call),
            ``"classmethod"`` or ``"staticmethod"``.
        ignore: parameter names left out of the key (``self``/``cls`` leave the instance or class out).
        template: a ``str.format`` template, or ``None``.
        key_fn: a callable returning the key's text, or ``None``.
        version: made part of every key when given.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str,
        binding: str = "function",
        ignore: Sequence[str] = (),
        template: str | None = None,
        key_fn: Callable[..., str] | None = None,
        version: int | str | None = None,
    ) -> None:
        self.name = name
        self.binding = binding
        try:
            self.signature = inspect.signature(func)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: its signature cannot be read ({exc}); wrap it in a function of your own") \
                from None
        self.params = list(self.signature.parameters.values())
        self.template = template
        self.key_fn = key_fn
        self.version_suffix = "" if version is None else f"@v{escape(str(version))}"
        self.namespace = name + self.version_suffix
        names = [p.name for p in self.params]
        for n in ignore:
            if n not in names:
                raise ValueError(
                    f"{name}: ignore= names {n!r}, which is not a parameter of the function; "
                    f"its parameters are {names}."
                )
        self.ignore = frozenset(ignore)
        #: The class the function is defined in (qualname), when it is a method or classmethod.
        self.owner = class_qualname(func) if binding != "staticmethod" else None
        self.module = getattr(func, "__module__", None)
        #: The class itself, once it exists (``_binding`` sets it when the class is created).
        self.owner_class: type | None = None
        #: The ``self``/``cls`` parameter, and whether ``ignore=`` leaves the instance or class out.
        self.first = names[0] if self.owner is not None and names else None
        self.ignore_instance = self.first is not None and self.first in self.ignore
        self.plans = Plans(self.signature, name=name, drop=self.ignore)
        self._plans = self.plans.by_skip
        self.arguments = ArgMap(self.signature, name=name)
        # A template of plain {name} fields only is formatted without string.Formatter.
        self._fields: list[tuple[str, str | None]] | None = None
        self._positions: list[tuple[str, int | None]] | None = None
        if template is not None:
            if not template:
                raise ValueError(f"{name}: key= is an empty template, which gives one key for every call")
            check_template(template, names, name, "key template")
            parts = list(FORMATTER.parse(template))
            warn_on_ambiguous_fields(template, parts, name)
            if all(f is None or (f.isidentifier() and not spec and not conv) for _, f, spec, conv in parts):
                self._fields = [(lit, f) for lit, f, _, _ in parts]
            # The same fields by position, for calls that pass every parameter positionally.
            if self._fields is not None and all(
                p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in self.params
            ):
                self._positions = [(lit, None if f is None else names.index(f)) for lit, f in self._fields]
        self._heads: dict[str, str] = {}
        #: The kind of key is chosen here, once, not per call.
        self.build: Build = (
            self._from_callable if key_fn is not None
            else self._from_template if template is not None
            else self._from_signature
        )

    # -- calls ---------------------------------------------------------------------

    def head(self, prefix: str) -> str:
        head = self._heads.get(prefix)
        if head is None:
            head = self._heads[prefix] = f"{prefix}:{self.namespace}:"
        return head

    def _from_signature(
        self, prefix: str, instance: Any, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        # The hot path of every call: kept to one frame (plus the plan's, when defaults
        # or ignored parameters make one needed), since a hit is little more than this.
        plan = self._plans[skip].get(len(args) if not kwargs else (len(args), *kwargs))
        if plan is identity:
            values = args
        elif plan is not None:
            values = plan(args, kwargs)
        else:
            values = self.plans.values(skip, args, kwargs)
        if instance is not None and skip and not self.ignore_instance and keyed_instance(instance):
            values = (*values, instance_part(instance))
        # Plain arguments (the usual case) are looked up, or packed, here, without another frame.
        simple = True
        for v in values:
            t = type(v)
            if t not in SIMPLE:
                if t not in PLAIN:
                    return self._digest_key(prefix, values)
                simple = False
        text = by_values.get(values) if simple else None
        if text is None:
            text = plain_digest(values, simple)
            if text is None:
                return self._digest_key(prefix, values)
        head = self._heads.get(prefix)
        if head is None:
            head = self.head(prefix)
        return head + text

    def _digest_key(self, prefix: str, values: tuple[Any, ...]) -> str:
        """The default key for ``values`` (bound arguments in key order), whatever their types."""
        try:
            data = encode_values(values)
        except Unsupported as exc:
            raise self._unsupported(exc, values) from None
        text = digest(data)
        head = self._heads.get(prefix)
        if head is None:
            head = self.head(prefix)
        return head + text

    def _from_callable(
        self, prefix: str, instance: Any, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        assert self.key_fn is not None
        text = self.key_fn(*args, **kwargs)
        if not isinstance(text, str):
            raise TypeError(
                f"{self.name}: key= callable returned {type(text).__name__}, not str; return the key text."
            )
        return f"{prefix}:{text}{self.version_suffix}"

    def _from_template(
        self, prefix: str, instance: Any, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        positions = self._positions
        if positions is not None and not kwargs and len(args) + skip == len(self.params):
            values = (instance, *args) if skip else args
            text = "".join([lit if i is None else lit + field_text(values[i]) for lit, i in positions])
            return f"{prefix}:{text}{self.version_suffix}"
        return self.render(prefix, self.mapping(instance, skip, args, kwargs))

    def render(self, prefix: str, mapping: Mapping[str, Any]) -> str:
        """The template key for arguments by parameter name."""
        assert self.template is not None
        try:
            if self._fields is None:
                text = FORMATTER.vformat(self.template, (), mapping)
            else:  # plain {name} fields: no Formatter machinery per call
                text = "".join([lit + field_text(mapping[f]) if f else lit for lit, f in self._fields])
        except Exception as exc:
            raise CacheKeyError(
                f"{self.name}: key template {self.template!r} cannot be formatted with this call's arguments "
                f"({type(exc).__name__}: {exc})"
            ) from None
        return f"{prefix}:{text}{self.version_suffix}"

    def mapping(self, instance: Any, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults applied, ``self``/``cls`` included."""
        mapping = self.arguments(skip, args, kwargs)
        if skip and self.params:
            mapping[self.params[0].name] = instance
        return mapping

    def tags(
        self, templates: Sequence[str], instance: Any, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, ...]:
        """The tags of a call: each template formatted with its arguments."""
        mapping = self.mapping(instance, skip, args, kwargs)
        return tuple(render_tag(t, mapping, self.name) for t in templates)

    def _unsupported(self, exc: Unsupported, values: tuple[Any, ...]) -> CacheKeyError:
        names = [p.name for p in self.params if p.name not in self.ignore]
        if self.first is not None and self.first in names:
            names.remove(self.first)
        where, culprit = "an argument", exc.value_type
        for pname, value in zip(names, values, strict=False):
            try:
                norm(value)
            except (Unsupported, RecursionError):
                where, culprit = f"parameter {pname!r}", type(value)
                break
        else:
            if len(values) > len(names):
                where, culprit = f"the instance ({self.first})", type(values[-1])
        what = f"is a {culprit.__module__}.{culprit.__qualname__}"
        if exc.reason:
            return CacheKeyError(
                f"{self.name}: {where} {what} that cannot be part of a cache key: {exc.reason}. Leave it out "
                f"with ignore=[...], or give the function a key= template or callable."
            )
        return CacheKeyError(
            f"{self.name}: {where} {what}, which cannot be part of a cache key. Leave it out with "
            f"ignore=[...], give the function a key= template or callable, or define __cache_key__() on the type."
        )

    # -- writers ---------------------------------------------------------------------

    def owns(self, obj: Any) -> bool:
        """Whether ``obj`` is an instance (for a classmethod: a class) of the function's class or a subclass."""
        if self.owner is None or obj is None or isinstance(obj, type) != (self.binding == "classmethod"):
            return False
        cls = obj if isinstance(obj, type) else type(obj)
        if self.owner_class is not None:
            return issubclass(cls, self.owner_class)
        return any(c.__qualname__ == self.owner and c.__module__ == self.module for c in cls.__mro__)

    def keyed_by_instance(self) -> str | None:
        """Why keys include the instance or class; None when they leave it out (or it is not known yet)."""
        if self.first is None or self.ignore_instance:
            return None
        if self.template is not None and self.first in template_fields(self.template):
            what = "class" if self.binding == "classmethod" else "instance"
            return f"the {what} (its template uses {{{self.first}}})"
        if self.binding == "classmethod":
            return f"the class ({self.first}), so that subclasses get their own entries"
        if self.owner_class is not None and hasattr(self.owner_class, "__cache_key__"):
            return f"the instance ({self.owner}.__cache_key__())"
        return None

    def _supplied_by(self, writer_kind: str) -> bool:
        """Whether a writer of this kind ("function", "method", "classmethod", "staticmethod") can give
        the instance or class this function's key needs: a method its ``self`` (or its class), a
        classmethod its ``cls`` (for a classmethod target only)."""
        return writer_kind == "method" or (writer_kind == "classmethod" and self.binding == "classmethod")

    def check_writer_class(self, writer: str, writer_class: type) -> None:
        """A writer method's class, once it exists: ValueError if it cannot supply a key's instance or class."""
        why = self.keyed_by_instance()
        if why is not None and not (self.owner_class is not None and issubclass(writer_class, self.owner_class)):
            raise ValueError(
                f"{writer} cannot evict {self.name}: its key includes {why}, which only a method of "
                f"{self.owner} (or of a subclass) can supply, and {writer_class.__qualname__} is not one. "
                "Evict it by tags= or keys= instead."
            )

    def for_writer(self, writer: str, supplies: Collection[str], writer_kind: str) -> WriterKey:
        """How a writer's arguments, by name, give this function's key; ValueError if they can't.

        ``supplies`` are the writer's parameter names (without its own ``self``/``cls``);
        ``writer_kind`` is "function", "method", "classmethod" or "staticmethod": a method's own
        ``self``/``cls`` can supply a key that includes the instance or class (if it is one of the
        function's class; ``check_writer_class`` checks that once the writer's class exists).
        """
        if self.key_fn is not None:
            needed = [
                p.name for p in _params_of(self.key_fn)
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
        elif self.template is not None:
            fields = template_fields(self.template)
            defaults = {p.name for p in self.params if p.default is not p.empty}
            needed = [f for f in fields if f not in defaults and f != self.first]
        else:
            needed = [
                p.name for p in self.params
                if p.name not in self.ignore and p.name != self.first
                and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            ]
        for pname in needed:
            if pname not in supplies:
                raise ValueError(
                    f"{writer} cannot supply parameter {pname!r} of its target {self.name}: the writer has no "
                    f"parameter of that name. Add it to the writer, or evict by tags (tags= on both "
                    f"decorators) or explicit keys (keys=)."
                )
        why = self.keyed_by_instance()
        if why is not None and not self._supplied_by(writer_kind):
            raise ValueError(
                f"{writer} cannot evict {self.name}: its key includes {why}, which only a method of "
                f"{self.owner} (or of a subclass) can supply. Make the writer such a method, or evict by "
                f"tags= or keys=."
            )
        return self._writer_key

    def _writer_instance(self, writer_self: Any) -> Any:
        """The ``self``/``cls`` a writer's call gives the key; None when the key leaves it out."""
        if self.first is None or self.ignore_instance:
            return None
        if self.binding == "classmethod":
            cls = writer_self if isinstance(writer_self, type) else type(writer_self)
            if writer_self is not None and self.owns(cls):
                return cls
        elif writer_self is not None and self.owns(writer_self):
            return writer_self
        if self.keyed_by_instance() is not None:
            raise CacheKeyError(
                f"{self.name}: its key includes {self.keyed_by_instance()}, and the writer is not a method "
                f"of {self.owner} (or of a subclass): evict it by tags= or keys= instead."
            )
        return None

    def _writer_key(self, prefix: str, writer_self: Any, mapping: Mapping[str, Any]) -> str:
        instance = self._writer_instance(writer_self)
        if self.key_fn is not None:
            names = {p.name for p in _params_of(self.key_fn)}
            return self._from_callable(prefix, None, False, (), {k: v for k, v in mapping.items() if k in names})
        if self.template is not None:
            named = {p.name: p.default for p in self.params if p.default is not p.empty}
            named.update(mapping)
            if self.first is not None:
                named[self.first] = instance
            return self.render(prefix, named)
        values = tuple(mapping[p.name] if p.name in mapping else _default(p)
                       for p in self.params if p.name not in self.ignore and p.name != self.first)
        if instance is not None and keyed_instance(instance):
            values = (*values, instance_part(instance))
        return self._digest_key(prefix, values)


def _default(param: inspect.Parameter) -> Any:
    """A parameter's value when a writer does not supply it (checked at decoration to have one)."""
    if param.kind is param.VAR_POSITIONAL:
        return ()
    if param.kind is param.VAR_KEYWORD:
        return {}
    return param.default
