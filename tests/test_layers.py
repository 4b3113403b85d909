"""The layer rules of docs/DESIGN.md: imports only go down the tower; `cli` and `server` use
only the public API; only `model` imports the native core; nothing imports `train`."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "tribit"

# package or module (first path component under tribit/) -> tribit packages it may import.
# Entries for modules that do not exist (yet, or any more) are harmless.
ALLOWED = {
    "errors": set(),
    "formats": {"errors", "formats", "quant"},
    "quant": {"errors", "quant"},
    "tokenizer": {"errors", "tokenizer", "formats"},
    "sampling": {"errors"},
    "model": {"errors", "formats", "quant", "model", "_core", "tokenizer", "data"},
    "generation": {"errors", "sampling", "tokenizer", "generation"},
    "chat": {"errors", "formats", "sampling", "tokenizer", "generation", "chat"},
    "protocol": {"errors", "protocol"},
    "completion": {"errors", "sampling", "generation", "chat", "protocol", "completion"},
    "embedding": {"errors", "formats", "embedding"},
    "llm": {"errors", "model", "generation", "completion", "embedding", "llm"},
    "integrations": None,  # public API and tribit.server.app only (optional extras: Ray)
    "convert": {"errors", "formats", "quant", "tokenizer", "convert", "data"},
    "bench": {"errors", "formats", "quant", "model", "convert", "bench"},
    "data": {"data"},
    "train": {"errors", "formats", "quant", "train", "tokenizer", "data", "convert"},
    # cli and server: the public API only (PUBLIC below), checked name by name
    "cli": None,
    "server": None,
}
CORE_USERS = {"model"}  # who may import tribit._core

# The public API that `cli` and `server` may use: these modules (and their public
# submodules), only names without a leading underscore, and the package's own modules.
PUBLIC = {
    "errors",
    "generation",
    "chat",
    "protocol",
    "sampling",
    "tokenizer",
    "formats",
    "convert",
    "quant",
    "bench",
    "data",
    "llm",
    "embedding",
}
PUBLIC_FOR = {
    "cli": PUBLIC | {"train", "server"},  # `tribit train`; `tribit serve` starts the server
    "server": PUBLIC,
    "integrations": PUBLIC | {"server"},  # a replica serves `tribit serve`'s app
}
# Known breaches of the public-API rule as (file under tribit/, module imported).
KNOWN_OFFENDERS: set[tuple[str, str]] = set()


def _absolute(node: ast.ImportFrom, parts: tuple[str, ...]) -> str:
    """The module an ImportFrom names, absolute ('tribit.x.y'); '' if outside tribit.
    `parts`: the importing file's path under tribit/."""
    if node.level:  # relative import inside tribit
        base = ("tribit", *parts[: len(parts) - node.level])
        return ".".join((*base, node.module) if node.module else base)
    return node.module if node.module and node.module.split(".")[0] == "tribit" else ""


