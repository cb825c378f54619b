"""The driver interface a stranger implements: abstract primitives, one import, no privates.

These read the source as well as run it: which primitives are abstract, what the
bundled drivers import, what the lock and lease recipes touch, and that the core's
modules import each other without a cycle.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import libkv
import libkv.api
import libkv.driver
from libkv.driver import Capabilities, Feed, KVPair, Op, Store, StoreURL

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = {
    "_get",
    "_range",
    "_commit",
    "_delete_range",
    "_grant_lease",
    "_keepalive_lease",
    "_lease_ttl",
    "_revoke_lease",
    "_open_feed",
    "_translate_error",
}
OPTIONAL = {"_get_many", "_compact", "_close", "_last_contact"}
DRIVER_FILES = [
    "libkv/drivers/memory.py",
    "libkv/drivers/sqlite.py",
    *sorted(str(path.relative_to(ROOT)) for path in ROOT.glob("plugins/*/libkv_*/*.py")),
]


def complete_driver(leave_out: str | None = None) -> type[Store]:
    """A driver class with every required primitive except ``leave_out``."""

    def _get(self: Store, key: str) -> KVPair | None:
        return None

    def _range(self: Store, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        return [], 0

    def _commit(self: Store, ops: Sequence[Op]) -> list[KVPair | None]:
        return [None for _ in ops]

    def _delete_range(self: Store, prefix: str) -> int:
        return 0

    def _grant_lease(self: Store, ttl: float) -> int:
        return 1

    def _keepalive_lease(self: Store, lease_id: int) -> bool:
        return True

    def _lease_ttl(self: Store, lease_id: int) -> float | None:
        return 1.0

    def _revoke_lease(self: Store, lease_id: int) -> None:
        return None

    def _open_feed(self: Store, prefix: str, after: int | None) -> Feed:
        raise NotImplementedError

    def _translate_error(self: Store, error: Exception) -> None:
        return None

    methods = {name: value for name, value in locals().items() if name in REQUIRED}
    assert set(methods) == REQUIRED
    methods.pop(leave_out, None)
    methods["capabilities"] = Capabilities(True, True, 0.1, 1e9, 1.0, 1024, 8)
    return type("StrangerStore", (Store,), methods)


@pytest.mark.parametrize("primitive", sorted(REQUIRED))
def test_a_driver_missing_a_required_primitive_cannot_be_instantiated(primitive: str) -> None:
    driver = complete_driver(leave_out=primitive)
    with pytest.raises(TypeError, match=rf"abstract method.*\b{primitive}\b"):
        driver(StoreURL.parse("stranger://"))


def test_a_driver_with_every_required_primitive_works_without_the_optional_ones() -> None:
    with complete_driver()(StoreURL.parse("stranger://")) as store:
        assert store.get_many(["a", "b"]) == []  # the default _get_many: _get each
        assert store.list() == []
        with pytest.raises(libkv.NotSupportedError):
            store._compact(1)  # the default: no change history
    assert store.closed


def test_the_abstract_primitives_are_exactly_the_required_ones() -> None:
    assert Store.__abstractmethods__ == REQUIRED
    for name in OPTIONAL:
        assert not getattr(getattr(Store, name), "__isabstractmethod__", False), name


def test_the_primitive_tables_in_the_api_docstring_list_every_primitive() -> None:
    doc = libkv.api.__doc__ or ""
    required, _, optional = doc.partition("Optional:")
    listed_required = set(re.findall(r"^``(_\w+)\(", required, re.MULTILINE))
    listed_optional = set(re.findall(r"^``(_\w+)\(", optional, re.MULTILINE))
    assert listed_required == REQUIRED
    assert listed_optional == OPTIONAL


def test_every_bundled_driver_overrides_only_primitives() -> None:
    primitives = REQUIRED | OPTIONAL
    core = {
        name
        for name, _ in inspect.getmembers(Store)
        if name.startswith("_") and not name.startswith(("__", "_abc_"))
    }
    for module_name in ("libkv.drivers.memory", "libkv.drivers.sqlite"):
        module = importlib.import_module(module_name)
        driver = next(
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, Store) and value is not Store
        )
        overridden = {name for name in vars(driver) if name in core}
        assert overridden <= primitives, (module_name, overridden - primitives)


def libkv_imports(tree: ast.AST) -> Iterator[tuple[ast.ImportFrom | ast.Import, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "libkv" or node.module.startswith("libkv."):
                yield node, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "libkv" or alias.name.startswith("libkv."):
                    yield node, alias.name


@pytest.mark.parametrize("relative", DRIVER_FILES)
def test_drivers_import_only_from_libkv_driver_and_no_private_name(relative: str) -> None:
    for node, module in libkv_imports(ast.parse((ROOT / relative).read_text())):
        assert module in ("libkv", "libkv.driver"), f"{relative}:{node.lineno} imports {module}"
        if isinstance(node, ast.ImportFrom):
            private = [alias.name for alias in node.names if alias.name.startswith("_")]
            assert not private, f"{relative}:{node.lineno} imports {private}"


def test_libkv_driver_exports_what_a_driver_needs() -> None:
    for name in libkv.driver.__all__:
        assert hasattr(libkv.driver, name), name
    needed = {
        "Store",
        "Feed",
        "FeedBatch",
        "StoreURL",
        "Capabilities",
        "KVPair",
        "Event",
        "Action",
        "Op",
        "OpKind",
        "first_failure",
        "in_prefix",
        "MAX_REVISION",
        "InvalidArgumentError",
        "parse_bool",
        "parse_seconds",
        "parse_positive_int",
    }
    errors = {name for name in libkv.__all__ if name.endswith("Error")} - {
        "UnknownSchemeError",  # the registry's, never a driver's
        "WaitTimeoutError",  # the core's bounded waits
    }
    assert needed | errors <= set(libkv.driver.__all__)


@pytest.mark.parametrize("relative", ["libkv/lock.py", "libkv/lease.py"])
def test_recipes_touch_no_private_attribute_of_another_object(relative: str) -> None:
    """The lock and lease recipes use the public Store and Lease API (``self._x`` is theirs)."""
    tree = ast.parse((ROOT / relative).read_text())
    offenders = [
        f"{relative}:{node.lineno} .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]
    assert offenders == []


def runtime_imports(path: Path, package: set[str]) -> set[str]:
    """The libkv modules ``path`` imports when run: any depth, but not under TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for child in ast.walk(node)}
    found: set[str] = set()
    for node, module in libkv_imports(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            submodules = {f"{module}.{alias.name}" for alias in node.names} & package
            found |= submodules or {module}
        else:
            found.add(module)
    return found


def test_the_core_modules_import_each_other_without_a_cycle() -> None:
    files = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (ROOT / "libkv").rglob("*.py")
        if "testing" not in path.parts
    }
    graph = {module: runtime_imports(path, set(files)) - {module} for module, path in files.items()}
    cycles: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            cycles.append([*trail[trail.index(module) :], module])
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*trail, module])

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []
    assert "libkv.api" not in graph["libkv.watching"]
    assert "libkv.cli" not in graph["libkv.demo"]
