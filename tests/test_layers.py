"""Imports run one way: core <- stores <- pipeline and api <- cli, dev and watchers (docs/architecture.md).

Read from the source, so a lazy import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where each part of the installed namespace lives (pyproject's package-dir).
FOLDERS = {"infraprism": ROOT / "infraprism", "infraprism.pipeline": ROOT / "pipeline", "infraprism.api": ROOT / "api"}

# Each layer may import itself and the layers listed for it, nothing else of InfraPrism.
# `infraprism.errors` imports nothing and is the root of every error, so every layer may use it.
LAYERS = {
    "core": {"core"},
    "settings": set(),
    "stores": {"core", "settings"},
    "pipeline": {"core", "settings", "stores"},
    "api": {"core", "settings", "stores"},
    "tools": {"core", "settings", "stores", "pipeline", "api"},
}


def layer_of(module: str) -> str | None:
    """The layer of an InfraPrism module, None for infraprism.errors and the package itself."""
    parts = module.split(".")
    if parts[0] != "infraprism" or module in ("infraprism", "infraprism.errors"):
        return None
    second = parts[1]
    if second in ("core", "stores", "pipeline", "api", "settings"):
        return second
    if second in ("cli", "dev", "watchers"):
        return "tools"
    raise AssertionError(f"{module}: no layer; add it to LAYERS in tests/test_layers.py")


def product_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("")
            parts = [part for part in relative.parts if part != "__init__"]
            name = ".".join([package, *parts])
            if package == "infraprism" and parts[:1] in (["pipeline"], ["api"]):
                continue  # not a real folder of infraprism/
            modules[name] = path
    return modules


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from infraprism.stores import apikeys` imports the module infraprism.stores.apikeys.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = product_modules()


def test_every_part_of_the_namespace_is_found() -> None:
    for expected in ("infraprism.core.cell", "infraprism.pipeline.aggregator", "infraprism.api.app", "infraprism.cli"):
        assert expected in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module: str) -> None:
    own = layer_of(module)
    if own is None:
        assert not {name for name in imports_of(MODULES[module]) if name.startswith("infraprism.")} - {
            "infraprism.errors"
        }
        return
    allowed = LAYERS[own] | {own}
    wrong = sorted(
        name
        for name in imports_of(MODULES[module])
        if name.split(".")[0] == "infraprism" and name in MODULES and (layer_of(name) or own) not in allowed
    )
    assert not wrong, f"{module} ({own}) imports {wrong}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_generic_top_level_names(module: str) -> None:
    banned = {"pipeline", "api"}
    assert not {name for name in imports_of(MODULES[module]) if name.split(".")[0] in banned}


def test_the_check_refuses_a_backward_import() -> None:
    # What the parametrized check would say of the core importing the API.
    assert layer_of("infraprism.api.routes") not in LAYERS["core"]
    assert layer_of("infraprism.pipeline.store") not in LAYERS["api"]
    assert layer_of("infraprism.dev.devstack") not in LAYERS["pipeline"]
