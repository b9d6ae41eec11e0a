"""The project's promises about itself: CI runs the README's test command; the docs list every setting."""

from __future__ import annotations

import re
from pathlib import Path

from b24_mcp.bulk.filters import SYSTEM_YES_NO
from b24_mcp.settings import Settings

ROOT = Path(__file__).parent.parent


def quick_start_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_the_quick_start_has_exactly_two_commands() -> None:
    demo, tests = quick_start_commands()
    assert demo.endswith("b24-mcp demo")
    assert tests.endswith("pytest")


def test_ci_runs_the_readmes_test_command() -> None:
    _, tests = quick_start_commands()
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`B24_{name.upper()}`" in readme


def test_the_readme_names_every_system_yes_no_field_the_filter_sends_y_n_to() -> None:
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| one of the system's own yes/no fields"))
    assert set(re.findall(r"`(\w+)`", row.split("|")[1])) == SYSTEM_YES_NO
    assert "| a user field, `ufCrm…` or `UF_CRM_…` (type boolean) | `1` / `0`" in readme


def test_the_readme_never_promises_a_restore() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "from where it can be restored" not in readme
    assert "recycle bin (restorable)" not in readme
    assert "goes to the CRM recycle bin if the portal keeps one; it can be restored there, not through this server" in (
        " ".join(readme.split())
    )
