"""The package layout: imports flow downward only, each decision in its module, modules stay small.

Every module of the package has a layer; a module imports nothing from a higher layer
(at any depth of its code, function-level imports included). New modules must be given
a layer here, so the map in docs/design.md stays the map of the code.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

import cacheaside

PACKAGE = pathlib.Path(cacheaside.__file__).parent

#: module -> layer; lower layers never import higher ones.
LAYERS = {
    # leaves: plain data, the error tree, the live defaults, counters
    "cacheaside.exceptions": 0,
    "cacheaside._types": 0,
    "cacheaside._settings": 0,
    "cacheaside.stats": 0,
    # pure policy, no I/O
    "cacheaside._arguments": 1,
    "cacheaside._encoding": 1,
    "cacheaside._templates": 1,
    "cacheaside.keys": 1,
    "cacheaside.serializers": 1,
    "cacheaside.resilience": 1,
    "cacheaside.guard": 1,
    "cacheaside.shards": 1,
    "cacheaside.policy": 1,
    # stores
    "cacheaside.stores": 2,
    "cacheaside.stores.base": 2,
    "cacheaside.stores.memory": 2,
    "cacheaside.stores.envelope": 2,
    "cacheaside.stores.redis_scripts": 2,
    "cacheaside.stores._redis_faults": 2,
    "cacheaside.stores._redis_commands": 2,
    "cacheaside.stores._redis_spread": 2,
    "cacheaside.stores.redis": 2,
    # flows: what a call does, as generators; in-process single-flight; a call site's reports
    "cacheaside._flights": 3,
    "cacheaside._site": 3,
    "cacheaside.flow": 3,
    # I/O: the two drivers, evictions
    "cacheaside._calls": 4,
    "cacheaside._refreshes": 4,
    "cacheaside.drivers": 4,
    "cacheaside.evictions": 4,
    # the API
    "cacheaside._binding": 5,
    "cacheaside.reads": 5,
    "cacheaside.writes": 5,
    "cacheaside.typing": 5,
    "cacheaside.metrics": 5,
    "cacheaside.transactions": 5,
    "cacheaside.decorators": 5,
    # top
    "cacheaside.config": 6,
    "cacheaside": 6,
    "cacheaside.integrations": 6,
    "cacheaside.integrations.sqlalchemy": 6,
    "cacheaside.integrations.django": 6,
    "cacheaside.demo": 7,
    "cacheaside.cli": 7,
    "cacheaside.__main__": 7,
}

MAX_LINES = 400


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: pathlib.Path) -> set[str]:
    """The modules the source of ``module`` imports, at any depth of its code."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if node.module is not None:  # ``from . import x`` imports x, not the package
                found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _ours(imported: set[str]) -> set[str]:
    """The package's modules among ``imported`` (``from . import x`` names module x)."""
    return {m for m in imported if m in LAYERS}


def test_every_module_has_a_layer() -> None:
    assert sorted(set(_modules()) - set(LAYERS)) == []


@pytest.mark.parametrize("module", sorted(_modules()))
def test_module_imports_nothing_above_its_layer(module: str) -> None:
    path = _modules()[module]
    above = {m for m in _ours(_imports(module, path)) if LAYERS[m] > LAYERS[module]}
    assert not above, f"{module} (layer {LAYERS[module]}) imports {sorted(above)}"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_nothing_below_config_imports_it(module: str) -> None:
    if LAYERS[module] < LAYERS["cacheaside.config"]:
        assert "cacheaside.config" not in _imports(module, _modules()[module])


def test_settings_is_a_leaf() -> None:
    assert _ours(_imports("cacheaside._settings", _modules()["cacheaside._settings"])) == set()


def test_the_flow_knows_nothing_of_threads_or_event_loops() -> None:
    imported = _imports("cacheaside.flow", _modules()["cacheaside.flow"])
    assert not {"threading", "asyncio", "logging", "warnings"} & imported, imported


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_module_is_over_400_lines(module: str) -> None:
    lines = len(_modules()[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it by responsibility"


def test_public_names_are_importable() -> None:
    names = [
        "cache_aside", "invalidates", "invalidate_tags", "ainvalidate_tags", "configure", "disabled",
        "MemoryStore", "RedisStore", "MsgpackSerializer", "CircuitBreaker", "Retry", "CacheStats",
        "CacheError", "CacheKeyError", "SerializationError", "CacheWarning",
    ]
    for name in names:
        assert hasattr(cacheaside, name)
    assert cacheaside.__all__ == sorted(cacheaside.__all__)


#: Private attributes of the dependencies that the package once read (and must not again): wrapt's
#: bound wrappers, redis-py's connections, parsers and retries.
_PRIVATE = re.compile(
    r"getattr\([^,]+, *[\"']_[a-z]|\._(writer|reader|retries|sock|parser|available_connections|"
    r"in_use_connections|self_instance|self_binding|self_owner|self_wrapper|self_enabled)\b"
)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_private_attribute_of_a_dependency_is_read(module: str) -> None:
    """Dependencies through their public API only (wrapt's documented ``_self_parent`` is read in one place)."""
    text = _modules()[module].read_text()
    hits = [m.group(0) for m in _PRIVATE.finditer(text)]
    assert not hits, f"{module} reads {hits}"
    if module != "cacheaside._binding":
        assert "_self_parent" not in text, f"{module}: only _binding.site_of reads wrapt's _self_parent"
