"""The layer rules of docs/DESIGN.md: imports only go down the tower."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "tribit"

# package (first path component under tribit/) -> tribit packages it may import
ALLOWED = {
    "errors": set(),
    "formats": {"errors", "formats", "quant"},
    "quant": {"errors", "quant"},
    "tokenizer": {"errors", "tokenizer", "formats"},
    "sampling": {"errors"},
    "model": {"errors", "formats", "quant", "model", "_core", "tokenizer", "data"},
    "generation": {"errors", "sampling", "tokenizer", "generation"},
    "chat": {"errors", "sampling", "tokenizer", "generation", "chat"},
    "protocol": {"errors"},
    "completion": {"errors", "sampling", "generation", "chat", "protocol", "completion"},
    "llm": {"errors", "model", "generation", "completion", "llm"},
    "cli": None,  # public API only: checked below
    "server": None,
    "integrations": None,  # public API and tribit.server.app only (optional extras: Ray)
    "convert": {"errors", "formats", "quant", "tokenizer", "convert", "data"},
    "bench": None,  # benchmarks may use anything, including _core
    "data": {"data"},
    "train": {"errors", "formats", "quant", "train", "tokenizer", "data", "convert"},
}
CORE_USERS = {"model", "bench"}  # who may import tribit._core


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside tribit
                parts = path.relative_to(PKG).parts
                base = parts[: len(parts) - node.level]
                mod = ".".join((*base, node.module)) if node.module else ".".join(base)
                if not mod:
                    # `from . import x` at the package root
                    found.update(a.name for a in node.names)
                    continue
                found.add(mod.split(".")[0])
            elif node.module and node.module.startswith("tribit"):
                rest = node.module.split(".")[1:]
                if rest:
                    found.add(rest[0])
                else:
                    found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("tribit."):
                    found.add(a.name.split(".")[1])
    return found


def test_core_only_imported_by_model():
    for path in PKG.rglob("*.py"):
        owner = path.relative_to(PKG).parts[0].removesuffix(".py")
        if "_core" in _imports(path):
            assert owner in CORE_USERS, f"{path} imports tribit._core"


def test_imports_go_down():
    for path in PKG.rglob("*.py"):
        owner = path.relative_to(PKG).parts[0].removesuffix(".py")
        allowed = ALLOWED.get(owner)
        if allowed is None:
            continue
        bad = _imports(path) - allowed - {"errors", "__version__"}
        assert not bad, f"{path} imports {sorted(bad)}"


def test_nothing_imports_train():
    for path in PKG.rglob("*.py"):
        owner = path.relative_to(PKG).parts[0]
        if owner in ("train", "cli"):
            continue
        assert "train" not in _imports(path), f"{path} imports tribit.train"
