"""Data flows one way (docs/architecture.md): each package imports only from packages to its
left and from the shared bottom-level modules, which import no package at all."""

import ast
import sys
from pathlib import Path

ORDER = ["data", "models", "training", "generation", "evaluation", "segmentation", "turing"]
BASE = {
    # module: the ratgan modules it may import
    "errors": set(),
    "atomic": set(),
    "arrays": set(),
    "digests": set(),
    "config": {"errors", "atomic"},
    "devices": {"errors"},
    "folder_lock": {"errors"},
    "seeds": set(),
    "runs": {"config", "errors", "atomic"},
    "viz": {"atomic", "arrays"},
}
"""Bottom-level modules every package may import."""
BASE_THIRD_PARTY = {"torch", "yaml", "numpy", "matplotlib"}
ROOT = Path(__file__).resolve().parents[1] / "src" / "ratgan"


def _ratgan_imports(path: Path) -> set[str]:
    """The ratgan modules or packages (first name after ``ratgan.``) that ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ratgan."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ratgan."):
                    found.add(alias.name.split(".")[1])
    return found


def _other_imports(path: Path) -> set[str]:
    """Top-level names of the non-ratgan modules that ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found - {"ratgan", "__future__"}


def test_packages_import_only_from_their_left_and_the_base_modules():
    later_stages = set(ORDER[4:])  # evaluation, segmentation, turing are siblings
    for i, pkg in enumerate(ORDER):
        allowed = set(ORDER[: i + 1])
        if pkg in later_stages:
            allowed = set(ORDER[:4]) | {pkg}
        for path in (ROOT / pkg).rglob("*.py"):
            bad = _ratgan_imports(path) - allowed - set(BASE)
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_base_modules_import_no_package():
    for name, allowed in BASE.items():
        path = ROOT / f"{name}.py"
        bad = _ratgan_imports(path) - allowed
        assert not bad, f"{name}.py imports {sorted(bad)}"
        foreign = _other_imports(path) - set(sys.stdlib_module_names) - BASE_THIRD_PARTY
        assert not foreign, f"{name}.py imports {sorted(foreign)}"


def test_the_training_loop_is_imported_only_by_training_and_the_front_ends():
    users = {
        path.relative_to(ROOT).as_posix()
        for path in ROOT.rglob("*.py")
        if any(
            isinstance(n, ast.ImportFrom) and n.module == "ratgan.training.run"
            for n in ast.walk(ast.parse(path.read_text()))
        )
    }
    assert {u for u in users if not u.startswith(("training/", "cli/"))} <= {"demo.py"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_itself_through_others():
    """No import circle between modules, counting every import: at the top, inside
    functions and under ``TYPE_CHECKING`` (shared types live in a module below their users)."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ratgan"):
                for alias in node.names:  # ``from ratgan.pkg import module`` names the module
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("ratgan"))
        graph[name] = targets & set(modules)

    def circle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    circles = [c for m in sorted(graph) if (c := circle_from(m)) is not None]
    assert not circles, "import circle: " + " -> ".join(circles[0])
