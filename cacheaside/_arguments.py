"""Argument binding for keys, templates, tags and writers: a call's arguments by parameter.

``inspect.Signature.bind`` on every call costs more than a whole cachetools hit, so
each call *shape* (number of positional arguments, names of keyword arguments) is bound
once, checked with ``Signature.bind`` for the interpreter's own messages, and replayed as
a plan afterwards. ``skip`` means the call's arguments leave out the first parameter
(``self``/``cls``, which the caller passes separately).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from typing import Any

__all__ = ["ArgMap", "Plans", "identity"]

#: A bound-argument plan: turns (args, kwargs) of one call shape into the bound values.
Plan = Callable[[tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]


def identity(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """The plan of a call that passes every kept parameter positionally."""
    return args


class Plans:
    """Per-shape plans giving a call's values in parameter order, defaults applied, ``drop`` left out.

    ``by_skip[skip][shape]`` is a plan; the hit path looks it up itself (one frame less).
    """

    def __init__(self, signature: inspect.Signature, *, name: str, drop: Collection[str] = ()) -> None:
        self.signature = signature
        self.name = name
        self.params = list(signature.parameters.values())
        self.drop = frozenset(drop)
        #: Plans per (skip, shape); bounded so odd call shapes can't grow them forever.
        self.by_skip: tuple[dict[Any, Plan], dict[Any, Plan]] = ({}, {})

    def values(self, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        plans = self.by_skip[skip]
        shape: Any = len(args) if not kwargs else (len(args), *kwargs)
        plan = plans.get(shape)
        if plan is None:
            plan = self._make(skip, args, kwargs)
            if len(plans) < 64:
                plans[shape] = plan
        return plan(args, kwargs)

    def _make(self, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Plan:
        params = self.params[1:] if skip else self.params
        sig = self.signature.replace(parameters=params)
        try:
            sig.bind(*args, **kwargs)  # the interpreter's own checks and messages
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        keep = [i for i, p in enumerate(params) if p.name not in self.drop]
        pick: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None
        if len(keep) != len(params):
            pick = lambda v: tuple(v[i] for i in keep)

        simple = all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params)
        n = len(args)
        if simple and n <= len(params):
            tail = params[n:]
            if not kwargs:
                fill = tuple(p.default for p in tail)
                if pick is None:
                    return identity if not fill else lambda a, k: a + fill
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


class ArgMap:
    """A call's arguments by parameter name, with defaults applied.

    Equivalent to ``Signature.bind`` + ``apply_defaults`` (which it falls back to, for its
    checks and messages) but a dict build for signatures without ``*args``/``**kwargs``:
    templates, tags and writers map arguments on every call.
    """

    def __init__(self, signature: inspect.Signature, *, name: str = "") -> None:
        self.signature = signature
        self.name = name
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

    def __call__(self, skip: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        shape = self._shapes[skip]
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
        params = self.params[1:] if skip else self.params
        try:
            bound = self.signature.replace(parameters=params).bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        bound.apply_defaults()
        return dict(bound.arguments)
