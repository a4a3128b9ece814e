"""The import graph of the product, read from the source with `ast`: every import, also those
inside functions and under `TYPE_CHECKING` (a circle there still ties the modules together, and an
import inside a function still fails where the imported distribution is not installed).

Rules: no circle; nothing of the product imports the stand-ins, tests or benchmarks; a module
imports from another distribution only what its own distribution depends on (so a KVM host with
the core, settings, heartbeat and agent has every module the agent and heartbeat load); the
management side (driver, service, operator commands) imports nothing of the agent: what both
sides need (the agent commands' request types, the agent client) is in the core's `agentapi`."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
NAMESPACE = "cloudstack_storpool"
NOT_PRODUCT = ("integration", "tests", "benchmarks")
AGENT = f"{NAMESPACE}.agent"


@dataclass
class Distribution:
    name: str
    root: Path
    """The folder holding `cloudstack_storpool/` for this distribution."""
    depends: set[str]
    packages: list[str]
    """The packages the distribution's wheel ships (its `[tool.setuptools] packages`)."""


@dataclass
class Graph:
    dist_of: dict[str, str] = field(default_factory=dict)
    """module -> name of the distribution that ships it"""
    imports: dict[str, set[str]] = field(default_factory=dict)
    """module -> every module (of the product or not) it imports"""


def _requirement_name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0].lower().replace("_", "-")


