"""The MCP registry entry (`server.json`): valid against the registry's schema 2025-12-11, a PyPI package run with
`uvx`, its versions the package's, its secret marked, and the README carrying the name the registry verifies."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from b24_mcp.settings import Settings

ROOT = Path(__file__).parent.parent
SCHEMA = ROOT / "packaging" / "registry" / "server.schema.2025-12-11.json"


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def schema_problems(entry: Any) -> list[str]:
    """What the registry's schema says is wrong with `entry` (formats checked too), one line each."""
    validator = jsonschema.Draft7Validator(load(SCHEMA), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(entry)]


@pytest.fixture
def entry() -> Any:
    return load(ROOT / "server.json")


@pytest.fixture
def project() -> Any:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def the_package(entry: Any) -> Any:
    (package,) = entry["packages"]
    return package


def test_the_schema_copy_is_the_registrys_2025_12_11(entry: Any) -> None:
    assert load(SCHEMA)["$id"] == "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
    assert entry["$schema"] == load(SCHEMA)["$id"]


def test_server_json_is_valid_against_the_registrys_schema(entry: Any) -> None:
    assert schema_problems(entry) == []


def test_a_description_over_100_characters_is_refused(entry: Any) -> None:
    entry["description"] = "x" * 101
    assert schema_problems(entry) == [f"description: '{'x' * 101}' is too long"]


def test_a_package_without_a_transport_is_refused(entry: Any) -> None:
    del the_package(entry)["transport"]
    assert schema_problems(entry) == ["packages/0: 'transport' is a required property"]


def test_the_versions_are_the_packages(entry: Any, project: Any) -> None:
    assert entry["version"] == the_package(entry)["version"] == project["version"]


def test_it_is_the_pypi_package_run_with_uvx_over_stdio(entry: Any, project: Any) -> None:
    package = the_package(entry)
    assert package["registryType"] == "pypi"
    assert package["identifier"] == project["name"]
    assert package["runtimeHint"] == "uvx"
    assert package["transport"] == {"type": "stdio"}
    assert "packageArguments" not in package  # nothing secret, or otherwise, goes on the command line


def test_the_webhook_is_the_one_required_secret(entry: Any) -> None:
    variables = {variable["name"]: variable for variable in the_package(entry)["environmentVariables"]}
    assert variables["B24_WEBHOOK_URL"]["isSecret"] is True
    assert variables["B24_WEBHOOK_URL"]["isRequired"] is True
    assert [name for name, variable in variables.items() if variable.get("isSecret")] == ["B24_WEBHOOK_URL"]
    assert [name for name, variable in variables.items() if variable.get("isRequired")] == ["B24_WEBHOOK_URL"]


def test_every_variable_is_one_the_server_reads(entry: Any) -> None:
    for variable in the_package(entry)["environmentVariables"]:
        name = variable["name"]
        assert name.startswith("B24_")
        assert name.removeprefix("B24_").lower() in Settings.model_fields, name


def test_the_choices_and_defaults_are_values_the_server_accepts(entry: Any) -> None:
    for variable in the_package(entry)["environmentVariables"]:
        field = variable["name"].removeprefix("B24_").lower()
        for value in [*variable.get("choices", []), *([variable["default"]] if "default" in variable else [])]:
            Settings.model_validate({field: value}, strict=False)


def test_the_readme_carries_the_name_the_registry_verifies(entry: Any) -> None:
    assert f"mcp-name: {entry['name']}" in (ROOT / "README.md").read_text()


def test_the_name_is_in_the_namespace_of_the_repository(entry: Any, project: Any) -> None:
    owner = entry["repository"]["url"].removeprefix("https://github.com/").split("/")[0]
    assert entry["name"].startswith(f"io.github.{owner}/")
    assert project["urls"]["Homepage"] == entry["repository"]["url"]
