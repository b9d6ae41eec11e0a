"""Values that could not work are refused at start, one line each, naming the variable and never the secret."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from b24_mcp.settings import ConfirmMode, Settings, SettingsError, unknown_names
from helpers import run_b24

SECRET_CODE = "zq81hf0secretcode"
WEBHOOK = f"https://acme.bitrix24.com/rest/1/{SECRET_CODE}/"


def refusal(make_settings: Callable[..., Settings], **values: object) -> str:
    """The one line the settings are refused with; it never holds the webhook code."""
    with pytest.raises(SettingsError) as caught:
        make_settings(**values)
    (line,) = caught.value.lines
    assert SECRET_CODE not in line
    return line


@pytest.mark.parametrize("name", ["mcp_http_token", "confirm_secret"])
def test_a_short_secret_is_refused_with_how_to_make_one(make_settings: Callable[..., Settings], name: str) -> None:
    line = refusal(make_settings, **{name: "s3cret-but-only-31-characters.."})
    assert line == (
        f"B24_{name.upper()} is shorter than 32 characters, which could be guessed; "
        "make a random one with: openssl rand -hex 32"
    )


@pytest.mark.parametrize("name", ["mcp_http_token", "confirm_secret"])
def test_a_secret_of_32_characters_is_accepted(make_settings: Callable[..., Settings], name: str) -> None:
    settings = make_settings(**{name: "0123456789abcdef0123456789abcdef"})
    assert getattr(settings, name).get_secret_value() == "0123456789abcdef0123456789abcdef"


def test_a_token_no_authorization_header_can_carry_is_refused(make_settings: Callable[..., Settings]) -> None:
    line = refusal(make_settings, mcp_http_token="a long token with spaces in it, 40 chars")
    assert line.startswith("B24_MCP_HTTP_TOKEN has characters an Authorization header cannot carry")
    assert "spaces in it" not in line


@pytest.mark.process
def test_the_command_refuses_a_short_token_before_serving() -> None:
    done = run_b24("--sandbox", "--transport", "http", env={"B24_MCP_HTTP_TOKEN": "secret"})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "b24-mcp: B24_MCP_HTTP_TOKEN is shorter than 32 characters, which could be guessed; "
        "make a random one with: openssl rand -hex 32"
    ]


@pytest.mark.process
def test_a_webhook_port_out_of_range_is_one_line_from_the_command() -> None:
    done = run_b24("check", env={"B24_WEBHOOK_URL": f"https://acme.bitrix24.com:99999/rest/1/{SECRET_CODE}/"})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "b24-mcp: B24_WEBHOOK_URL is not an incoming-webhook base; expected https://<portal>/rest/<userId>/<code>/"
    ]


@pytest.mark.parametrize(
    "host",
    ["acme.bitrix24.com:99999", "acme.bitrix24.com:0", "acme.bitrix24.com:+443", "acme.bitrix24.com:", "[zz]",
     "[::1", "1.2.3.999", "exa mple.com", "ex%41mple.com", "-acme.com", "acme..com"],
)  # fmt: skip
def test_a_webhook_host_no_client_could_reach_is_refused(make_settings: Callable[..., Settings], host: str) -> None:
    line = refusal(make_settings, webhook_url=f"https://{host}/rest/1/{SECRET_CODE}/")
    assert line.startswith("B24_WEBHOOK_URL is not an incoming-webhook base")


@pytest.mark.parametrize(
    "host", ["[::1]:8443", "127.0.0.1:8443", "portal.example.com", "\u043f\u043e\u0440\u0442\u0430\u043b.\u0440\u0444"]
)
def test_a_webhook_host_a_client_can_reach_is_accepted(make_settings: Callable[..., Settings], host: str) -> None:
    assert make_settings(webhook_url=f"https://{host}/rest/1/{SECRET_CODE}/").webhook.host == host


@pytest.mark.parametrize("url", ["https://acme.bitrix24.com:99999", "https://[zz]", "https://acme bitrix24.com"])
def test_a_portal_address_no_client_could_reach_is_refused(make_settings: Callable[..., Settings], url: str) -> None:
    line = refusal(make_settings, portal_url=url, access_token="a" * 32)
    assert line.startswith("B24_PORTAL_URL is not a portal address")


@pytest.mark.parametrize(
    "url",
    ["https://oauth.example:99999/token", "https://[zz]/token", "http://oauth.example/token",
     "https://user@oauth.example/token", "ftp://oauth.example/token"],
)  # fmt: skip
def test_an_unusable_oauth_url_is_refused(make_settings: Callable[..., Settings], url: str) -> None:
    assert refusal(make_settings, oauth_url=url) == "B24_OAUTH_URL must be an https:// URL"


@pytest.mark.parametrize("url", ["http://127.0.0.2:9000/oauth/token/", "http://[::1]:9000/oauth/token/"])
def test_plain_http_oauth_is_accepted_on_loopback(make_settings: Callable[..., Settings], url: str) -> None:
    assert make_settings(oauth_url=url).oauth_url == url


@pytest.mark.parametrize("name", ["audit_log", "token_file", "ca_bundle"])
def test_a_relative_path_is_refused(make_settings: Callable[..., Settings], name: str) -> None:
    line = refusal(make_settings, **{name: "state/file"})
    assert line == (
        f"B24_{name.upper()} must be an absolute path: a relative one would depend on the folder the server is "
        "started in"
    )


def test_a_path_with_a_nul_character_is_refused(make_settings: Callable[..., Settings]) -> None:
    assert refusal(make_settings, audit_log="/tmp/a\x00b") == "B24_AUDIT_LOG is not a usable path"


def test_a_path_from_the_home_folder_is_expanded(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert make_settings(audit_log="~/journal.jsonl").audit_log == tmp_path / "journal.jsonl"


def test_a_folder_as_the_journal_is_refused(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    assert refusal(make_settings, audit_log=tmp_path).startswith("B24_AUDIT_LOG is a folder")


def test_a_relative_xdg_state_home_is_ignored(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", "relative/state")
    settings = Settings()
    assert settings.audit_log == tmp_path / ".local" / "state" / "b24-mcp" / "audit.jsonl"


def test_a_ca_bundle_that_holds_no_certificate_is_refused(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    line = refusal(make_settings, ca_bundle=tmp_path / "ca.pem")
    assert line == "B24_CA_BUNDLE is not a readable PEM file of certificates"


def test_allowed_hosts_are_names_and_origins_normalised(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        mcp_allowed_hosts=" MCP.example.com, mcp.example.com:8443,HTTPS://Tools.Example ,[::1]:80,"
    )
    assert settings.mcp_allowed_hosts == (
        "mcp.example.com",
        "mcp.example.com:8443",
        "https://tools.example",
        "[::1]:80",
    )


@pytest.mark.parametrize(
    "entry", ["*", "mcp.example.com:*", "mcp.example.com/mcp", "ftp://mcp.example.com", "user@mcp.example.com",
              "mcp.example.com:99999", "https://mcp.example.com/path", "exa mple.com"],
)  # fmt: skip
def test_an_allowed_host_that_is_neither_name_nor_origin_is_refused(
    make_settings: Callable[..., Settings], entry: str
) -> None:
    line = refusal(make_settings, mcp_allowed_hosts=f"mcp.example.com,{entry}")
    assert line == (
        f"B24_MCP_ALLOWED_HOSTS has {entry!r}, which is neither host[:port] nor an origin like https://host[:port]"
    )


@pytest.mark.parametrize(
    ("url", "named"),
    [
        (f"htps://acme.bitrix24.com/rest/1/{SECRET_CODE}/", "it does not start with https:// (htps://)"),
        (f"acme.bitrix24.com/rest/1/{SECRET_CODE}/", "it does not start with https://"),
        (f'"https://acme.bitrix24.com/rest/1/{SECRET_CODE}/"', "it is in quotes: remove them"),
        (f"https://acme.bitrix24.com/reset/1/{SECRET_CODE}/", "its path starts with /reset/ instead of /rest/"),
        (
            f"https://acme.bitrix24.com/rest/1/{SECRET_CODE}/crm.item.delete.json",
            "it ends with crm.item.delete.json after the code: give the base only",
        ),
        (f"https://acme.bitrix24.com/rest/{SECRET_CODE}/", "the user id or the code after /rest/ is missing"),
        (f"https://acme.bitrix24.com/rest/admin/{SECRET_CODE}/", "the user id after /rest/ is not a number"),
        (f"https://acme.bitrix24.com/rest/1/{SECRET_CODE}/?auth=1", "it has a ?query or #fragment after the code"),
    ],
)
def test_a_wrong_webhook_url_says_which_part_is_wrong_without_the_code(
    make_settings: Callable[..., Settings], url: str, named: str
) -> None:
    line = refusal(make_settings, webhook_url=url)
    assert line.startswith(
        "B24_WEBHOOK_URL is not an incoming-webhook base; expected https://<portal>/rest/<userId>/<code>/; " + named
    )


def test_the_confirmation_mode_is_read_in_any_case(make_settings: Callable[..., Settings]) -> None:
    assert make_settings(confirm=" Token").confirm == ConfirmMode.TOKEN


def test_a_yes_or_no_setting_lists_the_values_it_accepts(make_settings: Callable[..., Settings]) -> None:
    line = refusal(make_settings, read_only="maybe")
    assert line == "B24_READ_ONLY must be true or false (1/0, yes/no and on/off are accepted too)"


def test_a_misspelt_variable_is_named_with_the_closest_setting() -> None:
    assert unknown_names({"B24_CONFRIM": "none", "b24_webhok_url": "x", "B24_CONFIRM": "auto", "PATH": "/"}) == [
        "B24_CONFRIM is not a b24-mcp setting and is ignored; did you mean B24_CONFIRM?",
        "B24_WEBHOK_URL is not a b24-mcp setting and is ignored; did you mean B24_WEBHOOK_URL?",
    ]


def test_an_unknown_variable_far_from_any_setting_is_named_without_a_guess() -> None:
    assert unknown_names({"B24_FAVOURITE_COLOUR": "blue"}) == [
        "B24_FAVOURITE_COLOUR is not a b24-mcp setting and is ignored"
    ]


def test_the_env_file_variable_and_the_test_suites_own_are_not_unknown() -> None:
    assert unknown_names({"B24_ENV_FILE": "x", "B24_TEST_DATABASE_URL": "x", "B24_BENCH_DATABASE_URL": "x"}) == []
