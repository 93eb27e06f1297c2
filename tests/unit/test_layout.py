"""The package's shape, read from its source with ast: no module imports a module that
imports it back, and only dcmrecvd.pnd reaches into pynetdicom's internals; everything
else uses the public names listed here."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.paths import REPO

PACKAGE = REPO / "dcmrecvd"
# The one package that may touch pynetdicom's internals (its contract test pins them).
PND = "dcmrecvd.pnd"

# What an application written against pynetdicom's documented API uses: the AE and its
# event handlers, the primitives those handlers receive, the UID registry and its service
# classes. Outside dcmrecvd.pnd, a pynetdicom import must name one of these; "*" means every
# public name of that module.
PUBLIC: dict[str, frozenset[str]] = {
    "pynetdicom": frozenset(
        {
            "AE",
            "ALL_TRANSFER_SYNTAXES",
            "AllStoragePresentationContexts",
            "DEFAULT_TRANSFER_SYNTAXES",
            "StoragePresentationContexts",
            "VerificationPresentationContexts",
            "build_context",
            "build_role",
            "evt",
            "register_uid",
        }
    ),
    "pynetdicom.association": frozenset({"Association"}),
    "pynetdicom.dimse_primitives": frozenset({"C_ECHO", "C_STORE"}),
    "pynetdicom.events": frozenset({"Event", "EventHandlerType"}),
    "pynetdicom.pdu_primitives": frozenset(
        {
            "A_ASSOCIATE",
            "A_P_ABORT",
            "SCP_SCU_RoleSelectionNegotiation",
            "SOPClassExtendedNegotiation",
            "UserIdentityNegotiation",
        }
    ),
    "pynetdicom.presentation": frozenset({"PresentationContext"}),
    "pynetdicom.service_class": frozenset(
        {"ServiceClass", "StorageServiceClass", "VerificationServiceClass"}
    ),
    "pynetdicom.sop_class": frozenset({"*"}),
}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module


def modules() -> list[Module]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append(Module(".".join(parts), path, ast.parse(path.read_text(), str(path))))
    return found


def imports(module: Module, known: set[str]) -> set[str]:
    """The package's modules that `module` imports, wherever the import statement is
    (under TYPE_CHECKING or in a function too: each is a dependency of the code)."""
    found = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in known:
                    found.add(submodule)
                elif node.module in known:
                    found.add(node.module)
    found.discard(module.name)
    return found


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` as the path that closes it, or [] when there is none."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str]:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return []
        for imported in sorted(graph.get(name, set())):
            found = visit(imported, [*path, name])
            if found:
                return found
        done.add(name)
        return []

    for name in sorted(graph):
        found = visit(name, [])
        if found:
            return found
    return []


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = {m.name for m in found}
    return {m.name: imports(m, known) for m in found}


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    assert cycle(import_graph()) == []


# Data flows one way: what each layer must not import (the programs and the daemon's
# process model sit above the receiver, which sits above the packages it wires).
FORBIDDEN = {
    "dcmrecvd.config": (
        "dcmrecvd.receiver",
        "dcmrecvd.apps",
        "dcmrecvd.service",
        "dcmrecvd.pnd",
        "dcmrecvd.store",
        "dcmrecvd.commitment",
    ),
    "dcmrecvd.pnd": (
        "dcmrecvd.receiver",
        "dcmrecvd.apps",
        "dcmrecvd.service",
        "dcmrecvd.store",
        "dcmrecvd.commitment",
    ),
    "dcmrecvd.store": (
        "dcmrecvd.receiver",
        "dcmrecvd.apps",
        "dcmrecvd.service",
        "dcmrecvd.pnd",
        "dcmrecvd.events",
        "dcmrecvd.commitment",
    ),
    # After the store: completion and delivery read the index; no association in sight.
    "dcmrecvd.events": (
        "dcmrecvd.receiver",
        "dcmrecvd.apps",
        "dcmrecvd.service",
        "dcmrecvd.pnd",
        "dcmrecvd.commitment",
    ),
    # After the store too: it reads the index, and opens associations of its own through
    # pynetdicom's public API only; the receiver hands it the requests.
    "dcmrecvd.commitment": (
        "dcmrecvd.receiver",
        "dcmrecvd.apps",
        "dcmrecvd.service",
        "dcmrecvd.pnd",
        "dcmrecvd.events",
    ),
    "dcmrecvd.receiver": ("dcmrecvd.apps", "dcmrecvd.service"),
    # Plain data in, text out: what the metrics show is read by service/ and apps/.
    "dcmrecvd.metrics": (
        "dcmrecvd.receiver",
        "dcmrecvd.apps",
        "dcmrecvd.service",
        "dcmrecvd.pnd",
        "dcmrecvd.store",
        "dcmrecvd.events",
        "dcmrecvd.config",
        "dcmrecvd.commitment",
    ),
    "dcmrecvd.service": ("dcmrecvd.apps",),
}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{name} -> {imported}"
        for name, deps in graph.items()
        for layer, forbidden in FORBIDDEN.items()
        if within(name, layer)
        for imported in deps
        if any(within(imported, above) for above in forbidden)
    )


def test_each_layer_imports_only_what_is_below_it() -> None:
    assert upward(import_graph()) == []


def test_the_graph_sees_imports_and_cycles() -> None:
    known = {"p", "p.a", "p.b", "p.sub", "p.sub.c"}
    tree = ast.parse(
        "from p import a, x\n"
        "from p.sub import c\n"
        "import p.b\n"
        "if TYPE_CHECKING:\n    from p.sub.c import Thing\n"
        "def f():\n    from p import sub\n"
    )
    assert imports(Module("p.m", Path("m.py"), tree), known) == {
        "p",
        "p.a",
        "p.b",
        "p.sub",
        "p.sub.c",
    }
    assert upward({"dcmrecvd.store.x": {"dcmrecvd.pnd.streaming", "dcmrecvd.sink"}}) == [
        "dcmrecvd.store.x -> dcmrecvd.pnd.streaming"
    ]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert "dcmrecvd.receiver" in import_graph()["dcmrecvd.apps.dcmrecv_life"]


def is_public(module: str, name: str) -> bool:
    allowed = PUBLIC.get(module, frozenset())
    return name in allowed or ("*" in allowed and not name.startswith("_"))


def pynetdicom_uses(tree: ast.Module) -> list[tuple[int, str]]:
    """Every pynetdicom name the module imports or reaches as an attribute of the package,
    with its line, as "module:name" (or the module alone for `import pynetdicom.x`)."""
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pynetdicom":
            uses += [(node.lineno, f"{node.module}:{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            uses += [
                (node.lineno, alias.name)
                for alias in node.names
                if alias.name.split(".")[0] == "pynetdicom"
            ]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "pynetdicom"
        ):
            uses.append((node.lineno, f"pynetdicom:{node.attr}"))
    return uses


def is_public_use(use: str) -> bool:
    module, _, name = use.partition(":")
    if not name:
        return module == "pynetdicom" or module in PUBLIC
    # `pynetdicom.sop_class` after `import pynetdicom.sop_class` names a public module.
    return name == "__version__" or is_public(module, name) or f"{module}.{name}" in PUBLIC


# Documented public despite the underscore.
PUBLIC_UNDERSCORED = frozenset({"os._exit"})


def private_attributes(tree: ast.Module) -> list[tuple[int, str]]:
    """Private attributes reached on anything but self or cls, and __class__ assignments:
    the two ways code patches another library's objects."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else ""
            own = owner in ("self", "cls") or f"{owner}.{node.attr}" in PUBLIC_UNDERSCORED
            private = node.attr.startswith("_") and not node.attr.endswith("__")
            if private and not own:
                found.append((node.lineno, node.attr))
            if node.attr == "__class__" and isinstance(node.ctx, ast.Store):
                found.append((node.lineno, node.attr))
    return found


