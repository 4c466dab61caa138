"""The package layout: each module imports nothing above its layer."""

from __future__ import annotations

import ast
import pathlib

import pytest

import cacheaside

# module -> cacheaside modules it must not pull in
LAYERS = {
    "cacheaside.exceptions": ["cacheaside.keys", "cacheaside.stores", "cacheaside.flow", "cacheaside.decorators"],
    "cacheaside._types": ["cacheaside.keys", "cacheaside.stores", "cacheaside.flow", "cacheaside.decorators"],
    "cacheaside.keys": ["cacheaside.stores", "cacheaside.flow", "cacheaside.decorators", "cacheaside.config"],
    "cacheaside.serializers": ["cacheaside.stores", "cacheaside.flow", "cacheaside.decorators"],
    "cacheaside.resilience": ["cacheaside.stores", "cacheaside.flow", "cacheaside.decorators"],
    "cacheaside.guard": ["cacheaside.stores", "cacheaside.flow", "cacheaside.drivers", "cacheaside.decorators"],
    "cacheaside._settings": ["cacheaside._types", "cacheaside.keys", "cacheaside.stores", "cacheaside.config"],
    "cacheaside.stores.memory": ["cacheaside.flow", "cacheaside.decorators", "cacheaside.drivers", "cacheaside.config"],
    "cacheaside.stores.redis": ["cacheaside.flow", "cacheaside.decorators", "cacheaside.drivers", "cacheaside.config"],
    "cacheaside.flow": ["cacheaside.decorators", "cacheaside.drivers", "cacheaside.stores.memory", "cacheaside.config"],
    "cacheaside.decorators": ["cacheaside.config"],
    "cacheaside.drivers": ["cacheaside.decorators"],
}


def _imports(module: str) -> set[str]:
    """The cacheaside modules a module's source imports (at any depth of its own code)."""
    path = pathlib.Path(cacheaside.__file__).parent.joinpath(*module.split(".")[1:])
    file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    package = module if path.is_dir() else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("cacheaside")}


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_module_imports_nothing_above_its_layer(module: str) -> None:
    imported = _imports(module)
    for above in LAYERS[module]:
        assert not any(m == above or m.startswith(above + ".") for m in imported), (module, above, imported)


def test_public_names_are_importable() -> None:
    import cacheaside

    names = [
        "cache_aside", "invalidates", "invalidate_tags", "ainvalidate_tags", "configure", "disabled",
        "MemoryStore", "RedisStore", "MsgpackSerializer", "CircuitBreaker", "Retry", "CacheStats",
        "CacheError", "CacheKeyError", "SerializationError", "CacheWarning",
    ]
    for name in names:
        assert hasattr(cacheaside, name)
    assert cacheaside.__all__ == sorted(cacheaside.__all__)