def _imported(tree: ast.AST, parts: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(module, name) of every tribit import: name None for `import tribit.x`."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = _absolute(node, parts)
            if mod:
                out += [(mod, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.split(".")[0] == "tribit"]
    return out


def _imports(path: Path) -> set[str]:
    """The tribit packages a file imports (first component under tribit/; for
    `from tribit import x`, x)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for mod, name in _imported(tree, path.relative_to(PKG).parts):
        rest = mod.split(".")[1:]
        if rest:
            found.add(rest[0])
        elif name is not None:
            found.add(name)
    return found


def public_api_violations(source: str, parts: tuple[str, ...], public: set[str]) -> list[str]:
    """The tribit modules that a file (`source` at tribit/<parts>) imports outside the public
    API: a module outside `public` and the file's own package, or with a path component
    or an imported name that has a leading underscore (dunders such as __version__ are
    public; the own package's private names are its own business)."""
    own = parts[0].removesuffix(".py")
    bad = []
    for mod, name in _imported(ast.parse(source), parts):
        comps = mod.split(".")[1:]
        private_name = name is not None and name.startswith("_") and not name.startswith("__")
        if not comps:  # from tribit import name: a top-level name or a module
            if private_name or (name is not None and name not in public and _is_module(name)):
                bad.append(f"{mod}.{name}")
        elif comps[0] == own:
            continue
        elif comps[0] not in public or any(c.startswith("_") for c in comps) or private_name:
            bad.append(mod)
    return sorted(set(bad))


def _is_module(name: str) -> bool:
    return (PKG / name).is_dir() or (PKG / f"{name}.py").is_file()


def _packages():
    for path in PKG.rglob("*.py"):
        yield path, path.relative_to(PKG).parts[0].removesuffix(".py")


def test_core_only_imported_by_model():
    for path, owner in _packages():
        if "_core" in _imports(path):
            assert owner in CORE_USERS, f"{path} imports tribit._core"


def test_imports_go_down():
    for path, owner in _packages():
        allowed = ALLOWED.get(owner)
        if allowed is None:
            continue
        bad = _imports(path) - allowed - {"errors", "__version__"}
        assert not bad, f"{path} imports {sorted(bad)}"


def test_every_package_has_a_rule():
    top = {owner for _, owner in _packages()} - {"__init__", "__main__"}
    assert top <= set(ALLOWED), f"no layer rule for {sorted(top - set(ALLOWED))}"


def test_cli_and_server_use_only_the_public_api():
    found = set()
    for owner, public in PUBLIC_FOR.items():
        for path in (PKG / owner).rglob("*.py"):
            rel = path.relative_to(PKG)
            found |= {
                (rel.as_posix(), m)
                for m in public_api_violations(path.read_text(), rel.parts, public)
            }
    new = found - KNOWN_OFFENDERS
    assert not new, f"cli/server import outside the public API: {sorted(new)}"


def test_known_offenders_still_offend():
    """An entry fixed by a later change must leave KNOWN_OFFENDERS (the set only shrinks)."""
    for rel, mod in KNOWN_OFFENDERS:
        path = PKG / rel
        if not path.is_file():
            continue
        mods = {m for m, _ in _imported(ast.parse(path.read_text()), Path(rel).parts)}
        assert mod in mods, f"{rel} no longer imports {mod}: remove it from KNOWN_OFFENDERS"


def test_public_api_checker_catches_violations():
    """The checker on synthetic sources: it must flag what the rule forbids."""
    at = ("cli", "x.py")

    def check(src: str) -> list[str]:
        return public_api_violations(src, at, PUBLIC_FOR["cli"])

    assert check("from tribit.model import load\n") == ["tribit.model"]
    assert check("import tribit._core\n") == ["tribit._core"]
    assert check("from tribit import _core\n") == ["tribit._core"]
    assert check("from tribit.tokenizer import _private\n") == ["tribit.tokenizer"]
    assert check("from tribit import model\n") == ["tribit.model"]
    assert check("from tribit.tokenizer._impl import x\n") == ["tribit.tokenizer._impl"]
    assert check("def f():\n    from ..model.model import MAX_SEQ\n") == ["tribit.model.model"]
    assert check("from tribit.generate import generate\n") == ["tribit.generate"]
    assert public_api_violations(
        "from tribit.train import x\n", ("server", "a.py"), PUBLIC_FOR["server"]
    ) == ["tribit.train"]
    # allowed: public modules and names, the top-level package, the package's own modules
    assert (
        check(
            "import tribit\nfrom tribit import load, __version__\nfrom tribit.errors import "
            "TribitError\nfrom tribit.tokenizer.chat import encode_chat\n"
            "from tribit.cli.convert import _setup_logging\nfrom . import util\n"
        )
        == []
    )


def test_nothing_imports_train():
    for path, owner in _packages():
        if owner in ("train", "cli"):
            continue
        assert "train" not in _imports(path), f"{path} imports tribit.train"
