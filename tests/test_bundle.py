"""The Claude Desktop bundle (`packaging/build_mcpb.py` → `b24-mcp.mcpb`): what it holds, its manifest checked the
way the host reads it, and the server started from the unpacked bundle as the host starts it.

The checks that need the pinned `@anthropic-ai/mcpb` (validate, pack, the host's launch command) need Node.js and
npm; without them they skip and say why, and under `CI=true` they fail instead. Starting the bundle runs `uv run`,
which installs the runtime dependencies from the package index (into uv's cache: the second time is quick).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

import build_mcpb
from b24_mcp.settings import Settings
from helpers import run_b24

ROOT = Path(__file__).parent.parent
RESOLVE = ROOT / "packaging" / "mcp_config.mjs"
WEBHOOK = "https://acme.bitrix24.com/rest/1/zq81hf0secretcode/"
# This machine reaches the package index through a proxy whose certificate authority is in the system's store, not
# in uv's own; on a person's desktop, trusting the system's store too changes nothing.
SYSTEM_CERTS = {"UV_SYSTEM_CERTS": "1"}


@pytest.fixture(scope="module")
def mcpb_package() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Node.js and npm are needed for the bundle's checks (the mcpb CLI and library)")
        pytest.skip("Node.js and npm are needed for the bundle's checks (the mcpb CLI and library)")
    return build_mcpb.mcpb_package()


@pytest.fixture(scope="module")
def bundle(mcpb_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle, built as the README says (`python packaging/build_mcpb.py`), from another folder."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "build_mcpb.py"), "--output", str(out / "b24-mcp.mcpb")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=out,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(str(out / "b24-mcp.mcpb"))
    return out / "b24-mcp.mcpb"


@pytest.fixture(scope="module")
def unpacked(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("extension") / "b24-mcp"
    zipfile.ZipFile(bundle).extractall(folder)
    return folder


@pytest.fixture
def manifest() -> dict[str, Any]:
    return build_mcpb.load_manifest()


def host_launch(mcpb_package: Path, bundle_folder: Path, user_config: dict[str, Any]) -> Any:
    """The launch command Claude Desktop would use, from the mcpb library's `getMcpConfigForManifest`."""
    done = subprocess.run(
        ["node", str(RESOLVE), str(mcpb_package), str(bundle_folder), json.dumps(user_config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def optional_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    return {name: field for name, field in manifest["user_config"].items() if not field.get("required")}


# The manifest itself: no Node.js needed.


def test_the_manifests_version_is_the_packages(manifest: dict[str, Any]) -> None:
    assert manifest["version"] == build_mcpb.load_project()["version"]
    assert build_mcpb.manifest_problems(manifest, build_mcpb.load_project()) == []


def test_it_is_a_uv_bundle_of_manifest_0_4(manifest: dict[str, Any]) -> None:
    assert manifest["manifest_version"] == "0.4"
    assert manifest["server"]["type"] == "uv"
    assert manifest["server"]["mcp_config"]["command"] == "uv"


def test_every_b24_name_in_the_manifest_is_a_setting_the_server_reads(manifest: dict[str, Any]) -> None:
    names = list(manifest["server"]["mcp_config"]["env"])
    assert names
    for name in names:
        assert name.startswith("B24_")
        assert name.removeprefix("B24_").lower() in Settings.model_fields, name


def test_the_webhook_is_sensitive_required_and_passed_only_through_env(manifest: dict[str, Any]) -> None:
    field = manifest["user_config"]["webhook_url"]
    assert field["sensitive"] is True
    assert field["required"] is True
    config = manifest["server"]["mcp_config"]
    assert config["env"]["B24_WEBHOOK_URL"] == "${user_config.webhook_url}"
    assert "webhook_url" not in json.dumps([config["command"], config["args"]])
    assert [name for name, field in manifest["user_config"].items() if field.get("sensitive")] == ["webhook_url"]


def test_each_optional_field_has_a_default_the_server_accepts(manifest: dict[str, Any]) -> None:
    env = manifest["server"]["mcp_config"]["env"]
    for name, field in optional_fields(manifest).items():
        default = field["default"]
        text = ("true" if default else "false") if isinstance(default, bool) else str(default)  # as the host does
        (variable,) = [key for key, value in env.items() if value == f"${{user_config.{name}}}"]
        Settings.model_validate({variable.removeprefix("B24_").lower(): text} if text else {})


def test_the_confirmation_stays_on_by_default(manifest: dict[str, Any]) -> None:
    assert manifest["user_config"]["confirm"]["default"] == "auto"
    assert manifest["user_config"]["read_only"]["default"] is False


def test_a_manifest_without_a_default_for_an_optional_field_fails(manifest: dict[str, Any]) -> None:
    del manifest["user_config"]["read_only"]["default"]
    assert build_mcpb.manifest_problems(manifest, build_mcpb.load_project()) == [
        "user_config.read_only is optional without a default: the host would pass the literal text "
        "${user_config.read_only} and the server would refuse to start"
    ]


def test_a_secret_on_the_command_line_fails(manifest: dict[str, Any]) -> None:
    manifest["server"]["mcp_config"]["args"].append("--webhook=${user_config.webhook_url}")
    assert build_mcpb.manifest_problems(manifest, build_mcpb.load_project()) == [
        "user_config.webhook_url is sensitive but goes on the command line; pass it through env"
    ]


def test_a_field_declared_but_not_passed_or_passed_but_not_declared_fails(manifest: dict[str, Any]) -> None:
    manifest["user_config"]["timeout"] = {"type": "number", "title": "t", "description": "d", "default": 30}
    manifest["server"]["mcp_config"]["env"]["B24_LOG_LEVEL"] = "${user_config.log_level}"
    assert build_mcpb.manifest_problems(manifest, build_mcpb.load_project()) == [
        "${user_config.log_level} is used but not declared in user_config",
        "user_config.timeout is declared but never passed to the server",
    ]


def test_a_version_out_of_step_fails(manifest: dict[str, Any]) -> None:
    manifest["version"] = "9.9.9"
    (problem,) = build_mcpb.manifest_problems(manifest, build_mcpb.load_project())
    assert problem.startswith("version '9.9.9' is not pyproject's")


def test_the_build_refuses_a_bad_manifest_before_packing(
    manifest: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    del manifest["user_config"]["confirm"]["default"]
    bad = tmp_path / "manifest.json"
    bad.write_text(json.dumps(manifest))
    monkeypatch.setattr(build_mcpb, "MANIFEST", bad)
    assert build_mcpb.main(["--output", str(tmp_path / "out.mcpb")]) == 1
    assert "user_config.confirm is optional without a default" in capsys.readouterr().err
    assert not (tmp_path / "out.mcpb").exists()


def test_the_bundles_pyproject_has_the_runtime_dependencies_only() -> None:
    project = build_mcpb.load_project()
    bundled = tomllib.loads(build_mcpb.bundle_pyproject(project))
    assert bundled["project"]["dependencies"] == project["dependencies"]
    assert bundled["project"]["version"] == project["version"]
    assert "optional-dependencies" not in bundled["project"]
    assert "build-system" not in bundled
    assert bundled["tool"] == {"uv": {"package": False}}


# The packed bundle: the mcpb CLI and library.


def test_the_bundle_holds_the_manifest_pyproject_readme_and_package_only(bundle: Path) -> None:
    names = zipfile.ZipFile(bundle).namelist()
    assert {name.split("/")[0] for name in names} == {"manifest.json", "pyproject.toml", "README.md", "b24_mcp"}
    assert "b24_mcp/__main__.py" in names
    assert "b24_mcp/sandbox/emulator.py" in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc") or "/." in f"/{name}"]
    assert not [name for name in names if name.startswith(("tests/", ".venv/", ".env", "dist/", "build/"))]
    assert bundle.stat().st_size < 1 << 20
    assert build_mcpb.archive_problems(bundle) == []


def test_mcpb_validate_passes_on_the_packed_manifest(unpacked: Path) -> None:
    done = build_mcpb.mcpb("validate", str(unpacked / "manifest.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Manifest schema validation passes!" in done.stdout


def test_the_packed_pyproject_is_the_one_the_build_makes(unpacked: Path) -> None:
    assert (unpacked / "pyproject.toml").read_text() == build_mcpb.bundle_pyproject(build_mcpb.load_project())


def test_the_host_does_not_start_it_without_the_webhook(mcpb_package: Path, unpacked: Path) -> None:
    assert host_launch(mcpb_package, unpacked, {}) is None
    assert host_launch(mcpb_package, unpacked, {"webhook_url": ""}) is None


def test_the_host_passes_the_webhook_in_env_and_defaults_for_the_rest(mcpb_package: Path, unpacked: Path) -> None:
    launch = host_launch(mcpb_package, unpacked, {"webhook_url": WEBHOOK})
    assert launch["command"] == "uv"
    assert launch["args"] == ["run", "--directory", str(unpacked), "python", "-m", "b24_mcp"]
    assert launch["env"] == {
        "B24_WEBHOOK_URL": WEBHOOK,
        "B24_READ_ONLY": "false",
        "B24_ALLOWED_ENTITY_TYPES": "",
        "B24_CONFIRM": "auto",
    }


def test_an_optional_field_without_a_default_reaches_the_server_unfilled_and_is_refused(
    mcpb_package: Path, unpacked: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "b24-mcp"
    broken.mkdir()
    manifest = json.loads((unpacked / "manifest.json").read_text())
    del manifest["user_config"]["read_only"]["default"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    launch = host_launch(mcpb_package, broken, {"webhook_url": WEBHOOK})
    assert launch["env"]["B24_READ_ONLY"] == "${user_config.read_only}"
    done = run_b24("--sandbox", env=launch["env"] | {"B24_AUDIT_LOG": str(tmp_path / "audit.jsonl")})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "b24-mcp: B24_READ_ONLY reached the server as the MCP host's unfilled placeholder ${user_config.…}: the "
        "host did not fill in this setting; set it in the server's (extension's) settings in the host"
    ]


@pytest.mark.anyio
async def test_started_as_the_host_starts_it_it_answers_initialize_and_tools_list(
    mcpb_package: Path, unpacked: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    launch = host_launch(mcpb_package, unpacked, {"webhook_url": WEBHOOK})
    # The host finds its own `uv`; here it is the one the dev extra installed beside this Python.
    path = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", os.defpath)])
    for name in list(os.environ):  # the SDK's client passes on some of its own environment: only PATH and HOME
        if name not in ("PATH", "HOME"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PATH", path)
    env = launch["env"] | SYSTEM_CERTS
    params = StdioServerParameters(
        command=launch["command"], args=[*launch["args"], "--sandbox"], env=env, cwd=str(tmp_path)
    )
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as errlog, anyio.fail_after(300):
        async with Client(stdio_client(params, errlog=errlog)) as client:
            assert client.server_info is not None
            assert client.server_info.version == build_mcpb.load_project()["version"]
            tools = await client.list_tools()
    listed = sorted(tool["name"] for tool in build_mcpb.load_manifest()["tools"])
    assert sorted(tool.name for tool in tools.tools) == listed  # the manifest lists the tools the server has
    assert "zq81hf0secretcode" not in errors.read_text()
