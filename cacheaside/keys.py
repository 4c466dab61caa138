"""Cache keys: a canonical encoding of bound arguments, its digest, and readable templates.

A default key is ``<prefix>:<module.qualname>[@v<version>]:<digest>``. The digest
is a 128-bit BLAKE2b of a canonical msgpack encoding of the bound arguments:
stable across processes, machines and Python runs (never ``hash()``), fixed in
length, and free of argument values in plain text.

A template key (``key="user:{user_id}"``) is ``<prefix>:<formatted>[@v<version>]``.
Substituted values keep ``A-Z a-z 0-9 _ . -`` and percent-escape every other
character, so no value can forge the separator of another key.

``KeyBuilder`` is compiled once per decorated function. Binding arguments to the
signature with ``inspect.Signature.bind`` on every call costs more than a whole
cachetools hit, so the builder binds each call *shape* (number of positional
arguments, names of keyword arguments) once, and replays a plan for that shape.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import inspect
import re
import string
import uuid
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgpack

from .exceptions import CacheKeyError

__all__ = ["KeyBuilder", "digest", "encode_values", "escape", "template_fields"]

_packb = msgpack.packb
_ExtType = msgpack.ExtType
_blake2b = hashlib.blake2b

# Exact types msgpack encodes canonically as they are (float is not here: -0.0 == 0.0).
_PLAIN = frozenset({int, str, bytes, bool, type(None)})

_SAFE = re.compile(r"[A-Za-z0-9_.\-]*")


class _Unsupported(Exception):
    def __init__(self, value: object) -> None:
        self.value_type = type(value)


def escape(text: str) -> str:
    """Keep ``A-Z a-z 0-9 _ . -`` and percent-escape every other character (UTF-8)."""
    if _SAFE.fullmatch(text):
        return text
    return "".join(
        ch if _SAFE.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        for ch in text
    )


def _sorted_join(items: Any) -> bytes:
    # Order-independent encoding of a dict or set: sort the members' own encodings.
    return b"".join(sorted(items))


def _norm(value: Any) -> Any:
    """Turn an argument value into a msgpack-encodable value that is equal for equal arguments."""
    t = type(value)
    if t in _PLAIN:
        if t is int and not -(2**63) <= value < 2**64:
            return _ExtType(1, str(value).encode())
        return value
    if t is float:
        return 0.0 if value == 0.0 else value  # -0.0 == 0.0
    if t is tuple or t is list:
        return [_norm(v) for v in value]
    if t is dict:
        return _ExtType(2, _sorted_join(_packb([_norm(k), _norm(v)]) for k, v in value.items()))
    if t is set or t is frozenset:
        return _ExtType(3, _sorted_join(_packb(_norm(v)) for v in value))
    cache_key = getattr(value, "__cache_key__", None)
    if cache_key is not None and not isinstance(value, type):
        return _ExtType(11, _packb([_type_name(t), _norm(cache_key())]))
    if isinstance(value, enum.Enum):
        return _ExtType(10, f"{_type_name(t)}.{value.name}".encode())
    if isinstance(value, _dt.datetime):
        if value.utcoffset() is not None:
            # Equal aware datetimes are the same instant, whatever their zone.
            utc = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
            return _ExtType(4, b"Z" + utc.isoformat().encode())
        return _ExtType(4, value.isoformat().encode())
    if isinstance(value, _dt.date):
        return _ExtType(5, value.isoformat().encode())
    if isinstance(value, _dt.time):
        return _ExtType(6, value.isoformat().encode())
    if isinstance(value, _dt.timedelta):
        return _ExtType(7, _packb([value.days, value.seconds, value.microseconds]))
    if isinstance(value, Decimal):
        # Decimal("1.10") == Decimal("1.1"): key their normalized form.
        text = "0" if value.is_zero() else str(value.normalize())
        return _ExtType(8, text.encode())
    if isinstance(value, uuid.UUID):
        return _ExtType(9, value.bytes)
    # Subclasses of the plain containers and scalars encode as their base.
    for base in (bool, int, str, bytes, float, tuple, list, dict, set, frozenset):
        if isinstance(value, base):
            convert: Any = base
            return _norm(convert(value))
    raise _Unsupported(value)


def _type_name(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


# One packer for the plain-types fast path: with no ``default`` hook it runs in C
# without releasing the GIL, so sharing it between threads is safe.
_fast_pack = msgpack.Packer().pack


def encode_values(values: Sequence[Any]) -> bytes:
    """Canonical bytes of a sequence of argument values (raises ``_Unsupported``)."""
    for v in values:
        if type(v) not in _PLAIN:
            break
    else:
        try:
            data: bytes = _fast_pack(values)
            return data
        except OverflowError:  # an int beyond 64 bits
            pass
    data = _packb([_norm(v) for v in values])
    return data


_digests: dict[bytes, str] = {}


def _identity(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """The binding plan of a call that passes every parameter positionally."""
    return args


def digest(data: bytes) -> str:
    """32 hex characters of BLAKE2b over ``data``, memoized for hot arguments.

    The memo is keyed by the canonical bytes, never by the argument values
    (``1``, ``1.0`` and ``True`` are equal dict keys but must not share a memo slot).
    """
    text = _digests.get(data)
    if text is None:
        if len(_digests) >= 4096:
            _digests.clear()
        text = _digests[data] = _blake2b(data, digest_size=16).hexdigest()
    return text


def _field_text(value: Any) -> str:
    """A plain template field's text: ``format(value, "")``, escaped (ints have nothing to escape)."""
    if type(value) is int:
        return str(value)
    return escape(format(value, ""))


