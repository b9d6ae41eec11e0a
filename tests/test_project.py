"""The project's promises about itself: CI runs the README's test command; the docs list every setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from b24_mcp.bulk.filters import SYSTEM_YES_NO
from b24_mcp.sandbox.seed import seeded_portal
from b24_mcp.settings import Settings

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]


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


def test_the_configuration_page_documents_every_setting() -> None:
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"`B24_{name.upper()}`" in configuration


def test_the_tool_reference_names_every_system_yes_no_field_the_filter_sends_y_n_to() -> None:
    tools = (ROOT / "docs" / "tools.md").read_text()
    row = next(line for line in tools.splitlines() if line.startswith("| one of the system's own yes/no fields"))
    assert set(re.findall(r"`(\w+)`", row.split("|")[1])) == SYSTEM_YES_NO
    assert "| a user field, `ufCrm…` or `UF_CRM_…` (type boolean) | `1` / `0`" in tools


def test_no_page_of_the_docs_promises_a_restore() -> None:
    for page in DOCS:
        text = page.read_text()
        assert "from where it can be restored" not in text, page
        assert "recycle bin (restorable)" not in text, page
    joined = " ".join((ROOT / "README.md").read_text().split())
    assert (
        "goes to the CRM recycle bin if the portal keeps one; it can be restored there, not through this server"
        in joined
    )


def test_the_readme_is_a_first_hour_read_of_at_most_200_lines() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("page", DOCS, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_of_the_docs_leads_to_a_file_and_heading_that_exist(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), (page.name, target)
        if anchor and linked.suffix == ".md":
            assert anchor in {slug(heading) for heading in headings(linked)}, (page.name, target)


def headings(page: Path) -> list[str]:
    """The markdown headings of `page`, outside code fences."""
    found, fenced = [], False
    for line in page.read_text().splitlines():
        fenced ^= line.startswith("```")
        if not fenced and (match := re.match(r"#+ (.*)", line)):
            found.append(match.group(1))
    return found


def slug(heading: str) -> str:
    """The anchor a markdown renderer (GitHub's) gives `heading`."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_the_readme_lists_the_ids_the_sandbox_is_seeded_with() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The sandbox in your client", 1)[1].split("\n## ", 1)[0]
    listed = {}
    for row in re.findall(r"^\| (\d+) \| [^|]+ \| ([\d\u2013]+)", section, re.MULTILINE):
        first, _, last = row[1].partition("\u2013")  # an en dash, as the table writes a range
        listed[int(row[0])] = list(range(int(first), int(last or first) + 1))
    assert listed == {type_id: sorted(items) for type_id, items in seeded_portal().items.items()}
