"""Documentation that must not drift from the code."""

from __future__ import annotations

import re

from batchrock import settings
from tests.conftest import REPO_ROOT


def test_every_setting_is_documented_once() -> None:
    text = (REPO_ROOT / "docs" / "settings.md").read_text()
    documented = re.findall(r"^\| `?([a-z0-9_]+)`? \|", text, flags=re.MULTILINE)
    names = [f.name for f in settings.fields_table()]
    missing = [n for n in names if n not in documented]
    assert not missing, f"settings missing from docs/settings.md: {missing}"
    duplicated = {n for n in documented if documented.count(n) > 1}
    assert not duplicated, f"documented twice: {duplicated}"
    unknown = [n for n in documented if n not in names and n != "name"]
    assert not unknown, f"docs/settings.md documents settings that do not exist: {unknown}"


def test_readme_first_screen_has_the_two_commands_and_an_example() -> None:
    first_screen = "\n".join((REPO_ROOT / "README.md").read_text().splitlines()[:60])
    assert "make demo" in first_screen
    assert "make test" in first_screen
    assert "endpoint" in first_screen
