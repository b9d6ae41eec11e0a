"""Configuration: validated before serving, one clear line per problem naming the variable, never the secret."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from b24_mcp.settings import ConfirmMode, OAuthConfig, Settings, SettingsError, parse_webhook_url
from helpers import run_b24

SECRET_CODE = "zq81hf0secretcode"


def problems(make_settings: Callable[..., Settings], **values: object) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        make_settings(**values).webhook  # noqa: B018  (the property validates the credentials)
    for line in caught.value.lines:
        assert SECRET_CODE not in line
    return caught.value.lines


def test_a_webhook_base_is_split_into_host_user_and_secret_base() -> None:
    hook = parse_webhook_url(f"https://Acme.Bitrix24.com/rest/7/{SECRET_CODE}", allow_http=False)
    assert (hook.host, hook.user_id) == ("acme.bitrix24.com", 7)
    assert hook.base_url == f"https://acme.bitrix24.com/rest/7/{SECRET_CODE}/"
    assert SECRET_CODE not in repr(hook)


def test_missing_credentials_name_the_variable(make_settings: Callable[..., Settings]) -> None:
    assert problems(make_settings)[0].startswith("B24_WEBHOOK_URL is not set")


@pytest.mark.parametrize(
    "url",
    [
        f"https://acme.bitrix24.com/rest/{SECRET_CODE}/",  # no user id
        f"https://acme.bitrix24.com/rest/1/{SECRET_CODE}/crm.item.delete",  # a method URL, not the base
        f"https://acme.bitrix24.com/{SECRET_CODE}/",
        f"ftp://acme.bitrix24.com/rest/1/{SECRET_CODE}/",
        f"https://acme.bitrix24.com/rest/1/{SECRET_CODE}/?x=1",
        f"https:///rest/1/{SECRET_CODE}/",
    ],
)
def test_a_url_that_is_not_a_webhook_base_is_refused(make_settings: Callable[..., Settings], url: str) -> None:
    (line,) = problems(make_settings, webhook_url=url)
    assert line.startswith("B24_WEBHOOK_URL is not an incoming-webhook base")


def test_plain_http_is_refused_without_allow_http(make_settings: Callable[..., Settings]) -> None:
    (line,) = problems(make_settings, webhook_url=f"http://acme.local/rest/1/{SECRET_CODE}/")
    assert "B24_ALLOW_HTTP" in line


def test_plain_http_is_accepted_with_allow_http(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(webhook_url=f"http://acme.local/rest/1/{SECRET_CODE}/", allow_http=True)
    assert settings.webhook.scheme == "http"


def test_every_bad_value_gets_its_own_line(make_settings: Callable[..., Settings]) -> None:
    lines = problems(make_settings, timeout=0, confirm="maybe", confirm_ttl=1, allowed_entity_types="2,x")
    assert sorted(line.split()[0].rstrip(":") for line in lines) == [
        "B24_ALLOWED_ENTITY_TYPES",
        "B24_CONFIRM",
        "B24_CONFIRM_TTL",
        "B24_TIMEOUT",
    ]


def test_a_missing_ca_bundle_is_named(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    (line,) = problems(make_settings, ca_bundle=tmp_path / "nope.pem")
    assert line.startswith("B24_CA_BUNDLE")


def test_every_confirm_mode_is_accepted(make_settings: Callable[..., Settings]) -> None:
    signin = {"public_url": "https://mcp.example.com"}  # B24_CONFIRM=page is for sign-in servers
    modes = [make_settings(confirm=mode.value, **signin).confirm for mode in ConfirmMode]
    assert modes == list(ConfirmMode)


def test_allowed_types_are_a_comma_separated_list(make_settings: Callable[..., Settings]) -> None:
    assert make_settings(allowed_entity_types="2, 1038").allowed_entity_types == frozenset({2, 1038})


def test_settings_come_from_the_environment(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("B24_WEBHOOK_URL", f"https://acme.bitrix24.com/rest/3/{SECRET_CODE}/")
    monkeypatch.setenv("B24_CONFIRM_TTL", "60")
    settings = make_settings()
    assert (settings.webhook.user_id, settings.confirm_ttl) == (3, 60)
    assert SECRET_CODE not in repr(settings)


@pytest.mark.process
def test_the_server_exits_before_serving_on_bad_configuration() -> None:
    done = run_b24(env={"B24_WEBHOOK_URL": f"http://acme.bitrix24.com/rest/1/{SECRET_CODE}/"})
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "b24-mcp: B24_WEBHOOK_URL uses http://, which would send the webhook code in clear text; use https:// "
        "(or set B24_ALLOW_HTTP=true for a portal on a trusted network)"
    ]
    assert SECRET_CODE not in done.stderr


@pytest.mark.process
def test_the_server_without_credentials_says_which_variable() -> None:
    done = run_b24()
    assert done.returncode == 2
    assert "B24_WEBHOOK_URL is not set" in done.stderr


@pytest.mark.process
def test_version_is_printed() -> None:
    done = run_b24("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("b24-mcp ")


def test_the_example_file_loads_as_an_env_file(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(env_file=Path(__file__).parent.parent / ".env.example")
    assert settings.webhook.host == "your-portal.bitrix24.com"
    assert (settings.confirm_secret, settings.ca_bundle, settings.allowed_entity_types) == (None, None, None)


def test_the_example_file_lists_every_setting() -> None:
    example = (Path(__file__).parent.parent / ".env.example").read_text()
    for name in Settings.model_fields:
        assert f"\nB24_{name.upper()}=" in example


@pytest.mark.parametrize(
    "url", ["https://Acme.bitrix24.com", "https://acme.bitrix24.com/", "https://acme.bitrix24.com/rest/"]
)
def test_a_portal_address_is_accepted_with_or_without_rest(make_settings: Callable[..., Settings], url: str) -> None:
    credentials = make_settings(portal_url=url, access_token="a" * 32).credentials
    assert isinstance(credentials, OAuthConfig)
    assert credentials.rest_base == "https://acme.bitrix24.com/rest/"


def test_oauth_without_an_access_token_names_the_variable(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(portal_url="https://acme.bitrix24.com")
    with pytest.raises(SettingsError) as caught:
        _ = settings.credentials
    assert caught.value.lines[0].startswith("B24_ACCESS_TOKEN is not set")


def test_webhook_and_oauth_together_are_refused(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        webhook_url=f"https://acme.bitrix24.com/rest/1/{SECRET_CODE}/",
        portal_url="https://acme.bitrix24.com",
        access_token="a" * 32,
    )
    with pytest.raises(SettingsError) as caught:
        _ = settings.credentials
    assert "choose one" in caught.value.lines[0]


def test_a_portal_address_with_a_path_is_refused(make_settings: Callable[..., Settings]) -> None:
    (line,) = problems(make_settings, portal_url="https://acme.bitrix24.com/crm/deal/", access_token="a" * 32)
    assert line.startswith("B24_PORTAL_URL is not a portal address")
