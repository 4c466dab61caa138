"""Serializers: the ``Serializer`` protocol and ``MsgpackSerializer``.

``MsgpackSerializer`` never uses pickle. Types msgpack has no native form for
travel as msgpack extension types with an explicit allow-list of codes; an
unknown code, a truncated payload, one over the size limit or one nested deeper
than msgpack allows is a ``SerializationError``, which stores read as a miss.
A value it would refuse to read back is refused when written.

Structured values (tuples, sets, frozensets, datetimes, dates, times, timedeltas) are
arrays whose first item is an empty extension value marking their type, rebuilt by
``list_hook``; Decimal, UUID and big ints are extension values holding bytes. So a
payload is read by one call of msgpack's C decoder, whose nesting msgpack bounds
(deeper than its packer goes, so what is written can be read). An extension value
holding packed bytes would be read by a nested call of the C decoder, whose frame takes
about 40 KB of C stack: a few hundred nested tuples once overflowed the reading
thread's stack and crashed the process, and a thread with a small stack needs far fewer.

Users' own classes, given as ``types=[...]`` (dataclasses, named tuples, pydantic v2 models),
travel the same way: ``[mark, "module.QualName", {field: value}]``. A class is found by that
name in the reader's own registry, never imported or unpickled; a name the reader was not
given, or fields that do not fit its class, is a ``SerializationError``: a miss.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import inspect
import sys
import uuid
import zoneinfo
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import msgpack

from .exceptions import SerializationError

_unpackb = msgpack.unpackb

__all__ = ["MsgpackSerializer", "Serializer"]


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back. ``dumps`` and ``loads`` raise ``SerializationError``."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


# Extension codes. Never reuse a code for another meaning: stored payloads outlive deploys.
_TUPLE, _SET, _FROZENSET, _BIGINT, _DATETIME, _DATE, _TIME, _TIMEDELTA, _DECIMAL, _UUID = range(1, 11)
_OBJECT = 11  # [mark, "module.QualName", {field: value}]: an instance of a class given in types=

_ExtType = msgpack.ExtType

#: The first item of an array that is a tuple, a set... (an empty extension value of its code).
_MARKS = {code: _ExtType(code, b"") for code in (_TUPLE, _SET, _FROZENSET, _DATETIME, _DATE, _TIME, _TIMEDELTA)}
_TUPLE_MARK, _SET_MARK, _FROZENSET_MARK = _MARKS[_TUPLE], _MARKS[_SET], _MARKS[_FROZENSET]
_DATETIME_MARK, _DATE_MARK, _TIME_MARK, _TIMEDELTA_MARK = (
    _MARKS[_DATETIME], _MARKS[_DATE], _MARKS[_TIME], _MARKS[_TIMEDELTA]
)
#: Read only by a serializer given types= (one given none refuses the code in ``_ext``).
_OBJECT_MARK = _ExtType(_OBJECT, b"")
_TYPED_MARKS = {**_MARKS, _OBJECT: _OBJECT_MARK}


def _tz_out(tz: _dt.tzinfo | None, at: _dt.datetime | None) -> Any:
    if tz is None:
        return None
    if isinstance(tz, zoneinfo.ZoneInfo):
        return ["z", tz.key]
    if isinstance(tz, _dt.timezone):
        offset = tz.utcoffset(None)
        name = tz.tzname(None)
        default_name = _dt.timezone(offset).tzname(None)
        return ["o", offset.days, offset.seconds, offset.microseconds, None if name == default_name else name]
    raise SerializationError(
        f"cannot encode tzinfo {type(tz).__module__}.{type(tz).__qualname__}: "
        "use datetime.timezone or zoneinfo.ZoneInfo"
    )


def _tz_in(spec: Any) -> _dt.tzinfo | None:
    if spec is None:
        return None
    if spec[0] == "z":
        return zoneinfo.ZoneInfo(spec[1])
    offset = _dt.timedelta(days=spec[1], seconds=spec[2], microseconds=spec[3])
    return _dt.timezone(offset) if spec[4] is None else _dt.timezone(offset, spec[4])


# -- users' own types (types=) ------------------------------------------------------

_Fields = Callable[[Any], dict[str, Any]]
_Build = Callable[[dict[str, Any]], Any]
_ACCEPTED = "dataclasses, named tuples (typing.NamedTuple, collections.namedtuple) and pydantic v2 models"


def _kind(cls: Any) -> str | None:
    """``"dataclass"``, ``"namedtuple"``, ``"pydantic"`` (duck-typed: pydantic is optional), or None."""
    if not isinstance(cls, type):
        return None
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return "namedtuple"
    if hasattr(cls, "model_fields") and hasattr(cls, "model_validate"):
        return "pydantic"
    return None


def _user_type(cls: Any) -> tuple[str, _Fields, _Build, frozenset[str], bool]:
    """A class given in types=: its stable name, its fields of an instance, how to rebuild one from
    them, the names of its fields, and whether more names are taken (pydantic's ``extra="allow"``).

    Dataclasses: every field, rebuilt by ``cls(**fields with init=True)``, then the ``init=False``
    ones set as they were (``object.__setattr__``, frozen classes too): a hit is the instance that was
    stored, not what ``__post_init__`` would make anew. Named tuples: every field, ``cls(**fields)``.
    Pydantic models: see ``_model_type``.
    """
    kind = _kind(cls)
    if kind is None:
        raise TypeError(f"MsgpackSerializer: types= takes classes: {_ACCEPTED}; got {cls!r}")
    name = f"{cls.__module__}.{cls.__qualname__}"
    if "<locals>" in cls.__qualname__:
        raise ValueError(
            f"MsgpackSerializer: types= got {name}, a class defined in a function: payloads name a class "
            "by module and qualified name, which must be the same in every process; define it at module level"
        )
    if kind == "pydantic":
        return _model_type(name, cls)
    every = tuple(f.name for f in dataclasses.fields(cls)) if kind == "dataclass" else tuple(cls._fields)
    names = tuple(f.name for f in dataclasses.fields(cls) if f.init) if kind == "dataclass" else every
    later = tuple(n for n in every if n not in names)
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # no signature to check: the constructor is trusted
        signature = None
    try:
        if signature is not None:
            signature.bind(**dict.fromkeys(names))
    except TypeError as exc:  # an InitVar, a constructor of its own
        raise ValueError(
            f"MsgpackSerializer: types= got {name}, which cannot be rebuilt from its fields as "
            f"{cls.__qualname__}(**fields): {exc}"
        ) from None

    def fields_of(obj: Any) -> dict[str, Any]:
        return {n: getattr(obj, n) for n in every}

    def build(fields: dict[str, Any]) -> Any:
        obj = cls(**{n: fields[n] for n in names})
        for n in later:
            object.__setattr__(obj, n, fields[n])
        return obj

    return name, fields_of, build, frozenset(every), False


def _model_type(name: str, model: Any) -> tuple[str, _Fields, _Build, frozenset[str], bool]:
    """A pydantic model: every field of ``model_fields`` (and the extras of an ``extra="allow"``
    model) as the attribute holds it, rebuilt by ``model_construct`` by field name, not alias.

    Validators do not run again on a hit: they ran when the value was made, and running them on
    what they produced can change it (a ``mode="before"`` validator that converts cents to dollars
    would divide again on every hit) or refuse it (one that expects the raw input's shape). So a hit
    is the instance that was stored; a model whose fields changed (a deploy) reads old entries as
    misses by their field names; bump ``version=`` when a field keeps its name but changes meaning.
    Computed fields and private attributes are not stored; ``model_fields_set`` comes back as every field.
    """
    names = tuple(model.model_fields)
    config = getattr(model, "model_config", None) or {}
    extra = config.get("extra") == "allow"
    if "by_name" not in inspect.signature(model.model_validate).parameters and not config.get(
            "populate_by_name") and any(  # pydantic < 2.11: fields by name need populate_by_name
        getattr(f, "alias", None) not in (None, n) or getattr(f, "validation_alias", None) not in (None, n)
        for n, f in model.model_fields.items()
    ):
        raise ValueError(
            f"MsgpackSerializer: types= got {name}, whose fields have aliases: reading them back by field "
            "name needs pydantic>=2.11 or populate_by_name=True in its model_config"
        )
    construct = model.model_construct
    root_model = getattr(sys.modules.get("pydantic"), "RootModel", None)
    if root_model is not None and issubclass(model, root_model):
        return name, lambda obj: {"root": obj.root}, lambda fields: construct(fields["root"]), frozenset(names), False

    def fields_of(obj: Any) -> dict[str, Any]:
        found = {n: getattr(obj, n) for n in names}
        if extra and obj.model_extra:
            found.update(obj.model_extra)
        return found

    return name, fields_of, lambda fields: construct(**fields), frozenset(names), extra


def _classes(types: Any) -> list[Any]:
    if isinstance(types, (type, str, bytes)):
        raise TypeError(f"MsgpackSerializer: types= takes a list of classes ({_ACCEPTED}), got {types!r}: "
                        "pass types=[...]")
    try:
        return list(types)
    except TypeError:
        raise TypeError(f"MsgpackSerializer: types= takes a list of classes ({_ACCEPTED}), got {types!r}") from None


class MsgpackSerializer:
    """msgpack with type fidelity for the types listed in the contract, and the classes given.

    Args:
        types: dataclasses, named tuples and pydantic v2 models to round-trip too, their
            instances stored as their fields by name and their class by ``module.QualName``
            (the same in every process: a class defined in a function is refused). Only these
            exact classes (not their subclasses). A payload naming a class the reader was not
            given, or fields that do not fit it, reads as a miss (``SerializationError``).
        max_size: the largest payload, in bytes: ``dumps`` refuses a value that encodes
            to more, ``loads`` a payload over it (a bound on what a corrupted or hostile
            payload can make the decoder allocate).
    """

    def __init__(self, *, types: Iterable[type[Any]] = (), max_size: int = 64 * 1024 * 1024) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"MsgpackSerializer: max_size must be a positive int, got {max_size!r}")
        self.max_size = max_size
        self._encoders: dict[type[Any], tuple[str, _Fields]] = {}
        self._decoders: dict[str, tuple[frozenset[str], bool, _Build]] = {}
        for cls in _classes(types):
            name, fields_of, build, names, extra = _user_type(cls)
            if cls in self._encoders:
                continue
            if name in self._decoders:
                raise ValueError(f"MsgpackSerializer: types= holds two classes named {name}; a payload could "
                                 "not tell them apart")
            self._encoders[cls] = (name, fields_of)
            self._decoders[name] = (names, extra, build)
        self._packer_opts = {"use_bin_type": True, "strict_types": True, "default": self._default}
        # Bound once: decoding is on every hit of a serializing store (without types=, no hook for them).
        self._ext_hook = self._ext_typed if self._decoders else self._ext
        self._list_hook = self._rebuild_typed if self._decoders else _rebuild

    def __repr__(self) -> str:
        return f"MsgpackSerializer(types=[{', '.join(self._decoders)}])" if self._decoders else "MsgpackSerializer()"

    # -- encoding ----------------------------------------------------------------

    def _default(self, obj: Any) -> Any:
        t = type(obj)
        if t is tuple:
            return [_TUPLE_MARK, *obj]
        if t is set:
            return [_SET_MARK, *obj]
        if t is frozenset:
            return [_FROZENSET_MARK, *obj]
        if t is _dt.datetime:
            parts = [obj.year, obj.month, obj.day, obj.hour, obj.minute, obj.second, obj.microsecond]
            return [_DATETIME_MARK, *parts, obj.fold, _tz_out(obj.tzinfo, obj)]
        if t is _dt.date:
            return [_DATE_MARK, obj.year, obj.month, obj.day]
        if t is _dt.time:
            return [_TIME_MARK, obj.hour, obj.minute, obj.second, obj.microsecond, obj.fold, _tz_out(obj.tzinfo, None)]
        if t is _dt.timedelta:
            return [_TIMEDELTA_MARK, obj.days, obj.seconds, obj.microseconds]
        if t is Decimal:
            return msgpack.ExtType(_DECIMAL, str(obj).encode())
        if t is uuid.UUID:
            return msgpack.ExtType(_UUID, obj.bytes)
        if t is int:  # beyond msgpack's 64 bits: two's-complement bytes (any size; str() stops at 4,300 digits)
            return msgpack.ExtType(_BIGINT, obj.to_bytes((obj.bit_length() + 8) // 8, "big", signed=True))
        user = self._encoders.get(t)
        if user is not None:
            return [_OBJECT_MARK, user[0], user[1](obj)]
        raise SerializationError(
            f"cannot encode a {t.__module__}.{t.__qualname__}: MsgpackSerializer takes None, bool, int, "
            "float, str, bytes, list, tuple, dict, set, frozenset, datetime, date, time, timedelta, "
            "Decimal and UUID (exact types, nested freely), and the exact classes given in types=: "
            "add a dataclass, named tuple or pydantic model with MsgpackSerializer(types=[...])"
        )

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``; raise ``SerializationError`` for what ``loads`` would not read back.

        That is a type outside the allow-list, a payload over ``max_size``, or a nesting
        deeper than msgpack allows.
        """
        try:
            data: bytes = msgpack.packb(value, **self._packer_opts)
        except SerializationError:
            raise
        except Exception as exc:  # e.g. a dict key msgpack refuses, or too deep a nesting
            raise SerializationError(f"cannot encode value: {type(exc).__name__}: {exc}") from exc
        if len(data) > self.max_size:
            raise SerializationError(f"the value encodes to {len(data)} bytes, over max_size={self.max_size}")
        return data

    # -- decoding ----------------------------------------------------------------

    def _ext(self, code: int, data: bytes) -> Any:
        if not data:
            mark = _MARKS.get(code)
            if mark is not None:
                return mark
        if code == _DECIMAL:
            return Decimal(data.decode())
        if code == _UUID:
            return uuid.UUID(bytes=data)
        if code == _BIGINT:
            return int.from_bytes(data, "big", signed=True)
        if code == _OBJECT:
            raise SerializationError("the payload holds an instance of a class given in types=, and this "
                                     "MsgpackSerializer was given none (or the payload is malformed)")
        raise SerializationError(f"unknown msgpack extension code {code}")

    def _ext_typed(self, code: int, data: bytes) -> Any:
        if not data:
            mark = _TYPED_MARKS.get(code)
            if mark is not None:
                return mark
        return self._ext(code, data)

    def _rebuild_typed(self, items: list[Any]) -> Any:
        """``_rebuild``, and an instance of a class given in types= (found by name in this registry only)."""
        if not items or type(items[0]) is not _ExtType or items[0].code != _OBJECT:
            return _rebuild(items)
        if len(items) != 3 or type(items[1]) is not str or type(items[2]) is not dict:
            raise SerializationError("malformed object in payload: not [mark, class name, {field: value}]")
        _, name, fields = items
        found = self._decoders.get(name)
        if found is None:
            raise SerializationError(f"the payload holds a {name[:200]!r}, a class this MsgpackSerializer was not "
                                     "given in types=")
        names, extra, build = found
        keys = fields.keys()
        if keys != names and not (extra and keys > names and all(type(k) is str for k in keys)):
            raise SerializationError(f"the payload's fields for {name} are not its fields: "
                                     f"{sorted(map(repr, keys))[:20]} for {sorted(names)}")
        try:
            return build(fields)
        except Exception as exc:  # the constructor, or pydantic's validation, refused the fields
            raise SerializationError(f"cannot rebuild a {name} from the payload: {type(exc).__name__}: "
                                     f"{str(exc)[:300]}") from exc

    def loads(self, data: bytes) -> Any:
        """Decode ``data``; raise ``SerializationError`` for anything malformed."""
        if len(data) > self.max_size:
            raise SerializationError(f"payload of {len(data)} bytes is over max_size={self.max_size}")
        try:
            # Keywords passed directly: a functools.partial with keywords merges them into a new
            # dict per call, on every hit of a serializing store.
            return _unpackb(data, strict_map_key=False, ext_hook=self._ext_hook, list_hook=self._list_hook)
        except SerializationError:
            raise
        except Exception as exc:  # msgpack raises ValueError, ExtraData, FormatError, StackError, ...
            raise SerializationError(f"cannot decode payload: {type(exc).__name__}") from exc


def _rebuild(items: list[Any]) -> Any:
    """An array as msgpack decoded it: the structured value its first item marks, else the list."""
    if not items or type(items[0]) is not _ExtType:  # the marks are the only extension values left
        return items
    code = items[0].code
    if code == _TUPLE:
        return tuple(items[1:])
    if code == _SET:
        return set(items[1:])
    if code == _FROZENSET:
        return frozenset(items[1:])
    if code == _DATETIME:
        _, y, mo, d, h, mi, s, us, fold, tz = items
        return _dt.datetime(y, mo, d, h, mi, s, us, tzinfo=_tz_in(tz), fold=fold)
    if code == _DATE:
        return _dt.date(*items[1:])
    if code == _TIME:
        _, h, mi, s, us, fold, tz = items
        return _dt.time(h, mi, s, us, tzinfo=_tz_in(tz), fold=fold)
    _, days, seconds, micro = items  # _TIMEDELTA
    return _dt.timedelta(days=days, seconds=seconds, microseconds=micro)
