"""The import table of docs/ARCHITECTURE.md §1, enforced: every module's imports (read with ast, so an import inside a
function counts too) point down the layers models <- attacks <- population <- cluster <- popvae, the lower layers keep
out of Ray and HTTP, and every module on the doc's cheap-imports list imports neither torch nor Ray at module level,
nor through anything it imports (checked in a fresh interpreter)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
LAYERS = ("models", "attacks", "population", "cluster", "popvae")  # lowest first; folder = layer
NEVER = {  # top-level packages a layer must not import, as the table's "never" column says
    "models": ("ray", "fastapi", "uvicorn", "starlette", "httpx"),
    "attacks": ("ray", "fastapi", "uvicorn", "starlette", "httpx"),
    "population": ("fastapi", "uvicorn", "starlette", "httpx"),
}
HEAVY = ("torch", "ray")

# Known breaks of the rule, each owned elsewhere; strict, so that once the import is fixed the XPASS fails and the
# entry goes (with the sentence naming it in docs/ARCHITECTURE.md §1 and the README's Layout).
KNOWN: dict[str, str] = {}


def layer_of(module: str) -> str | None:
    """The layer of an absolute module name under popvae (None outside popvae)."""
    parts = module.split(".")
    if parts[0] != "popvae":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS[:-1] else "popvae"


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute name) for every import in `source` (`from popvae import api` yields popvae.api, `from x import
    y` yields x.y); relative imports are resolved against `package`, the importing module's package."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def violations(path: Path, layer: str) -> list[str]:
    """Why `path` (a module of `layer`) breaks the import table; empty when it keeps it."""
    package = "popvae" if layer == "popvae" else f"popvae.{layer}"
    out = []
    for line, module in imported_modules(path.read_text(), package):
        top = module.split(".")[0]
        target = layer_of(module)
        if top in LAYERS[:-1]:
            out.append(f"line {line}: imports {module}: the layers install under popvae (popvae.{module})")
        elif target is not None and LAYERS.index(target) > LAYERS.index(layer):
            out.append(f"line {line}: imports {module}, from {target}/, a layer above {layer}/")
        elif top in NEVER.get(layer, ()):
            out.append(f"line {line}: imports {module}: {layer}/ never imports {top}")
    return sorted(set(out))


def modules() -> list[tuple[str, str]]:
    return [(layer, str(p.relative_to(ROOT))) for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))]


def cheap_modules() -> list[str]:
    """The files the "Cheap imports" paragraph of docs/ARCHITECTURE.md lists (up to its end, or to the benchmark it
    names after the list, whichever comes first)."""
    text = ARCHITECTURE.read_text()
    paragraph = text[text.index("**Cheap imports.**"):].split("\n\n", 1)[0].split("`benchmarks/", 1)[0]
    layers = "|".join(LAYERS)
    return re.findall(rf"`((?:{layers})/\w+\.py)`", paragraph)


def dotted(rel: str) -> str:
    folder, name = rel[: -len(".py")].split("/")
    return "popvae" if (folder, name) == ("popvae", "__init__") else \
        f"popvae.{name}" if folder == "popvae" else f"popvae.{folder}.{name}"


@pytest.mark.parametrize(("layer", "rel"), [
    pytest.param(layer, rel, marks=pytest.mark.xfail(reason=KNOWN[rel], strict=True)) if rel in KNOWN else (layer, rel)
    for layer, rel in modules()
])
def test_every_import_points_down_the_layer_table(layer, rel):
    assert violations(ROOT / rel, layer) == []


def test_the_table_lists_the_layers_in_the_order_the_test_enforces():
    rows = re.findall(r"^\| `(\w+)/` \| `popvae[\w.]*` \|", ARCHITECTURE.read_text(), flags=re.M)
    assert tuple(rows) == LAYERS


def test_the_checker_catches_an_upward_import_a_bare_layer_name_and_a_forbidden_package(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import ray\nfrom popvae.population.driver import train_run\n\n\ndef f():\n    import models.gsvae\n"
                   "    from ..cluster import service\n")
    found = violations(bad, "attacks")
    assert len(found) == 4, found
    assert any("line 2" in v and "population/" in v for v in found)
    assert any("line 6" in v and "install under popvae" in v for v in found)
    assert any("line 7" in v and "popvae.cluster.service" in v for v in found)
    assert any("line 1" in v and "never imports ray" in v for v in found)
    good = tmp_path / "good.py"
    good.write_text("import torch\nfrom popvae.models.gsvae import GSVAE\nfrom . import pgd\n")
    assert violations(good, "attacks") == []


def test_the_cheap_list_names_existing_modules():
    listed = cheap_modules()
    assert len(listed) >= 10 and all((ROOT / rel).is_file() for rel in listed), listed


def module_level_heavy_imports(path: Path) -> list[str]:
    """Imports of torch or ray that run when the module is imported: at top level or in a class body, outside
    `if TYPE_CHECKING:` blocks and function bodies."""
    found = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found.extend(f"line {node.lineno}: {n}" for n in names if n.split(".")[0] in HEAVY)
            for field in ("body", "orelse", "finalbody"):
                visit(getattr(node, field, []))
            for handler in getattr(node, "handlers", []):
                visit(handler.body)

    visit(ast.parse(path.read_text()).body)
    return found


@pytest.mark.parametrize("rel", cheap_modules())
def test_a_cheap_module_imports_neither_torch_nor_ray_at_module_level(rel):
    assert module_level_heavy_imports(ROOT / rel) == []


def test_the_module_level_check_sees_through_try_and_class_but_not_functions_or_type_checking(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
                    "try:\n    import ray\nexcept ImportError:\n    pass\n"
                    "class A:\n    import torch.nn\n\n\ndef f():\n    import torch\n")
    assert module_level_heavy_imports(path) == ["line 5: ray", "line 9: torch.nn"]


def test_cheap_modules_pull_in_neither_torch_nor_ray_transitively():
    """The cheap modules imported one after another in one fresh interpreter, the heavy modules present checked after
    each: the first module that pulls one in is named (a module imported later could hide behind it, but the test
    fails either way)."""
    probe = ("import importlib, json, sys\nseen = {}\nfor mod in sys.argv[1:]:\n    importlib.import_module(mod)\n"
             f"    seen[mod] = sorted(m for m in {HEAVY!r} if m in sys.modules)\nprint(json.dumps(seen))")
    modules = [dotted(rel) for rel in cheap_modules()]
    done = subprocess.run([sys.executable, "-c", probe, *modules], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(seen) == modules and {mod: heavy for mod, heavy in seen.items() if heavy} == {}
