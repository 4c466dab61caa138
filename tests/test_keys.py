"""API.md "Keys": binding, canonical encoding, templates, errors."""

from __future__ import annotations

import datetime as dt
import enum
import os
import re
import subprocess
import sys
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cacheaside import CacheKeyError, CacheWarning, MemoryStore, cache_aside

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(), st.binary(),
    st.datetimes(), st.dates(), st.times(), st.timedeltas(), st.uuids(),
    st.decimals(allow_nan=False, allow_infinity=False),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.frozensets(st.integers(), max_size=4),
    ),
    max_leaves=10,
)


@cache_aside(ttl=60, store=MemoryStore())
def target(a: Any, b: Any = "default", *args: Any, c: Any = None, **kwargs: Any) -> None:
    return None


@cache_aside(ttl=60, store=MemoryStore())
def simple(a: Any, b: Any = "default", c: Any = None) -> None:
    return None


@given(values, values)
def test_every_way_of_passing_the_same_arguments_gives_one_key(a: Any, b: Any) -> None:
    k = simple.key(a, b)
    assert k == simple.key(a, b=b) == simple.key(b=b, a=a) == simple.key(a, b, None) == simple.key(a, b, c=None)
    assert simple.key(a) == simple.key(a, "default") == simple.key(a=a)


@given(st.dictionaries(st.text(max_size=4), st.integers(), max_size=6), st.sets(st.integers(), max_size=6))
def test_dict_and_set_order_does_not_matter(d: dict[str, int], s: set[int]) -> None:
    reordered = dict(reversed(list(d.items())))
    assert simple.key(d, s) == simple.key(reordered, set(sorted(s, reverse=True)))


