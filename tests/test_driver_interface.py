"""The driver interface a stranger implements: abstract primitives, one import, no privates.

A driver is a :class:`~libkv.driver.Backend` that the public Store holds (composition).
These read the source as well as run it: which primitives are abstract, what the
bundled drivers import, that no driver reaches the core's private names, what the lock
and lease recipes touch, and that the core's modules import each other without a cycle.
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
import libkv.backend
import libkv.driver
from libkv import Store
from libkv.driver import Backend, Capabilities, Feed, KVPair, Op, StoreURL

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = {
    "get",
    "range",
    "commit",
    "delete_range",
    "grant_lease",
    "keepalive_lease",
    "lease_ttl",
    "revoke_lease",
    "open_feed",
    "translate_error",
}
OPTIONAL = {"get_many", "compact", "close", "last_contact"}
DRIVER_FILES = [
    "libkv/drivers/memory.py",
    "libkv/drivers/sqlite.py",
    *sorted(str(path.relative_to(ROOT)) for path in ROOT.glob("plugins/*/libkv_*/*.py")),
]


def complete_driver(leave_out: str | None = None) -> type[Backend]:
    """A backend class with every required primitive except ``leave_out``."""

    def get(self: Backend, key: str) -> KVPair | None:
        return None

    def range(  # noqa: A001 - the primitive's name
        self: Backend, prefix: str, recursive: bool
    ) -> tuple[list[KVPair], int]:
        return [], 0

    def commit(self: Backend, ops: Sequence[Op]) -> list[KVPair | None]:
        return [None for _ in ops]

    def delete_range(self: Backend, prefix: str) -> int:
        return 0

    def grant_lease(self: Backend, ttl: float) -> int:
        return 1

    def keepalive_lease(self: Backend, lease_id: int) -> bool:
        return True

    def lease_ttl(self: Backend, lease_id: int) -> float | None:
        return 1.0

    def revoke_lease(self: Backend, lease_id: int) -> None:
        return None

    def open_feed(self: Backend, prefix: str, after: int | None) -> Feed:
        raise NotImplementedError

    def translate_error(self: Backend, error: Exception) -> None:
        return None

    methods = {name: value for name, value in locals().items() if name in REQUIRED}
    assert set(methods) == REQUIRED
    methods.pop(leave_out, None)
    methods["capabilities"] = Capabilities(True, True, 0.1, 1e9, 1.0, 1024, 8)
    return type("StrangerBackend", (Backend,), methods)


@pytest.mark.parametrize("primitive", sorted(REQUIRED))
def test_a_driver_missing_a_required_primitive_cannot_be_instantiated(primitive: str) -> None:
    driver = complete_driver(leave_out=primitive)
    with pytest.raises(TypeError, match=rf"abstract method.*\b{primitive}\b"):
        driver(StoreURL.parse("stranger://"))


def test_a_driver_with_every_required_primitive_works_without_the_optional_ones() -> None:
    backend = complete_driver()(StoreURL.parse("stranger://"))
    with Store(backend) as store:
        assert store.backend is backend
        assert store.get_many(["a", "b"]) == []  # the default get_many: get each
        assert store.list() == []
        with pytest.raises(libkv.NotSupportedError):
            backend.compact(1)  # the default: no change history
    assert store.closed
    assert repr(store) == "<Store stranger://>"


def test_the_store_takes_url_namespace_timeout_and_capabilities_from_its_backend() -> None:
    backend = complete_driver()(StoreURL.parse("stranger://"), namespace="/a/b/", timeout=3.0)
    store = Store(backend)
    assert (store.url, store.namespace, store.timeout) == (backend.url, "a/b", 3.0)
    assert store.capabilities is backend.capabilities
    with pytest.raises(libkv.InvalidURLError, match="namespace"):
        complete_driver()(StoreURL.parse("stranger://"), namespace="a/../b")


def test_the_store_is_no_driver_base_class() -> None:
    assert not issubclass(Store, Backend) and not issubclass(Backend, Store)
    assert "Store" not in libkv.driver.__all__


def test_the_abstract_primitives_are_exactly_the_required_ones() -> None:
    assert Backend.__abstractmethods__ == REQUIRED
    for name in OPTIONAL:
        assert not getattr(getattr(Backend, name), "__isabstractmethod__", False), name


def test_the_primitive_tables_in_the_backend_docstring_list_every_primitive() -> None:
    doc = libkv.backend.__doc__ or ""
    required, _, optional = doc.partition("Optional:")
    listed_required = set(re.findall(r"^``(\w+)\(", required, re.MULTILINE))
    listed_optional = set(re.findall(r"^``(\w+)\(", optional, re.MULTILINE))
    assert listed_required == REQUIRED
    assert listed_optional == OPTIONAL


def test_the_driver_page_tables_list_every_primitive() -> None:
    """docs/writing-a-driver.md (the site's "Writing a driver") lists every primitive."""
    page = (ROOT / "docs" / "writing-a-driver.md").read_text()
    section = page.split("# Writing a driver", 1)[1].split("\n## ", 1)[0]
    required, _, optional = section.partition("Optional")
    listed_required = set(re.findall(r"`(\w+)\(", required.split("| primitive |", 1)[1]))
    listed_optional = set(re.findall(r"^\| `(\w+)\(", optional, re.MULTILINE))
    assert listed_required == REQUIRED
    assert listed_optional == OPTIONAL


def test_every_bundled_driver_overrides_only_primitives() -> None:
    """A bundled backend's public names are primitives, or its own (not the Backend's)."""
    inherited = {name for name, _ in inspect.getmembers(Backend) if not name.startswith("_")}
    for module_name in ("libkv.drivers.memory", "libkv.drivers.sqlite"):
        module = importlib.import_module(module_name)
        driver = next(
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, Backend) and value is not Backend
        )
        overridden = {name for name in vars(driver) if name in inherited}
        assert overridden <= REQUIRED | OPTIONAL | {"capabilities"}, (module_name, overridden)


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


