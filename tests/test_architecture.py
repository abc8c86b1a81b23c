"""The folders' import rules, as their docstrings state them: data flows one way
(data → kernels → models → collectives → optimizers), strategies drive it, run-time services
and checkpoints stay apart. A module that breaks a rule fails here, naming the import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package → the mpitrain packages (first two name parts) its modules may import, besides
# itself; "mpi4py" listed where MPI is allowed.
ALLOWED: dict[str, set[str]] = {
    "mpitrain.kernels": set(),
    "mpitrain.data": {"mpitrain.errors", "mpitrain.exact", "mpi4py"},
    "mpitrain.models": {"mpitrain.kernels"},
    "mpitrain.optimizers": {"mpitrain.kernels"},
    "mpitrain.collectives": {"mpitrain.kernels", "mpitrain.runtime", "mpitrain.errors",
                             "mpi4py"},
    "mpitrain.federated": {"mpitrain.data", "mpitrain.models", "mpitrain.kernels",
                           "mpitrain.collectives", "mpitrain.evaluation", "mpitrain.errors",
                           "mpi4py"},
    "mpitrain.asynchronous": {"mpitrain.data", "mpitrain.models", "mpitrain.kernels",
                              "mpitrain.collectives", "mpitrain.optimizers",
                              "mpitrain.errors", "mpi4py"},
    "mpitrain.strategies": {"mpitrain.data", "mpitrain.models", "mpitrain.kernels",
                            "mpitrain.collectives", "mpitrain.optimizers",
                            "mpitrain.federated", "mpitrain.asynchronous",
                            "mpitrain.evaluation", "mpitrain.config", "mpitrain.errors",
                            "mpitrain.trees", "mpitrain.clustering", "mpitrain.exact",
                            "mpi4py"},
    "mpitrain.trees": {"mpitrain.data", "mpitrain.kernels", "mpitrain.collectives",
                       "mpitrain.exact",
                       "mpitrain.errors", "mpi4py"},
    "mpitrain.clustering": {"mpitrain.data", "mpitrain.kernels", "mpitrain.collectives",
                            "mpitrain.exact",
                            "mpitrain.errors", "mpi4py"},
    "mpitrain.runtime": {"mpitrain.errors", "mpitrain.kernels", "mpi4py"},
    "mpitrain.checkpoint.store": set(),
    "mpitrain.checkpoint.sharded": set(),
    "mpitrain.report": {"mpitrain.config", "mpitrain.data", "mpitrain.models",
                        "mpitrain.runtime", "mpitrain.training", "mpitrain.errors",
                        "mpi4py"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "kernels":
        parts = ["mpitrain", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """mpitrain packages (first two name parts) and mpi4py imported by ``path``."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.append(".".join([*base, *([node.module] if node.module else [])]))
            else:
                names.append(node.module or "")
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    found = set()
    for name in names:
        if name.startswith("mpitrain"):
            found.add(".".join(name.split(".")[:2]))
        elif name.split(".")[0] == "mpi4py":
            found.add("mpi4py")
    return found


def _sources() -> list[Path]:
    return sorted([*ROOT.glob("mpitrain/**/*.py"), *ROOT.glob("kernels/*.py")])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_docstring_allows(package):
    checked = 0
    for path in _sources():
        module = _module_name(path)
        if module != package and not module.startswith(package + "."):
            continue
        checked += 1
        own = ".".join(package.split(".")[:2])
        bad = sorted(_imports(path) - ALLOWED[package] - {own})
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    assert checked, f"no module of {package} found"


def test_only_the_front_ends_reach_the_cli_and_the_benchmarks():
    """The CLI and its bench subcommands sit on top: nothing of the pipeline imports them."""
    front = ("mpitrain.__main__", "mpitrain.cli", "mpitrain.bench")
    for path in _sources():
        module = _module_name(path)
        if not module.startswith((*front, "mpitrain.report")):
            assert "mpitrain.report" not in _imports(path), path
    for path in _sources():
        module = _module_name(path)
        if not module.startswith(front):
            assert not _imports(path) & {"mpitrain.cli", "mpitrain.bench"}, path


def test_every_folder_says_what_it_holds_and_may_import():
    for init in sorted([*ROOT.glob("mpitrain/*/__init__.py"), ROOT / "kernels/__init__.py"]):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert len(doc.split()) >= 25, f"{init.relative_to(ROOT)}: no paragraph docstring"
        assert "import" in doc, f"{init.relative_to(ROOT)}: does not say what it may import"