OUTSIDE_PND = [m for m in modules() if not (m.name + ".").startswith(PND + ".")]


@pytest.mark.parametrize("module", OUTSIDE_PND, ids=lambda m: m.name)
def test_only_pnd_imports_pynetdicom_internals(module: Module) -> None:
    internal = [
        f"line {line}: {use}"
        for line, use in pynetdicom_uses(module.tree)
        if not is_public_use(use)
    ]
    assert internal == [], f"{module.path}: move this use into {PND} (or list it as public)"


@pytest.mark.parametrize("module", OUTSIDE_PND, ids=lambda m: m.name)
def test_only_pnd_touches_private_attributes(module: Module) -> None:
    found = [f"line {line}: .{name}" for line, name in private_attributes(module.tree)]
    assert found == [], f"{module.path}: private attributes belong in {PND}"


def test_the_checks_see_internals() -> None:
    tree = ast.parse(
        "import pynetdicom\n"
        "from pynetdicom._handlers import standard_pdu_recv_handler\n"
        "from pynetdicom.fsm import TRANSITION_TABLE\n"
        "from pynetdicom import AE, _config\n"
        "pynetdicom._config.LOG_HANDLER_LEVEL\n"
        "assoc.dul._recv_pdu = None\n"
        "assoc.dimse.__class__ = object\n"
        "os._exit(0)\n"
    )
    uses = [use for _, use in pynetdicom_uses(tree) if not is_public_use(use)]
    assert uses == [
        "pynetdicom._handlers:standard_pdu_recv_handler",
        "pynetdicom.fsm:TRANSITION_TABLE",
        "pynetdicom:_config",
        "pynetdicom:_config",
    ]
    assert sorted(name for _, name in private_attributes(tree)) == [
        "__class__",
        "_config",
        "_recv_pdu",
    ]
