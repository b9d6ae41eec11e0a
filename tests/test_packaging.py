"""The distribution: a wheel that installs cleanly (pipx, uvx), runs, and ships its type information."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from b24_mcp import __version__

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("b24_mcp-*.whl")
    return built


@pytest.mark.process
def test_the_wheel_ships_the_package_the_sandbox_and_py_typed(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "b24_mcp/py.typed",
        "b24_mcp/commands/cli.py",
        "b24_mcp/sandbox/emulator.py",
        "b24_mcp/sandbox/seed.py",
    ):
        assert name in names
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)


@pytest.mark.process
def test_the_wheel_declares_the_console_script_and_only_the_runtime_dependencies(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    info = f"b24_mcp-{__version__}.dist-info"
    assert "b24-mcp = b24_mcp.commands.cli:main" in archive.read(f"{info}/entry_points.txt").decode()
    metadata = archive.read(f"{info}/METADATA").decode()
    required = sorted(
        line.split(":", 1)[1].strip().split(";")[0].split(">")[0].split("<")[0].split("=")[0].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    )
    assert required == [
        "cryptography",
        "httpx2",
        "mcp",
        "prometheus-client",
        "pydantic-settings",
        "python-dotenv",
        "sse-starlette",
        "uvicorn",
    ]


@pytest.mark.process
def test_the_installed_wheel_runs(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # -S keeps the development install's import hook out, so the code that runs is the wheel's.
    dependencies = sysconfig.get_paths()["purelib"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), dependencies])}
    script = [sys.executable, "-S", str(target / "bin" / "b24-mcp")]
    done = subprocess.run([*script, "--version"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"b24-mcp {__version__}"
    where = "import b24_mcp.sandbox.emulator as m; print(m.__file__)"
    located = subprocess.run(
        [sys.executable, "-S", "-c", where], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert located.stdout.startswith(str(target)), located.stderr
    check = subprocess.run(
        [*script, "check", "--sandbox"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_wheel_carries_the_license_and_what_pypi_shows(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    info = f"b24_mcp-{__version__}.dist-info"
    assert archive.read(f"{info}/licenses/LICENSE").decode().startswith("MIT License")
    metadata = archive.read(f"{info}/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    assert "Classifier: Typing :: Typed" in metadata
    assert "Project-URL: Homepage, https://github.com/" in metadata
    assert "Project-URL: Changelog, " in metadata


def test_the_wheels_description_carries_the_name_the_registry_verifies(wheel: Path) -> None:
    name = json.loads((ROOT / "server.json").read_text())["name"]
    metadata = zipfile.ZipFile(wheel).read(f"b24_mcp-{__version__}.dist-info/METADATA").decode()
    description = metadata.split("\n\n", 1)[1]  # the README, after the headers
    assert f"mcp-name: {name}" in description


def test_the_sdist_carries_the_license(tmp_path: Path) -> None:
    build = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    with tarfile.open(tmp_path / done.stdout.strip().splitlines()[-1]) as sdist:
        names = sdist.getnames()
    assert f"b24_mcp-{__version__}/LICENSE" in names
    assert f"b24_mcp-{__version__}/README.md" in names


def test_uvx_runs_the_server_from_the_wheel_file(wheel: Path, tmp_path: Path) -> None:
    uvx = Path(sysconfig.get_path("scripts")) / "uvx"  # installed by the dev extra
    env = {name: value for name, value in os.environ.items() if not name.startswith(("B24_", "VIRTUAL_ENV"))}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")  # the sandbox's journal
    env["UV_SYSTEM_CERTS"] = "1"  # this machine's package index is reached through a proxy the system's store trusts

    def uvx_b24(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(uvx), "--from", str(wheel), "b24-mcp", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)

    version = uvx_b24("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"b24-mcp {__version__}"
    check = uvx_b24("check", "--sandbox")
    assert check.returncode == 0, check.stdout + check.stderr