def _same(a: Any, b: Any) -> bool:
    """Equal value and equal type, recursively (the contract's "same arguments")."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, dt.datetime) and (a.tzinfo is None) != (b.tzinfo is None):
        return False
    return bool(a == b)


@given(values, values)
def test_different_values_never_share_a_key(a: Any, b: Any) -> None:
    if _same(a, b):
        assert simple.key(a) == simple.key(b)
    elif type(a) is type(b) and not isinstance(a, (list, tuple, dict, frozenset, float, Decimal)) and a != b:
        assert simple.key(a) != simple.key(b)


def test_different_values_of_every_supported_type_differ() -> None:
    class Color(enum.Enum):
        RED = 1
        BLUE = 2

    pairs = [
        (1, 2), ("a", "b"), (b"a", b"b"), (1.5, 2.5), (None, 0), ([1, 2], [2, 1]), ({"a": 1}, {"a": 2}),
        ({1, 2}, {1, 3}), (dt.date(2020, 1, 1), dt.date(2020, 1, 2)), (dt.timedelta(1), dt.timedelta(2)),
        (Decimal("1.1"), Decimal("1.2")), (uuid.UUID(int=1), uuid.UUID(int=2)), (Color.RED, Color.BLUE),
        (2**100, 2**100 + 1), (dt.time(1), dt.time(2)),
    ]
    for a, b in pairs:
        assert simple.key(a) != simple.key(b), (a, b)


def test_equal_values_of_other_types_keep_their_own_keys_once_one_is_memoized() -> None:
    """Hot keys' digests are memoized by the argument values (ints, strs, None): 1, True and 1.0 are
    equal dict keys, so a memoized 1 must not give True or 1.0 its key, nor "a" give b"a" its key."""
    store = MemoryStore()

    @cache_aside(ttl=60, store=store)
    def show(x: Any) -> str:
        return repr(x)

    assert show(1) == "1" and show(1) == "1"  # the second call hits, through the memo
    assert show(True) == "True" and show(1.0) == "1.0"
    assert show("a") == "'a'" and show(b"a") == "b'a'"
    assert len({show.key(1), show.key(True), show.key(1.0), show.key("a"), show.key(b"a")}) == 5


def test_equal_values_of_one_type_share_a_key() -> None:
    utc = dt.datetime(2020, 1, 1, 12, tzinfo=dt.timezone.utc)
    plus2 = utc.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert simple.key(utc) == simple.key(plus2)
    assert simple.key(Decimal("1.10")) == simple.key(Decimal("1.1"))
    assert simple.key(-0.0) == simple.key(0.0)


def test_varargs_and_kwargs_are_part_of_the_key() -> None:
    assert target.key(1, 2, 3) != target.key(1, 2, 4)
    assert target.key(1, x=1) != target.key(1, x=2)
    assert target.key(1, x=1, y=2) == target.key(1, y=2, x=1)


def test_keys_are_stable_across_interpreters_and_hash_seeds() -> None:
    code = (
        "from cacheaside import cache_aside, MemoryStore\n"
        "@cache_aside(ttl=1, store=MemoryStore())\n"
        "def simple(a, b='default', c=None): pass\n"
        "print(simple.key('text', {'k': (1, 2.5, None)}, c=frozenset({'x', 'y', 'z'})))\n"
    )
    keys = set()
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        keys.add(out.stdout.strip().split(":", 2)[2])
    assert len(keys) == 1


def test_unsupported_argument_names_function_parameter_and_fix() -> None:
    @cache_aside(ttl=1, store=MemoryStore())
    def load(user_id: int, conn: object) -> int:
        return user_id

    with pytest.raises(CacheKeyError) as info:
        load(1, object())
    msg = str(info.value)
    assert "load" in msg and "'conn'" in msg and "ignore=" in msg and "__cache_key__" in msg
    with pytest.raises(TypeError):
        load.key(1, object())


def test_ignore_leaves_parameters_out() -> None:
    @cache_aside(ttl=1, store=MemoryStore(), ignore=["conn"])
    def load(conn: object, user_id: int) -> int:
        return user_id

    assert load.key(object(), 1) == load.key(object(), 1)
    assert load(object(), 1) == 1


def test_cache_key_method_is_encoded_instead() -> None:
    class User:
        def __init__(self, uid: int) -> None:
            self.uid = uid

        def __cache_key__(self) -> int:
            return self.uid

    assert simple.key(User(1)) == simple.key(User(1)) != simple.key(User(2))


def test_self_is_left_out_unless_the_instance_defines_cache_key() -> None:
    class Repo:
        @cache_aside(ttl=1, store=MemoryStore())
        def get(self, x: int) -> int:
            return x

    class Tenant:
        def __init__(self, t: str) -> None:
            self.t = t

        def __cache_key__(self) -> str:
            return self.t

        @cache_aside(ttl=1, store=MemoryStore())
        def get(self, x: int) -> int:
            return x

    assert Repo().get.key(1) == Repo().get.key(1)
    assert Tenant("a").get.key(1) == Tenant("a").get.key(1) != Tenant("b").get.key(1)


def test_classmethod_keys_include_the_class() -> None:
    calls = []

    class Base:
        @cache_aside(ttl=1, store=MemoryStore())
        @classmethod
        def make(cls, x: int) -> str:
            calls.append(cls)
            return cls.__name__

    class Sub(Base):
        pass

    assert Base.make(1) == "Base" and Sub.make(1) == "Sub" and Base.make(1) == "Base"
    assert calls == [Base, Sub]
    assert Base.make.key(1) != Sub.make.key(1)


def test_template_keys_are_readable_and_escaped() -> None:
    class Order:
        id = 42

    @cache_aside(ttl=1, store=MemoryStore(), key="order:{order.id}:{items[0]}")
    def load(order: Order, items: list[str]) -> int:
        return 1

    assert load.key(Order(), ["a b"]) == "cacheaside:order:42:a%20b"

    @cache_aside(ttl=1, store=MemoryStore(), key="a:{x}")
    def one(x: str) -> int:
        return 1

    @cache_aside(ttl=1, store=MemoryStore(), key="a:{x}:{y}")
    def two(x: str, y: str) -> int:
        return 1

    assert one.key("1:b") != two.key("1", "b")
    assert one.key("é~%") == "cacheaside:a:%C3%A9%7E%25"


def test_template_field_naming_no_parameter_fails_at_decoration() -> None:
    with pytest.raises(ValueError, match=r"load.*\{uid\}.*names no parameter"):
        @cache_aside(ttl=1, key="user:{uid}")
        def load(user_id: int) -> int:
            return user_id


def test_key_callable_gets_the_call_arguments() -> None:
    seen = []

    class Repo:
        @cache_aside(ttl=1, store=MemoryStore(), key=lambda user_id, full=False: f"u{user_id}")
        def get(self, user_id: int, full: bool = False) -> int:
            return user_id

    def key_fn(*args: Any, **kwargs: Any) -> str:
        seen.append((args, kwargs))
        return "k"

    @cache_aside(ttl=1, store=MemoryStore(), key=key_fn)
    def f(a: int, b: int = 2) -> int:
        return a

    assert Repo().get.key(7) == "cacheaside:u7"
    assert f.key(1, b=3) == "cacheaside:k"
    assert seen == [((1,), {"b": 3})]


def test_version_is_part_of_every_kind_of_key() -> None:
    def plain(x: int) -> int:
        return x

    for key in (None, "t:{x}", lambda x: f"c{x}"):
        v1 = cache_aside(ttl=1, store=MemoryStore(), key=key, version=1)(plain)
        v2 = cache_aside(ttl=1, store=MemoryStore(), key=key, version="2")(plain)
        assert v1.key(1) != v2.key(1)


# -- ArgMap and the plain-template fast path agree with the slow, obvious versions ----------

_SIGNATURES = [
    lambda a, b=2, *, c=3: None,
    lambda a, /, b, c=None: None,
    lambda a, *args, k=1, **kw: None,
    lambda self, x, y=0: None,
]


@given(
    sig=st.sampled_from(range(len(_SIGNATURES))),
    args=st.lists(st.integers(), max_size=4),
    kwargs=st.dictionaries(st.sampled_from(["a", "b", "c", "k", "x", "y", "z"]), st.integers(), max_size=3),
    skip=st.booleans(),
)
def test_argmap_equals_signature_bind(sig: int, args: list[int], kwargs: dict[str, int], skip: bool) -> None:
    import inspect

    from cacheaside.keys import ArgMap

    signature = inspect.signature(_SIGNATURES[sig])
    params = list(signature.parameters.values())
    signature_used = signature.replace(parameters=params[1:]) if skip else signature
    try:
        bound = signature_used.bind(*args, **kwargs)
        bound.apply_defaults()
        expected: Any = dict(bound.arguments)
    except TypeError:
        expected = TypeError
    try:
        got: Any = ArgMap(signature)(skip, tuple(args), kwargs)
    except TypeError:
        got = TypeError
    assert got == expected


@given(
    st.one_of(st.integers(), st.booleans(), st.text(max_size=8), st.floats(allow_nan=False), st.none()),
    st.text(max_size=5),
)
def test_plain_template_fast_path_equals_the_formatter(x: Any, y: str) -> None:
    from cacheaside._templates import FORMATTER
    from cacheaside.keys import KeyBuilder

    def f(x: Any, y: str = "d") -> None: ...

    builder = KeyBuilder(f, name="m.f", template="a:{x}:{y}-z")
    assert builder._fields is not None
    expected = "p:" + FORMATTER.vformat("a:{x}:{y}-z", (), {"x": x, "y": y})
    assert builder.build("p", None, False, (x,), {"y": y}) == expected
    assert builder.build("p", None, False, (x, y), {}) == expected  # every parameter positional
    assert builder.build("p", None, False, (), {"x": x, "y": y}) == expected


# -- values at the edges of their types still get a key, or a CacheKeyError naming the parameter


@pytest.mark.parametrize(
    "value",
    [
        10**5000,  # past int-to-str conversion's limit
        -(10**5000),
        "\ud800",  # a lone surrogate: not UTF-8
        dt.datetime.max.replace(tzinfo=dt.timezone(-dt.timedelta(hours=1))),  # past datetime.max in UTC
        dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=1))),
        Decimal("sNaN"),
        Decimal("-Infinity"),
        Decimal("1E+1000000"),
    ],
    ids=["big-int", "big-negative-int", "lone-surrogate", "datetime-max-west", "datetime-min-east", "sNaN",
         "-Infinity", "huge-exponent"],
)
def test_edge_values_get_a_key(value: Any) -> None:
    assert simple.key(value) == simple.key(value)
    assert simple.key(value) != simple.key(0)


def test_big_ints_of_different_values_get_different_keys() -> None:
    assert simple.key(10**5000) != simple.key(10**5000 + 1) != simple.key(-(10**5000))
    assert simple.key(2**64) != simple.key(2**64 + 1)


def test_equal_aware_times_share_a_key() -> None:
    one = dt.timezone(dt.timedelta(hours=1))
    assert dt.time(12, 0, tzinfo=one) == dt.time(11, 0, tzinfo=dt.timezone.utc)
    assert simple.key(dt.time(12, 0, tzinfo=one)) == simple.key(dt.time(11, 0, tzinfo=dt.timezone.utc))
    assert simple.key(dt.time(12, 0, tzinfo=one)) != simple.key(dt.time(12, 0, tzinfo=dt.timezone.utc))
    assert simple.key(dt.time(12, 0, tzinfo=one)) != simple.key(dt.time(11, 0))  # naive differs from aware


@pytest.mark.parametrize("make, reason", [
    (lambda: _Raising(), "__cache_key__() raised ZeroDivisionError"),
    (lambda: _SelfKeyed(), "nested too deeply, or it contains itself"),
    (lambda: _recursive_list(), "nested too deeply, or it contains itself"),
])
def test_arguments_that_cannot_be_encoded_are_a_cache_key_error_naming_the_parameter(make: Any, reason: str) -> None:
    with pytest.raises(CacheKeyError, match=rf"simple: parameter .b. .*{re.escape(reason)}"):
        simple.key(1, make())


class _Raising:
    def __cache_key__(self) -> Any:
        return 1 / 0


class _SelfKeyed:
    def __cache_key__(self) -> Any:
        return self


def _recursive_list() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def test_an_empty_key_template_fails_at_decoration() -> None:
    with pytest.raises(ValueError, match="empty template"):
        @cache_aside(ttl=1, key="")
        def f(x: int) -> None: ...


def test_a_template_that_cannot_be_formatted_is_a_cache_key_error_naming_it() -> None:
    @cache_aside(ttl=1, key="order:{order.id}")
    def f(order: Any) -> None: ...

    with pytest.raises(CacheKeyError, match=r"key template 'order:\{order.id\}' cannot be formatted.*AttributeError"):
        f.key(object())


@pytest.mark.parametrize(
    "template", ["doc:{tenant}-{doc}", "{tenant}{doc}", "doc:{tenant}.{doc}", "doc:{tenant}%{doc}"]
)
def test_fields_separated_only_by_kept_characters_warn_at_decoration(template: str) -> None:
    """'acme-corp','1' and 'acme','corp-1' would share 'doc:{tenant}-{doc}': the template is flagged."""
    with pytest.warns(CacheWarning, match=r"separate fields with a character that is escaped"):
        @cache_aside(ttl=1, key=template)
        def doc(tenant: str, doc: str) -> None: ...

    assert doc.key("acme-corp", "1") == doc.key("acme", "corp-1") or "-" not in template


def test_fields_separated_by_an_escaped_character_are_injective() -> None:
    @cache_aside(ttl=1, key="doc:{tenant}:{doc}")
    def doc(tenant: str, doc: str) -> None: ...

    assert doc.key("acme:corp", "1") != doc.key("acme", "corp:1")


def test_a_precision_in_a_key_template_warns_at_decoration() -> None:
    with pytest.warns(CacheWarning, match=r"formats \{tenant\} with a precision"):
        @cache_aside(ttl=1, key="doc:{tenant:.3}:{doc}")
        def doc(tenant: str, doc: str) -> None: ...

    assert doc.key("acme-1", "x") == doc.key("acme-2", "x")  # what the warning is about
