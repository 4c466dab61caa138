"""MsgpackSerializer: type fidelity, bounded decoding, no pickle; users' own types (types=)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import uuid
import zoneinfo
from collections import namedtuple
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, ClassVar, NamedTuple

import msgpack
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic.alias_generators import to_camel

from cacheaside import CacheWarning, MemoryStore, MsgpackSerializer, SerializationError, cache_aside

from .conftest import redis_store
from .redis_server import RedisServer

ser = MsgpackSerializer()


# -- users' own types, at module level (a payload names a class by module and qualified name) --------


@dataclasses.dataclass
class Point:
    x: Any
    y: Any = None


class Pair(NamedTuple):
    left: Any
    right: Any


class Box(pydantic.BaseModel):
    item: Any
    label: str = ""


@dataclasses.dataclass(frozen=True)
class User:
    id: int
    name: str
    joined: dt.datetime
    tags: frozenset[str] = frozenset()
    manager: User | None = None


class Item(NamedTuple):
    sku: str
    price: Decimal
    qty: int = 1


Legacy = namedtuple("Legacy", ["a", "b"])


@dataclasses.dataclass
class Order:
    items: list[Item]
    total: Decimal = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.total = sum((i.price * i.qty for i in self.items), Decimal(0))


class Account(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(alias_generator=to_camel, frozen=True)
    account_id: uuid.UUID
    owner: User
    history: tuple[Item, ...] = ()
    balance: Decimal = Decimal(0)


class Loose(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    a: int


class Ids(pydantic.RootModel[list[int]]):
    pass


class Price(pydantic.BaseModel):
    """A before-validator that converts its input: it must not run again on what it produced."""

    dollars: float

    @pydantic.field_validator("dollars", mode="before")
    @classmethod
    def from_cents(cls, value: Any) -> Any:
        return value / 100


@dataclasses.dataclass
class Positive:
    n: int

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError("n must be positive")


class Child(Point):
    pass


@dataclasses.dataclass
class WithInitVar:
    x: int
    seed: dataclasses.InitVar[int]


ALL_TYPES = [Point, Pair, Box, User, Item, Legacy, Order, Account, Loose, Ids, Positive, Price]
typed = MsgpackSerializer(types=ALL_TYPES)

hashable = st.one_of(st.integers(), st.text(max_size=5), st.tuples(st.integers(), st.text(max_size=3)))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**200), max_value=2**200), st.floats(), st.text(),
    st.binary(), st.dates(), st.times(), st.timedeltas(), st.uuids(), st.decimals(places=3),
    st.datetimes(), st.datetimes(timezones=st.timezones()), st.datetimes(timezones=st.just(dt.timezone.utc)),
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(hashable, inner, max_size=3),
        st.sets(hashable, max_size=3),
        st.frozensets(hashable, max_size=3),
    )


values = st.recursive(scalars, _containers, max_leaves=12)
#: The same, with instances of a dataclass, a named tuple and a pydantic model among them (for ``typed``).
typed_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        _containers(inner),
        st.builds(Point, inner, inner),
        st.builds(Pair, inner, inner),
        st.builds(Box, item=inner, label=st.text(max_size=3)),
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
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, pydantic.BaseModel):
        names = [*type(a).model_fields, *(a.model_extra or {})]
        return all(same(getattr(a, n), getattr(b, n)) for n in names)
    return bool(a == b)


@given(values)
def test_round_trip_keeps_value_and_type(value: Any) -> None:
    assert same(ser.loads(ser.dumps(value)), value)


@given(typed_values)
def test_round_trip_with_types_keeps_value_and_type(value: Any) -> None:
    assert same(typed.loads(typed.dumps(value)), value)


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


# -- users' own types ------------------------------------------------------------

JOINED = dt.datetime(2024, 5, 1, 9, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
BOSS = User(1, "ada", JOINED, frozenset({"admin"}))
SAMPLES = {
    "dataclass": User(2, "bob", JOINED, manager=BOSS),
    "namedtuple": Item("sku-1", Decimal("9.90"), 3),
    "collections.namedtuple": Legacy((1, 2), {3}),
    "pydantic": Account(accountId=uuid.UUID(int=7), owner=BOSS, history=(Item("a", Decimal("1.5")),),
                        balance=Decimal("12.30")),
    "pydantic extra=allow": Loose(a=1, b=(2, 3)),
    "pydantic RootModel": Ids([1, 2, 3]),
}


@pytest.mark.parametrize("value", list(SAMPLES.values()), ids=list(SAMPLES))
def test_each_kind_round_trips_with_its_class(value: Any) -> None:
    back = typed.loads(typed.dumps(value))
    assert type(back) is type(value) and back == value and same(back, value)


def test_user_types_nest_in_containers_and_in_each_other() -> None:
    value = {
        "users": [BOSS, SAMPLES["dataclass"]],
        ("k", 1): (Item("x", Decimal("2")), frozenset({Item("y", Decimal("3"))})),
        "order": Order([Item("a", Decimal("1.25"), 2)]),
        "deep": Point(Pair(Box(item=[Point(1, SAMPLES["pydantic"])]), None), {"u": BOSS}),
    }
    back = typed.loads(typed.dumps(value))
    assert same(back, value) and back == value
    assert type(back["deep"].x.left.item[0].y.owner) is User
    assert back["deep"].x.left.item[0].y.owner.joined.tzinfo == zoneinfo.ZoneInfo("Europe/Paris")


def test_init_false_fields_come_back_as_they_were() -> None:
    """Not as ``__post_init__`` would make them anew: a hit is the instance that was stored."""
    order = Order([Item("a", Decimal("1.25"), 2), Item("b", Decimal("0.50"))])
    order.total = Decimal("2.50")  # a discount applied after construction
    back = typed.loads(typed.dumps(order))
    assert type(back) is Order and back.total == Decimal("2.50") and back == order


def test_pydantic_validators_do_not_run_again_on_a_hit() -> None:
    price = Price(dollars=1999)  # 19.99
    back = typed.loads(typed.dumps(price))
    assert type(back) is Price and back.dollars == 19.99 and back == price


def test_a_class_the_reader_was_not_given_reads_as_a_miss() -> None:
    data = typed.dumps([1, BOSS])
    for reader in (MsgpackSerializer(), MsgpackSerializer(types=[Point, Item])):
        with pytest.raises(SerializationError, match=r"types="):
            reader.loads(data)


def test_only_the_exact_classes_given_are_encoded() -> None:
    with pytest.raises(SerializationError, match=r"types=\[\.\.\.\]"):
        typed.dumps(Child(1, 2))
    with pytest.raises(SerializationError, match=r"MsgpackSerializer\(types=\[\.\.\.\]\)"):
        ser.dumps(Point(1, 2))


def _payload(*items: Any) -> bytes:
    return bytes(msgpack.packb(list(items), use_bin_type=True))


MARK = msgpack.ExtType(11, b"")
POSITIVE = f"{__name__}.Positive"
HOSTILE = {
    "mark alone": _payload(MARK),
    "two items": _payload(MARK, POSITIVE),
    "four items": _payload(MARK, POSITIVE, {"n": 1}, 0),
    "name not a str": _payload(MARK, 1, {"n": 1}),
    "name as bytes": _payload(MARK, POSITIVE.encode(), {"n": 1}),
    "fields not a dict": _payload(MARK, POSITIVE, [1]),
    "keys not str": _payload(MARK, POSITIVE, {1: 1}),
    "unknown name": _payload(MARK, "os.system", {"command": "true"}),
    "missing field": _payload(MARK, POSITIVE, {}),
    "extra field": _payload(MARK, POSITIVE, {"n": 1, "m": 2}),
    "constructor raises": _payload(MARK, POSITIVE, {"n": -1}),
    "extra keys not str": _payload(MARK, f"{__name__}.Loose", {"a": 1, 2: 3}),
    "mark with bytes": bytes(msgpack.packb([msgpack.ExtType(11, b"x"), POSITIVE, {"n": 1}], use_bin_type=True)),
    "mark not first": _payload(1, MARK, POSITIVE, {"n": 1}),
}


@pytest.mark.parametrize("payload", list(HOSTILE.values()), ids=list(HOSTILE))
def test_malformed_objects_raise_serialization_error(payload: bytes) -> None:
    for reader in (typed, ser):
        if payload == HOSTILE["mark not first"] and reader is typed:
            continue  # a list whose first item is no mark is a list: no class is looked up
        with pytest.raises(SerializationError):
            reader.loads(payload)
    assert typed.loads(_payload(MARK, POSITIVE, {"n": 1})) == Positive(1)


@pytest.mark.parametrize(
    "bad",
    [42, "abc", Point, [object], [int], [tuple], [Point(1)], [BOSS], [SimpleNamespace]],
    ids=["int", "str", "a class alone", "object", "int class", "tuple class", "an instance", "a frozen instance",
         "a plain class"],
)
def test_bad_types_are_refused_naming_the_parameter(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"MsgpackSerializer: types= takes .*dataclass.*named tuple.*pydantic"):
        MsgpackSerializer(types=bad)


def test_local_classes_clashing_names_and_unrebuildable_classes_are_value_errors() -> None:
    @dataclasses.dataclass
    class Local:
        x: int

    with pytest.raises(ValueError, match=r"types=.*<locals>.*same in every process.*module level"):
        MsgpackSerializer(types=[Local])
    clone = dataclasses.make_dataclass("Point", [("x", Any), ("y", Any)])
    clone.__module__, clone.__qualname__ = Point.__module__, Point.__qualname__
    with pytest.raises(ValueError, match=r"types= holds two classes named .*Point"):
        MsgpackSerializer(types=[Point, clone])
    assert repr(MsgpackSerializer(types=[Point, Point])) == f"MsgpackSerializer(types=[{__name__}.Point])"
    with pytest.raises(ValueError, match=r"cannot be rebuilt .*seed"):
        MsgpackSerializer(types=[WithInitVar])


class _OldPydanticModel:
    """Duck-typed like a model of pydantic < 2.11, whose model_validate takes no by_name."""

    model_fields: ClassVar[dict[str, Any]] = {"user_id": SimpleNamespace(alias="userId", validation_alias=None)}
    model_config: ClassVar[dict[str, Any]] = {}

    @classmethod
    def model_validate(cls, obj: Any) -> Any:
        return obj


def test_aliases_without_validation_by_name_are_refused() -> None:
    with pytest.raises(ValueError, match=r"aliases.*pydantic>=2.11 or populate_by_name=True"):
        MsgpackSerializer(types=[_OldPydanticModel])


def test_a_memory_store_hit_is_an_equal_instance_of_the_class_and_a_reader_without_it_recomputes() -> None:
    store = MemoryStore(serializer=MsgpackSerializer(types=[User]))
    calls: list[int] = []

    @cache_aside(ttl=60, store=store)
    def get_user(uid: int) -> User:
        calls.append(uid)
        return User(uid, "ada", JOINED, manager=BOSS)

    first = get_user(1)
    hit = get_user(1)
    assert calls == [1] and type(hit) is User and hit == first and hit is not first
    assert get_user.stats().hits == 1 and get_user.stats().errors == 0

    store.serializer = MsgpackSerializer()  # as a process not given User would read the entry
    # The entry reads as corrupt (a miss, an error) and the value computed again cannot be stored by
    # this serializer either (an error, warned once), as on Redis.
    with pytest.warns(CacheWarning, match="could not be cached"):
        assert get_user(1) == first
    assert calls == [1, 1]
    assert get_user.stats().errors == 2 and get_user.stats().misses == 2 and get_user.stats().hits == 1


@pytest.mark.redis
def test_redis_hits_are_instances_of_the_class_and_a_reader_without_it_recomputes(
    redis_server: RedisServer,
) -> None:
    writer_ser = MsgpackSerializer(types=[Account, User, Item])
    with redis_store(redis_server, serializer=writer_ser) as writer, \
            redis_store(redis_server, prefix=writer.prefix, serializer=MsgpackSerializer(types=[User])) as reader:
        calls: list[str] = []

        def load(name: str) -> Account:
            calls.append(name)
            return Account(accountId=uuid.UUID(int=1), owner=BOSS, history=(Item(name, Decimal("1")),))

        on_writer = cache_aside(ttl=60, store=writer, key="account:{name}")(load)
        on_reader = cache_aside(ttl=60, store=reader, key="account:{name}")(load)
        first = on_writer("a")
        hit = on_writer("a")
        assert calls == ["a"] and type(hit) is Account and hit == first and type(hit.history[0]) is Item
        with pytest.warns(CacheWarning, match="could not be cached"):
            assert on_reader("a") == first  # the reader lacks Account (and Item): a miss, recomputed
        assert calls == ["a", "a"] and on_reader.stats().errors >= 1 and on_reader.stats().hits == 0
        assert on_writer("a") == first and calls == ["a", "a"]  # the entry is still the writer's
