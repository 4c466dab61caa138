"""MsgpackSerializer: type fidelity, bounded decoding, no pickle."""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cacheaside import MsgpackSerializer, SerializationError

ser = MsgpackSerializer()

hashable = st.one_of(st.integers(), st.text(max_size=5), st.tuples(st.integers(), st.text(max_size=3)))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**200), max_value=2**200), st.floats(), st.text(),
    st.binary(), st.dates(), st.times(), st.timedeltas(), st.uuids(), st.decimals(places=3),
    st.datetimes(), st.datetimes(timezones=st.timezones()), st.datetimes(timezones=st.just(dt.timezone.utc)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(hashable, inner, max_size=3),
        st.sets(hashable, max_size=3),
        st.frozensets(hashable, max_size=3),
    ),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (dt.datetime, dt.time)):
        return a == b and a.tzinfo == b.tzinfo and a.fold == b.fold
    return bool(a == b)


@given(values)
def test_round_trip_keeps_value_and_type(value: Any) -> None:
    assert same(ser.loads(ser.dumps(value)), value)


def test_zoneinfo_comes_back_as_the_same_zone() -> None:
    paris = dt.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    back = ser.loads(ser.dumps(paris))
    assert back == paris and back.tzinfo == zoneinfo.ZoneInfo("Europe/Paris")
    assert str(ser.loads(ser.dumps(Decimal("1.10")))) == "1.10"


def test_unsupported_values_raise_serialization_error() -> None:
    for bad in (object(), {1: object()}, [lambda: 1]):
        with pytest.raises(SerializationError):
            ser.dumps(bad)


@pytest.mark.parametrize("payload", [b"\xc1", b"\x92\x01", b"\xd4\x63\x00", b"\xc7\x05\x01abc"])
def test_garbage_raises_serialization_error(payload: bytes) -> None:
    with pytest.raises(SerializationError):
        ser.loads(payload)


def test_payloads_over_max_size_are_refused() -> None:
    small = MsgpackSerializer(max_size=10)
    with pytest.raises(SerializationError, match="max_size"):
        small.loads(small.dumps("x" * 100))


def test_no_pickle_anywhere_in_the_package() -> None:
    import pathlib
    import re

    import cacheaside

    root = pathlib.Path(cacheaside.__file__).parent
    use = re.compile(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle)\b|\bpickle\.(loads?|Unpickler)", re.M)
    for path in root.rglob("*.py"):
        assert not use.search(path.read_text()), path


@pytest.mark.parametrize("value", [2**64, -(2**64) - 1, 10**5000, -(10**5000)], ids=["2**64", "-2**64-1", "10**5000",
                                                                                   "-10**5000"])
def test_ints_of_any_size_round_trip(value: int) -> None:
    s = MsgpackSerializer()
    assert s.loads(s.dumps(value)) == value