class _EscapingFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        return escape(super().format_field(value, format_spec))


_FORMATTER = _EscapingFormatter()


def template_fields(template: str) -> list[str]:
    """The parameter names a ``str.format`` template refers to (``"{order.id}"`` -> ``order``)."""
    names = []
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None:
            continue
        root = re.match(r"[^.\[]*", field)
        names.append(root.group(0) if root else "")
    return names


# A bound-argument plan: turns (args, kwargs) of one call shape into the bound values.
_Plan = Callable[[tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]


class ArgMap:
    """A call's arguments by parameter name, with defaults applied.

    Equivalent to ``Signature.bind`` + ``apply_defaults`` (which it falls back to,
    for its checks and messages) but a dict build for signatures without
    ``*args``/``**kwargs``: templates, tags and writers map arguments on every call.
    """

    def __init__(self, signature: inspect.Signature) -> None:
        self.signature = signature
        self.params = list(signature.parameters.values())
        self._shapes = (self._shape(self.params), self._shape(self.params[1:]))

    @staticmethod
    def _shape(params: list[inspect.Parameter]) -> tuple[tuple[str, ...], int, frozenset[str], dict[str, Any]] | None:
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            return None
        names = tuple(p.name for p in params)
        positional = sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
        by_keyword = frozenset(p.name for p in params if p.kind is not p.POSITIONAL_ONLY)
        defaults = {p.name: p.default for p in params if p.default is not p.empty}
        return names, positional, by_keyword, defaults

    def __call__(self, skip_first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        shape = self._shapes[skip_first]
        if shape is not None and len(args) <= shape[1]:
            names, _, by_keyword, defaults = shape
            mapping = dict(zip(names, args, strict=False))  # args may stop short: defaults follow
            ok = True
            for k, v in kwargs.items():
                if k in mapping or k not in by_keyword:
                    ok = False
                    break
                mapping[k] = v
            if ok and len(mapping) < len(names):
                for n in names:
                    if n not in mapping:
                        if n not in defaults:
                            ok = False
                            break
                        mapping[n] = defaults[n]
            if ok:
                return mapping
        params = self.params[1:] if skip_first else self.params
        bound = self.signature.replace(parameters=params).bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)


class KeyBuilder:
    """Builds the keys of one decorated function.

    Args:
        func: the undecorated function (unwrapped from ``classmethod``/``staticmethod``).
        name: ``module.qualname``, used in errors and as the namespace.
        ignore: parameter names left out of the key.
        template: a ``str.format`` template, or ``None``.
        key_fn: a callable returning the key's text, or ``None``.
        version: made part of every key when given.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str,
        ignore: Sequence[str] = (),
        template: str | None = None,
        key_fn: Callable[..., str] | None = None,
        version: int | str | None = None,
    ) -> None:
        self.name = name
        self.signature = inspect.signature(func)
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
        if template is not None:
            for field in template_fields(template):
                if field not in names:
                    raise ValueError(
                        f"{name}: key template {template!r} has the field {{{field}}}, which names no "
                        f"parameter; use one of {names} (attribute and index access are allowed: "
                        f"{{order.id}}, {{items[0]}})."
                    )
        self.arguments = ArgMap(self.signature)
        # A template of plain {name} fields only is formatted without string.Formatter.
        self._fields: list[tuple[str, str | None]] | None = None
        if template is not None:
            parts = list(_FORMATTER.parse(template))
            if all(f is None or (f.isidentifier() and not spec and not conv) for _, f, spec, conv in parts):
                self._fields = [(lit, f) for lit, f, _, _ in parts]
        # The same fields by parameter position, for calls that pass every parameter positionally.
        self._positions: list[tuple[str, int | None]] | None = None
        if self._fields is not None and all(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in self.params
        ):
            self._positions = [(lit, None if f is None else names.index(f)) for lit, f in self._fields]
        # Plans per (skip_first, shape); bounded so odd call shapes can't grow it forever.
        self._plans: tuple[dict[Any, _Plan], dict[Any, _Plan]] = ({}, {})
        self._heads: dict[str, str] = {}
        #: ``build(prefix, instance, skip_first, args, kwargs)``: the key of one call (``instance``
        #: is the bound ``self``/``cls``, or None). The kind of key is chosen here, once, not per call.
        self.build: Callable[[str, Any, bool, tuple[Any, ...], dict[str, Any]], str] = (
            self._from_callable if key_fn is not None
            else self._from_template if template is not None
            else self._from_signature
        )

    # -- binding -----------------------------------------------------------------

    def key_params(self, skip_first: bool) -> list[inspect.Parameter]:
        """The parameters that take part in the key (what a writer must supply)."""
        params = self.params[1:] if skip_first else self.params
        return [p for p in params if p.name not in self.ignore]

    def bind(self, skip_first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The call's argument values in parameter order, defaults applied, ``ignore`` removed."""
        plans = self._plans[skip_first]
        shape: Any = len(args) if not kwargs else (len(args), *kwargs)
        plan = plans.get(shape)
        if plan is None:
            plan = self._make_plan(skip_first, args, kwargs)
            if len(plans) < 64:
                plans[shape] = plan
        return plan(args, kwargs)

    def _make_plan(self, skip_first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Plan:
        params = self.params[1:] if skip_first else self.params
        sig = self.signature.replace(parameters=params)
        try:
            sig.bind(*args, **kwargs)  # the interpreter's own checks and messages
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        keep = [i for i, p in enumerate(params) if p.name not in self.ignore]
        pick: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None
        if len(keep) != len(params):
            pick = lambda v: tuple(v[i] for i in keep)

        simple = all(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params
        )
        n = len(args)
        if simple and n <= len(params):
            tail = params[n:]
            if not kwargs:
                fill = tuple(p.default for p in tail)
                if pick is None:
                    return _identity if not fill else lambda a, k: a + fill
                return lambda a, k: pick(a + fill)
            spec = tuple((p.name, p.name in kwargs, p.default) for p in tail)
            if pick is None:
                return lambda a, k: a + tuple(k[nm] if kw else d for nm, kw, d in spec)
            return lambda a, k: pick(a + tuple(k[nm] if kw else d for nm, kw, d in spec))

        # *args / **kwargs: the general, slower path.
        def general(a: tuple[Any, ...], k: dict[str, Any]) -> tuple[Any, ...]:
            bound = sig.bind(*a, **k)
            bound.apply_defaults()
            values = tuple(bound.arguments.values())
            return values if pick is None else pick(values)

        return general

    # -- keys --------------------------------------------------------------------

    def head(self, prefix: str) -> str:
        head = self._heads.get(prefix)
        if head is None:
            head = self._heads[prefix] = f"{prefix}:{self.namespace}:"
        return head

    def _from_signature(
        self, prefix: str, instance: Any, skip_first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        # The hot path of every call: kept to one frame (plus the plan's, when defaults
        # or ignored parameters make one needed), since a hit is little more than this.
        plan = self._plans[skip_first].get(len(args) if not kwargs else (len(args), *kwargs))
        if plan is _identity:
            values = args
        elif plan is not None:
            values = plan(args, kwargs)
        else:
            values = self.bind(skip_first, args, kwargs)
        if instance is not None and skip_first and _keyed_instance(instance):
            values = (*values, _instance_part(instance))
        data = None
        for v in values:
            if type(v) not in _PLAIN:
                break
        else:
            try:  # noqa: SIM105 - contextlib.suppress costs more, on every call
                data = _fast_pack(values)
            except OverflowError:  # an int beyond 64 bits
                pass
        if data is None:
            try:
                data = encode_values(values)
            except _Unsupported as exc:
                raise self._unsupported(exc, skip_first, args, kwargs) from None
        text = _digests.get(data)
        if text is None:
            text = digest(data)
        head = self._heads.get(prefix)
        if head is None:
            head = self.head(prefix)
        return head + text

    def build_from_mapping(self, prefix: str, instance: Any, skip_first: bool, values: Mapping[str, Any]) -> str:
        """The key for arguments given by parameter name (what ``@invalidates`` supplies)."""
        params = self.params[1:] if skip_first else self.params
        kwargs: dict[str, Any] = {}
        args: list[Any] = []
        for p in params:
            if p.name in values:
                if p.kind is p.VAR_POSITIONAL:
                    args.extend(values[p.name])
                elif p.kind is p.VAR_KEYWORD:
                    kwargs.update(values[p.name])
                elif p.kind is p.POSITIONAL_ONLY:
                    args.append(values[p.name])
                else:
                    kwargs[p.name] = values[p.name]
        if self.key_fn is not None:
            named = {k: v for k, v in values.items() if k in _params_of(self.key_fn)}
            return self._from_callable(prefix, None, False, (), named)
        return self.build(prefix, instance, skip_first, tuple(args), kwargs)

    def _from_callable(
        self, prefix: str, instance: Any, skip_first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        assert self.key_fn is not None
        text = self.key_fn(*args, **kwargs)
        if not isinstance(text, str):
            raise TypeError(
                f"{self.name}: key= callable returned {type(text).__name__}, not str; return the key text."
            )
        return f"{prefix}:{text}{self.version_suffix}"

    def _from_template(
        self, prefix: str, instance: Any, skip_first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        positions = self._positions
        if positions is not None and not kwargs and len(args) + skip_first == len(self.params):
            values = (instance, *args) if skip_first else args
            text = "".join([lit if i is None else lit + _field_text(values[i]) for lit, i in positions])
            return f"{prefix}:{text}{self.version_suffix}"
        return self.render(prefix, self.mapping(instance, skip_first, args, kwargs))

    def render(self, prefix: str, mapping: Mapping[str, Any]) -> str:
        """The template key for arguments by parameter name."""
        assert self.template is not None
        if self._fields is None:
            text = _FORMATTER.vformat(self.template, (), mapping)
        else:  # plain {name} fields: no Formatter machinery per call
            text = "".join([lit + _field_text(mapping[f]) if f else lit for lit, f in self._fields])
        return f"{prefix}:{text}{self.version_suffix}"

    def mapping(self, instance: Any, skip_first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults applied, ``self``/``cls`` included (for templates)."""
        mapping = self.arguments(skip_first, args, kwargs)
        if skip_first and self.params:
            mapping[self.params[0].name] = instance
        return mapping

    def _unsupported(
        self, exc: _Unsupported, skip_first: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> CacheKeyError:
        params = self.params[1:] if skip_first else self.params
        sig = self.signature.replace(parameters=params)
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        where = "an argument"
        for pname, value in bound.arguments.items():
            try:
                _norm(value)
            except _Unsupported:
                where = f"parameter {pname!r}"
                break
        return CacheKeyError(
            f"{self.name}: {where} is a {exc.value_type.__module__}.{exc.value_type.__qualname__}, "
            f"which cannot be part of a cache key. Leave it out with ignore=[...], give the "
            f"function a key= template or callable, or define __cache_key__() on the type."
        )


def _keyed_instance(instance: Any) -> bool:
    return isinstance(instance, type) or hasattr(type(instance), "__cache_key__")


def _instance_part(instance: Any) -> Any:
    """The key part for ``self``/``cls``: the class for classmethods, ``__cache_key__()`` for instances."""
    if isinstance(instance, type):
        return _ExtType(12, _type_name(instance).encode())
    return _norm(instance)


def _params_of(fn: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()
