"""docs/adapter.md is the plugin's contract with CloudStack; the simulator's orchestrator is its
executable form. Every operation the table names must be one the simulator calls, and every
operation the service publishes must be accounted for on the page."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from cloudstack_storpool.service.operations import TABLE
from integration.cloudstack_sim import orchestrator

DOC = Path(__file__).resolve().parents[3] / "docs" / "adapter.md"
CODE = re.compile(r"`([a-z_:]+)`")


def simulator_call_map() -> tuple[set[str], set[str]]:
    """(service operations, agent commands) the orchestrator's code calls, read from its source:
    `plugin.call("<operation>", ...)`, `_let_go(model, "<operation>", ...)` (a host letting go
    of disks, its failure ignored as CloudStack ignores it) and `plugin.agent(ip, port,
    "<command>", ...)`."""
    tree = ast.parse(Path(orchestrator.__file__).read_text())
    ops: set[str] = set()
    agent: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and node.func.id == "_let_go" and len(node.args) >= 2:
            assert isinstance(node.args[1], ast.Constant), ast.dump(node)
            ops.add(str(node.args[1].value))
        if not isinstance(node.func, ast.Attribute):
            continue
        if node.func.attr == "call" and node.args and isinstance(node.args[0], ast.Constant):
            ops.add(str(node.args[0].value))
        if node.func.attr == "agent" and len(node.args) >= 3 and isinstance(node.args[2], ast.Constant):
            agent.add(str(node.args[2].value))
    return ops, agent


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:] if end < 0 else text[start:end]


def table_operations(text: str) -> set[str]:
    """The "Service operation" column (the third) of the driven-entry-points table."""
    out: set[str] = set()
    for line in _section(text, "## Entry points driven by the simulator").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[2] not in ("Service operation", "---"):
            found = CODE.findall(cells[2])
            assert found, f"row without an operation: {line}"
            out.update(found)
    return out


def table_fields(text: str) -> dict[str, set[str]]:
    """Each driven row's operation -> the names in its "Request fields" column (the fourth)."""
    out: dict[str, set[str]] = {}
    for line in _section(text, "## Entry points driven by the simulator").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[2] not in ("Service operation", "---"):
            for op in CODE.findall(cells[2]):
                out.setdefault(op, set()).update(CODE.findall(cells[3]))
    return out


def test_every_required_parameter_is_in_its_row() -> None:
    """What an operation cannot do without (the hosts of a resize, say) is named in its row, so
    an adapter written from the table sends it."""
    for op_name, fields in table_fields(DOC.read_text()).items():
        required = {p.name for p in TABLE.by_name[op_name].params if p.required}
        assert required <= fields, f"{op_name}: the row lacks {sorted(required - fields)}"


def test_every_row_is_exercised_by_the_simulator() -> None:
    text = DOC.read_text()
    rows = table_operations(text)
    assert len(rows) >= 20
    unknown = rows - set(TABLE.by_name)
    assert not unknown, f"the table names operations the service does not have: {sorted(unknown)}"
    called, _ = simulator_call_map()
    missing = rows - called
    assert not missing, f"rows the simulator never calls: {sorted(missing)}"
    # And nothing the simulator calls is missing from the table.
    assert called <= rows, sorted(called - rows)


def test_the_simulator_reaches_hosts_only_through_the_service() -> None:
    """Every host-side step (start, stop, migration, attach/detach, host connect) is a service
    operation that picks the host; the simulator dials no agent, and the KVM table names the
    service operations that run each agent command."""
    text = DOC.read_text()
    _, agent = simulator_call_map()
    assert not agent, f"the simulator runs agent commands itself: {sorted(agent)}"
    kvm = text[text.index("KVM side"):text.index("## Not yet driven")]
    for op in ("hand_over_vm", "vm_stopped", "prepare_migration", "finish_migration", "connect_physical_disk",
               "disconnect_physical_disk", "host_connected"):
        assert f"`{op}`" in kvm, op


def test_every_service_operation_is_accounted_for() -> None:
    text = DOC.read_text()
    named = set(CODE.findall(text))
    missing = set(TABLE.by_name) - named
    assert not missing, f"service operations docs/adapter.md does not mention: {sorted(missing)}"
