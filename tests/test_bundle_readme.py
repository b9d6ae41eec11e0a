"""The README's install paths: the bundle for Claude Desktop, Cursor's install link, VS Code's `code --add-mcp` with
a password input, `uvx b24-mcp` with the absolute-path advice, and no webhook in a client's config in plain text."""

from __future__ import annotations

import base64
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
INSTALL = README.split("## Connect your portal", 1)[1].split("\n## ", 1)[0]
WEBHOOK_VALUE = re.compile(r"https?://[^\s\"'`]+/rest/\d+/")


def cursor_config() -> Any:
    (link,) = re.findall(r"\[Add to Cursor\]\((\S+)\)", INSTALL)
    query = parse_qs(urlsplit(link).query)
    assert query["name"] == ["bitrix24-delete"]
    return json.loads(base64.b64decode(query["config"][0]))


def vscode_server() -> Any:
    (line,) = [line for line in INSTALL.splitlines() if line.startswith("code --add-mcp ")]
    _, _, definition = shlex.split(line)
    return json.loads(definition)


def test_the_bundle_is_how_claude_desktop_installs_it() -> None:
    assert "python packaging/build_mcpb.py" in INSTALL
    assert "dist/b24-mcp.mcpb" in INSTALL
    assert "keychain" in INSTALL


def test_the_cursor_link_runs_uvx_with_the_webhook_in_an_env_file() -> None:
    config = cursor_config()
    assert config == {"command": "uvx", "args": ["b24-mcp", "--env-file", "${userHome}/.config/b24-mcp/b24-mcp.env"]}
    assert f"`uvx {' '.join(config['args'])}`" in INSTALL


def test_vscode_asks_for_the_webhook_through_a_password_input() -> None:
    server = vscode_server()
    assert server["command"] == "uvx"
    assert server["args"] == ["b24-mcp"]
    (prompt,) = server["inputs"]
    assert prompt["type"] == "promptString"
    assert prompt["password"] is True
    assert server["env"] == {"B24_WEBHOOK_URL": f"${{input:{prompt['id']}}}"}


def test_claude_code_gets_the_env_file_not_the_webhook() -> None:
    (line,) = re.findall(r"`(claude mcp add [^`]+)`", INSTALL)
    assert "--env" not in line.split(" -- ")[0]
    assert line.endswith("-- uvx b24-mcp --env-file ~/.config/b24-mcp/b24-mcp.env")


def test_desktop_apps_are_told_to_use_the_absolute_path_of_uvx() -> None:
    assert "spawn uvx ENOENT" in INSTALL
    assert "`which uvx`" in INSTALL


@pytest.mark.parametrize("block", re.findall(r"```(?:json|sh)\n(.+?)```", INSTALL, re.DOTALL))
def test_no_install_example_carries_a_webhook(block: str) -> None:
    assert not WEBHOOK_VALUE.search(block)


def test_no_client_config_example_in_the_readme_carries_a_webhook() -> None:
    for block in re.findall(r"```json\n(.+?)```", README, re.DOTALL):
        assert not WEBHOOK_VALUE.search(block), block
