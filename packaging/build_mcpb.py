"""Build the Claude Desktop bundle: `python packaging/build_mcpb.py` writes `dist/b24-mcp.mcpb`.

The bundle (MCPB, manifest 0.4, `server.type: "uv"`) holds `manifest.json`, a `pyproject.toml` made from the
project's (the runtime dependencies only: no dev or postgres extras, nothing to build), the README and `b24_mcp/`.
Nothing is vendored: the host runs `uv run`, which installs the dependencies for its own platform, so one bundle
serves every platform. The manifest is checked for what the host gets wrong silently (an optional field without a
default reaches the server as the literal text `${user_config.name}`; a secret on the command line) before the
pinned `@anthropic-ai/mcpb` CLI (installed once with npm under `build/`) validates and packs it. Not signed:
signing is broken upstream in 2.1.2.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

MCPB_VERSION = "2.1.2"  # the @anthropic-ai/mcpb CLI that validates and packs; pinned, so the build is the same
ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "packaging" / "manifest.json"
OUTPUT = ROOT / "dist" / "b24-mcp.mcpb"
MAX_BYTES = 1 << 20
TOP_LEVEL_FILES = ("manifest.json", "pyproject.toml", "README.md")
PACKAGE = "b24_mcp"
_PLACEHOLDER = re.compile(r"\$\{user_config\.([^}]+)\}")
_NOT_SHIPPED = shutil.ignore_patterns("__pycache__", "*.py[cod]", ".*")


class BundleError(Exception):
    """The bundle cannot be built as it stands; the message says why."""


def load_manifest() -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return manifest


def load_project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project


def manifest_problems(manifest: dict[str, Any], project: dict[str, Any]) -> list[str]:
    """What the host would get wrong with this manifest, one line each (the schema itself is the CLI's to check)."""
    problems = []
    if manifest.get("version") != project["version"]:
        problems.append(f"version {manifest.get('version')!r} is not pyproject's {project['version']!r}")
    if manifest.get("manifest_version") != "0.4" or manifest.get("server", {}).get("type") != "uv":
        problems.append('expected manifest_version "0.4" with server.type "uv"')
    fields: dict[str, Any] = manifest.get("user_config", {})
    config = manifest.get("server", {}).get("mcp_config", {})
    for name, field in fields.items():
        if not field.get("required") and "default" not in field:
            problems.append(
                f"user_config.{name} is optional without a default: the host would pass the literal text "
                f"${{user_config.{name}}} and the server would refuse to start"
            )
    in_args = set(_PLACEHOLDER.findall(json.dumps([config.get("command", ""), config.get("args", [])])))
    in_env = set(_PLACEHOLDER.findall(json.dumps(config.get("env", {}))))
    for name in sorted(in_args):
        if fields.get(name, {}).get("sensitive"):
            problems.append(f"user_config.{name} is sensitive but goes on the command line; pass it through env")
    for name in sorted((in_args | in_env) - set(fields)):
        problems.append(f"${{user_config.{name}}} is used but not declared in user_config")
    for name in sorted(set(fields) - in_args - in_env):
        problems.append(f"user_config.{name} is declared but never passed to the server")
    return problems


def bundle_pyproject(project: dict[str, Any]) -> str:
    """The bundle's `pyproject.toml`: the runtime dependencies for `uv run`, no extras, nothing to build."""

    def value(item: Any) -> str:  # JSON strings and lists of them are TOML too
        return json.dumps(item, ensure_ascii=False)

    dependencies = "".join(f"    {value(dependency)},\n" for dependency in project["dependencies"])
    return (
        "# Made by packaging/build_mcpb.py from the project's pyproject.toml: what `uv run` installs for the bundle.\n"
        "[project]\n"
        f"name = {value(project['name'])}\n"
        f"version = {value(project['version'])}\n"
        f"description = {value(project['description'])}\n"
        f"requires-python = {value(project['requires-python'])}\n"
        f"dependencies = [\n{dependencies}]\n"
        "\n"
        "[tool.uv]\n"
        "package = false  # b24_mcp/ runs from the bundle's folder (`uv run python -m b24_mcp`): nothing to build\n"
    )


def stage(folder: Path) -> None:
    """Lay out the bundle's files in `folder` (empty or absent): the manifest, pyproject, README, the package."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MANIFEST, folder / "manifest.json")
    (folder / "pyproject.toml").write_text(bundle_pyproject(load_project()), encoding="utf-8")
    shutil.copyfile(ROOT / "README.md", folder / "README.md")
    shutil.copytree(ROOT / PACKAGE, folder / PACKAGE, ignore=_NOT_SHIPPED)


def mcpb_package() -> Path:
    """The folder of the pinned `@anthropic-ai/mcpb` package, installed with npm under `build/` the first time."""
    home = ROOT / "build" / f"mcpb-{MCPB_VERSION}"
    package = home / "node_modules" / "@anthropic-ai" / "mcpb"
    try:
        installed = json.loads((package / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        installed = None
    if installed != MCPB_VERSION:
        npm = shutil.which("npm")
        if npm is None:
            raise BundleError("npm is needed to install the @anthropic-ai/mcpb CLI (Node.js 20 or later)")
        home.mkdir(parents=True, exist_ok=True)
        command = [npm, "install", "--prefix", str(home), "--no-audit", "--no-fund", "--ignore-scripts"]
        done = subprocess.run(
            [*command, f"@anthropic-ai/mcpb@{MCPB_VERSION}"],
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise BundleError(f"npm could not install @anthropic-ai/mcpb@{MCPB_VERSION}:\n{done.stderr.strip()}")
    return package


def mcpb(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the pinned `mcpb` CLI (never interactive)."""
    node = shutil.which("node")
    if node is None:
        raise BundleError("node is needed to run the @anthropic-ai/mcpb CLI (Node.js 20 or later)")
    cli = mcpb_package() / "dist" / "cli" / "cli.js"
    return subprocess.run(
        [node, str(cli), *args], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


def archive_problems(bundle: Path) -> list[str]:
    """What the packed file holds that it should not, or lacks, one line each."""
    problems = []
    if bundle.stat().st_size >= MAX_BYTES:
        problems.append(f"{bundle.name} is {bundle.stat().st_size} bytes, not under 1 MiB")
    names = zipfile.ZipFile(bundle).namelist()
    for name in names:
        parts = name.split("/")
        shipped = name in TOP_LEVEL_FILES or (parts[0] == PACKAGE and len(parts) > 1)
        cached = "__pycache__" in parts or name.endswith((".pyc", ".pyo")) or any(p.startswith(".") for p in parts)
        if not shipped or cached:
            problems.append(f"{bundle.name} should not hold {name}")
    for name in (*TOP_LEVEL_FILES, f"{PACKAGE}/__main__.py"):
        if name not in names:
            problems.append(f"{bundle.name} lacks {name}")
    return problems


def build(output: Path = OUTPUT) -> Path:
    """Check the manifest, lay out the bundle, validate and pack it with `mcpb`, check the packed file."""
    problems = manifest_problems(load_manifest(), load_project())
    if problems:
        raise BundleError("packaging/manifest.json: " + "\n  ".join(problems))
    with tempfile.TemporaryDirectory(prefix="b24-mcpb-") as scratch:
        folder = Path(scratch) / "b24-mcp"
        stage(folder)
        for step in (["validate", str(folder / "manifest.json")], ["pack", str(folder), str(output)]):
            done = mcpb(*step)
            if done.returncode != 0 or "ERROR" in done.stdout + done.stderr:
                raise BundleError(f"mcpb {step[0]} failed:\n{done.stdout}{done.stderr}".strip())
    problems = archive_problems(output)
    if problems:
        raise BundleError("\n".join(problems))
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the Claude Desktop bundle (MCPB) of b24-mcp.")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"where to write it (default {OUTPUT})")
    args = parser.parse_args(argv)
    try:
        bundle = build(args.output.resolve())
    except BundleError as exc:
        print(f"build_mcpb: {exc}", file=sys.stderr)
        return 1
    print(f"{bundle} ({bundle.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
