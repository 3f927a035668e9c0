"""The README and docs/configuration.md document every setting, with its real default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infraprism.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", ROOT / "docs" / "configuration.md"]


def documented_defaults(path: Path) -> dict[str, str]:
    """env name -> the default column of its table row."""
    rows = re.findall(r"^\| `(INFRAPRISM_[A-Z0-9_]+)` \| ([^|]+) \|", path.read_text(), flags=re.M)
    return {name: default.strip() for name, default in rows}


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_every_setting_is_documented_with_its_default(path):
    documented = documented_defaults(path)
    for name, field in Settings.model_fields.items():
        env = f"INFRAPRISM_{name.upper()}"
        assert env in documented, f"{env} is missing from {path.name}'s configuration table"
        default = field.default
        if hasattr(default, "get_secret_value"):
            default = default.get_secret_value()
        if default is None:
            assert documented[env].startswith("unset"), f"{env}: {path.name} says {documented[env]}"
        else:
            assert documented[env] == f"`{default}`", f"{env}: {path.name} says {documented[env]}"
    stale = set(documented) - {f"INFRAPRISM_{name.upper()}" for name in Settings.model_fields}
    assert not stale, f"{path.name} documents settings that do not exist: {sorted(stale)}"


def test_the_readme_puts_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block
    assert "make test" in first_block


def test_every_make_target_the_readme_names_exists():
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"`make (\w+)`", (ROOT / "README.md").read_text())):
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"make {target} is in the README, not the Makefile"