def distributions(checkout: Path) -> list[Distribution]:
    """Each `pyproject.toml` of the checkout (the root one and one folder down), its source root
    and the project's own distributions it depends on."""
    out = []
    for pyproject in [checkout / "pyproject.toml", *sorted(checkout.glob("*/pyproject.toml"))]:
        data = tomllib.loads(pyproject.read_text())
        setuptools = data.get("tool", {}).get("setuptools", {})
        out.append(Distribution(data["project"]["name"], pyproject.parent / setuptools.get("package-dir", {}).get("", "."),
                                {_requirement_name(r) for r in data["project"].get("dependencies", [])},
                                setuptools.get("packages", [])))
    names = {d.name for d in out}
    for d in out:
        d.depends &= names
    return out


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(module: str, is_package: bool, tree: ast.AST, known: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            subs = {f"{base}.{alias.name}" for alias in node.names} & known
            # `from pkg import mod` imports the module; `from mod import name` imports `mod`.
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(base)
    found.discard(module)
    return found


def read_graph(dists: Iterable[Distribution]) -> Graph:
    graph = Graph()
    sources: dict[str, tuple[Path, bool]] = {}
    for d in dists:
        for path in sorted((d.root / NAMESPACE).rglob("*.py")):
            name = _module_name(d.root, path)
            assert name not in graph.dist_of, f"{name} is shipped by {graph.dist_of[name]} and {d.name}"
            graph.dist_of[name] = d.name
            sources[name] = (path, path.name == "__init__.py")
    known = set(sources)
    for name, (path, is_package) in sources.items():
        graph.imports[name] = _imports(name, is_package, ast.parse(path.read_text(), str(path)), known)
    return graph


def circles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    edges = {m: sorted(i for i in deps if i in graph.imports) for m, deps in graph.imports.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def stand_in_imports(graph: Graph) -> dict[str, list[str]]:
    return {m: sorted(i for i in deps if i.split(".")[0] in NOT_PRODUCT)
            for m, deps in graph.imports.items() if any(i.split(".")[0] in NOT_PRODUCT for i in deps)}


def undeclared_imports(graph: Graph, dists: Iterable[Distribution]) -> dict[str, list[str]]:
    """Imports of a module from a distribution its own one does not (even indirectly) depend on."""
    by_name = {d.name: d for d in dists}

    def closure(name: str) -> set[str]:
        seen, todo = {name}, [name]
        while todo:
            for dep in by_name[todo.pop()].depends - seen:
                seen.add(dep)
                todo.append(dep)
        return seen

    out = {}
    for m, deps in graph.imports.items():
        allowed = closure(graph.dist_of[m])
        bad = sorted(i for i in deps if i in graph.dist_of and graph.dist_of[i] not in allowed)
        if bad:
            out[m] = bad
    return out


def management_imports_of_agent(graph: Graph, management: str) -> dict[str, list[str]]:
    return {m: sorted(i for i in deps if i == AGENT or i.startswith(AGENT + "."))
            for m, deps in graph.imports.items()
            if graph.dist_of[m] == management and any(i == AGENT or i.startswith(AGENT + ".") for i in deps)}


DISTS = distributions(CHECKOUT)
GRAPH = read_graph(DISTS)


def test_every_distribution_is_read() -> None:
    assert {d.name for d in DISTS} == {"cloudstack-storpool", "cloudstack-storpool-settings",
                                       "cloudstack-storpool-heartbeat", "cloudstack-storpool-agent",
                                       "cloudstack-storpool-driver"}
    assert {"cloudstack_storpool.spconn", "cloudstack_storpool.agent.server",
            "cloudstack_storpool.driver.context", "cloudstack_storpool.service.app"} <= set(GRAPH.dist_of)


def test_every_package_folder_is_shipped() -> None:
    """A folder of modules missing from its distribution's package list would be importable from
    the checkout and absent from the wheel."""
    for d in DISTS:
        folders = {_module_name(d.root, p.parent / "__init__.py") for p in (d.root / NAMESPACE).rglob("*.py")}
        assert folders | {NAMESPACE} == set(d.packages) | {NAMESPACE}, d.name


def test_no_import_circle_in_the_product() -> None:
    assert circles(GRAPH) == []


def test_the_product_imports_no_stand_in_test_or_benchmark() -> None:
    assert stand_in_imports(GRAPH) == {}


def test_imports_across_distributions_follow_their_dependencies() -> None:
    assert undeclared_imports(GRAPH, DISTS) == {}


def test_the_management_side_imports_nothing_of_the_agent() -> None:
    assert management_imports_of_agent(GRAPH, "cloudstack-storpool-driver") == {}


# The reader itself, on a made-up tree: what the rules above would miss if it did not see an import.

def _tree(tmp_path: Path, files: dict[str, str]) -> list[Distribution]:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return distributions(tmp_path)


PYPROJECT = '[project]\nname = "{name}"\ndependencies = [{deps}]\n[tool.setuptools]\npackage-dir = {{"" = "{src}"}}\n'


@pytest.mark.parametrize("spelling", [
    "from cloudstack_storpool import low\n",
    "def f() -> None:\n    from cloudstack_storpool.low import x\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import cloudstack_storpool.low\n",
    "from . import low\n",
])
def test_the_reader_sees_every_spelling_of_an_import(tmp_path: Path, spelling: str) -> None:
    dists = _tree(tmp_path, {
        "pyproject.toml": PYPROJECT.format(name="core", deps="", src="."),
        "cloudstack_storpool/low.py": "from cloudstack_storpool.high import y\nx = 1\n",
        "cloudstack_storpool/high.py": spelling + "y = 2\n",
    })
    assert circles(read_graph(dists)) == [["cloudstack_storpool.high", "cloudstack_storpool.low"]]


def test_the_reader_finds_undeclared_and_forbidden_imports(tmp_path: Path) -> None:
    dists = _tree(tmp_path, {
        "pyproject.toml": PYPROJECT.format(name="core", deps="", src="."),
        "cloudstack_storpool/low.py": "def f() -> None:\n    import cloudstack_storpool.agent.x\n",
        "agent/pyproject.toml": PYPROJECT.format(name="agent", deps='"core==1"', src="src"),
        "agent/src/cloudstack_storpool/agent/__init__.py": "",
        "agent/src/cloudstack_storpool/agent/x.py": "import integration.stack\n",
        "driver/pyproject.toml": PYPROJECT.format(name="driver", deps='"core", "agent>=1"', src="src"),
        "driver/src/cloudstack_storpool/driver/y.py": "from cloudstack_storpool.agent import x\n",
    })
    graph = read_graph(dists)
    assert undeclared_imports(graph, dists) == {"cloudstack_storpool.low": ["cloudstack_storpool.agent.x"]}
    assert stand_in_imports(graph) == {"cloudstack_storpool.agent.x": ["integration.stack"]}
    assert management_imports_of_agent(graph, "driver") == {"cloudstack_storpool.driver.y": ["cloudstack_storpool.agent.x"]}
