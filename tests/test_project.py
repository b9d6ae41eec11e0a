"""The project's promises about itself: CI runs the README's test command; the docs list every setting."""

from __future__ import annotations

import re
from pathlib import Path

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