DRIVER_PACKAGES = {
    "memory": ["libkv/drivers/memory.py"],
    "sqlite": ["libkv/drivers/sqlite.py"],
    **{
        path.name: sorted(str(file.relative_to(ROOT)) for file in path.glob("*.py"))
        for path in sorted(ROOT.glob("plugins/*/libkv_*"))
    },
}
# The ZooKeeper driver sends raw requests with kazoo's KazooClient._call, a name the
# Store's private _call happens to share.
FOREIGN = {("_call", "self._client")}


def core_private_names() -> set[str]:
    with libkv.open("memory://") as store:
        names = set(dir(store)) | set(vars(store))
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


@pytest.mark.parametrize("package", sorted(DRIVER_PACKAGES))
def test_drivers_reach_no_private_name_of_the_core(package: str) -> None:
    """A backend sees only its primitives: no driver names the Store's private state
    (``_root``, ``_call``, ``_closed``...) other than as its own attribute."""
    core = core_private_names()
    assert {"_root", "_call", "_closed", "_backend"} <= core  # the check sees the Store
    trees = {
        relative: ast.parse((ROOT / relative).read_text()) for relative in DRIVER_PACKAGES[package]
    }
    own = {
        node.attr if isinstance(node, ast.Attribute) else node.name
        for tree in trees.values()
        for node in ast.walk(tree)
        if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store))
        or isinstance(node, (ast.FunctionDef, ast.ClassDef))
    }
    offenders = [
        f"{relative}:{node.lineno} {ast.unparse(node)}"
        for relative, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in core - own
        and (node.attr, ast.unparse(node.value)) not in FOREIGN
    ]
    assert offenders == []


def test_libkv_driver_exports_what_a_driver_needs() -> None:
    for name in libkv.driver.__all__:
        assert hasattr(libkv.driver, name), name
    needed = {
        "Backend",
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
