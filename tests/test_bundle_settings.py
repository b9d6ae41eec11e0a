"""A value an MCP host mangled on its way (a bundle's placeholder left unfilled, a secret left encrypted) is refused
at start with a line that says what happened, and never shows the value."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from b24_mcp.settings import Settings, SettingsError
from helpers import run_b24

UNFILLED = "${user_config.%s}"
ENCRYPTED = "__encrypted__:djEwAAAAsecretciphertextQUJD"


def refusal(make_settings: Callable[..., Settings], **values: object) -> str:
    with pytest.raises(SettingsError) as caught:
        make_settings(**values)
    (line,) = caught.value.lines
    assert "djEw" not in line
    return line


# A string, a boolean, a number, a list, a path and a secret: each type's own check would say something else first.
@pytest.mark.parametrize(
    "name", ["webhook_url", "read_only", "confirm", "allowed_entity_types", "audit_log", "confirm_ttl"]
)
def test_an_unfilled_bundle_placeholder_is_refused_as_such(make_settings: Callable[..., Settings], name: str) -> None:
    line = refusal(make_settings, **{name: UNFILLED % name})
    assert line == (
        f"B24_{name.upper()} reached the server as the MCP host's unfilled placeholder ${{user_config.…}}: the host "
        "did not fill in this setting; set it in the server's (extension's) settings in the host"
    )
    assert f"user_config.{name}" not in line


def test_a_placeholder_inside_a_value_is_refused_too(make_settings: Callable[..., Settings]) -> None:
    line = refusal(make_settings, webhook_url="https://acme.bitrix24.com/rest/1/${user_config.code}/")
    assert line.startswith("B24_WEBHOOK_URL reached the server as the MCP host's unfilled placeholder")


@pytest.mark.parametrize("name", ["webhook_url", "read_only", "confirm_secret"])
def test_a_value_left_encrypted_by_the_host_is_refused_without_showing_it(
    make_settings: Callable[..., Settings], name: str
) -> None:
    line = refusal(make_settings, **{name: ENCRYPTED})
    assert line == (
        f"B24_{name.upper()} reached the server still encrypted by the MCP host (__encrypted__:…), a known Claude "
        "Desktop bug on Windows; update the host, or enter the value again in the extension's settings"
    )


def test_ordinary_values_with_dollars_or_underscores_are_kept(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(client_id="local.__encrypted__", client_secret="${not_a_placeholder}")
    assert settings.client_id == "local.__encrypted__"


def test_the_command_refuses_a_mangled_webhook_before_serving() -> None:
    done = run_b24("--sandbox", env={"B24_WEBHOOK_URL": ENCRYPTED, "B24_READ_ONLY": UNFILLED % "read_only"})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "b24-mcp: B24_WEBHOOK_URL reached the server still encrypted by the MCP host (__encrypted__:…), a known "
        "Claude Desktop bug on Windows; update the host, or enter the value again in the extension's settings",
        "b24-mcp: B24_READ_ONLY reached the server as the MCP host's unfilled placeholder ${user_config.…}: the host "
        "did not fill in this setting; set it in the server's (extension's) settings in the host",
    ]
    assert "djEw" not in done.stderr
