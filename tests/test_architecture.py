"""Data flows one way (DESIGN.md): each package imports only from packages to its left."""

import ast
from pathlib import Path

ORDER = ["data", "models", "training", "generation", "evaluation", "segmentation", "turing"]
ROOT = Path(__file__).resolve().parents[1] / "src" / "ratgan"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ratgan."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ratgan."):
                    found.add(alias.name.split(".")[1])
    return found


def test_packages_import_only_from_their_left():
    later_stages = set(ORDER[4:])  # evaluation, segmentation, turing are siblings
    for i, pkg in enumerate(ORDER):
        allowed = set(ORDER[:i + 1])
        if pkg in later_stages:
            allowed = set(ORDER[:4]) | {pkg}
        for path in (ROOT / pkg).rglob("*.py"):
            bad = {m for m in _imports(path) if m in ORDER and m not in allowed}
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
