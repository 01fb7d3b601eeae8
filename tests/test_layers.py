"""The layer rules of the package, checked from the source (no import runs).

Lower layers never import higher ones, so that a reader can trust the folder tree:
the core (_version, _extras, errors, hashes, refs, retry, limits, transport, urls, directio)
imports no folder; ``pack`` knows nothing of transports; ``protocol`` and ``transports`` know
nothing of sync, servers or the command line; ``server`` and ``sync`` never import each
other; only ``cli`` sees everything. Lazy imports inside functions count too: a lazy
import is still a dependency. ``import mkit_transport`` (the facade, which re-exports
sync) is allowed only where everything is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mkit_transport"

CORE = {
    "_version",
    "_extras",
    "errors",
    "hashes",
    "refs",
    "retry",
    "limits",
    "transport",
    "urls",
    "directio",
}
#: layer -> the layers (or core modules) its modules may import.
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "pack": {"errors", "hashes", "limits", "directio", "pack"},
    "protocol": {"core", "protocol"},
    "transports": {"core", "protocol", "transports"},
    "server": {"core", "protocol", "transports", "server"},
    "sync": {"core", "pack", "sync"},
    "cli": {"core", "pack", "protocol", "transports", "server", "sync", "cli", "facade"},
    "conformance": {"core", "transports", "conformance", "facade"},
}


def _layer_of(module: str) -> str:
    """The layer of a dotted module name under mkit_transport (or the conformance suite)."""
    parts = module.split(".")
    if parts[0] == "conformance" or parts[1:2] == ["conformance"]:
        return "conformance"
    if len(parts) == 1 or parts[1] == "__main__":
        return "facade"  # the package's face and entry point re-export every layer
    if parts[1] in CORE:
        return "core"
    return parts[1]


def _grants(allowed: set[str], module: str) -> bool:
    layer = _layer_of(module)
    if layer in allowed:
        return True
    return layer == "core" and module.split(".")[1] in allowed


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        found.append((name, path))
    for path in sorted((ROOT / "conformance").glob("*.py")):
        name = "mkit_transport.conformance." + path.stem
        found.append((name.removesuffix(".__init__"), path))
    return found


def _imports(name: str, path: Path) -> list[tuple[int, str]]:
    """Every mkit_transport module ``path`` imports, resolved to an absolute name."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:  # from . import x: each x is a module or a name
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, mod) for line, mod in found if mod.split(".")[0] == "mkit_transport"]


def test_every_module_has_a_layer() -> None:
    for name, path in _modules():
        layer = _layer_of(name)
        assert layer in ALLOWED or layer == "facade", (
            f"{path}: {name} is in no layer; add it to tests/test_layers.py"
        )


@pytest.mark.parametrize(("name", "path"), _modules(), ids=[n for n, _ in _modules()])
def test_no_module_imports_a_higher_layer(name: str, path: Path) -> None:
    layer = _layer_of(name)
    if layer == "facade":
        return
    allowed = ALLOWED[layer]
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {target} ({_layer_of(target)})"
        for line, target in _imports(name, path)
        if not _grants(allowed, target)
    ]
    assert not bad, f"{layer} may import only {sorted(allowed)}:\n" + "\n".join(bad)


def test_the_check_catches_a_violation(tmp_path: Path) -> None:
    # The rule is only worth something if it can fail: a pack module importing the
    # Transport base, and a transport importing sync, are both refused.
    pack = tmp_path / "pack_mod.py"
    pack.write_text("from ..transport import Transport\nfrom ..limits import PACK_BODY_LIMIT\n")
    targets = [t for _, t in _imports("mkit_transport.pack.pack_mod", pack)]
    assert targets == ["mkit_transport.transport", "mkit_transport.limits"]
    assert not _grants(ALLOWED["pack"], targets[0])
    assert _grants(ALLOWED["pack"], targets[1])
    lazy = tmp_path / "t.py"
    lazy.write_text("def f():\n    from ..sync import push\n")
    (target,) = [t for _, t in _imports("mkit_transport.transports.t", lazy)]
    assert not _grants(ALLOWED["transports"], target)


#: Dev trees outside the package: tests and bench share ``testbed`` (servers, waits, the
#: crash loop) and never import each other; testbed imports neither.
DEV_FORBIDDEN = {"tests": {"bench"}, "bench": {"tests"}, "testbed": {"tests", "bench"}}


def _top_level_imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("tree", sorted(DEV_FORBIDDEN))
def test_tests_and_bench_never_import_each_other(tree: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {top}"
        for path in sorted((ROOT / tree).rglob("*.py"))
        for line, top in _top_level_imports(path)
        if top in DEV_FORBIDDEN[tree]
    ]
    assert not bad, f"{tree}/ may not import {sorted(DEV_FORBIDDEN[tree])}:\n" + "\n".join(bad)


def test_the_dev_tree_check_catches_a_violation(tmp_path: Path) -> None:
    script = tmp_path / "bench_x.py"
    script.write_text("def f():\n    from tests.support.http_fixtures import HttpServer\n")
    assert _top_level_imports(script) == [(2, "tests")]
