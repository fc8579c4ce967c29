"""Where clients reach the server: ``--public-url``, or else ``--host`` and ``--port``."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from portway.cli import main
from portway.settings import Settings, clean_public_url


def test_the_public_url_defaults_to_host_and_port() -> None:
    assert Settings(port=9000).public_base_url == "http://127.0.0.1:9000"
    assert Settings(host="0.0.0.0", port=80).public_base_url == "http://127.0.0.1:80"
    assert Settings(host="::1", port=8000).public_base_url == "http://[::1]:8000"
    assert Settings(public_url="https://ai.example/pw").public_base_url == "https://ai.example/pw"


def test_a_public_url_is_an_http_url_with_a_host() -> None:
    assert clean_public_url("https://ai.example/portway/") == "https://ai.example/portway"
    for bad in (
        "ai.example",
        "ftp://ai.example",
        "https://",
        "https://ai.example/?a=1",
        "https://user:pw@ai.example",
        "http://ai.example:99999",
    ):
        with pytest.raises(ValueError, match=r"URL with a host|may not have|[Pp]ort"):
            clean_public_url(bad)


def test_serve_refuses_a_bad_public_url() -> None:
    result = CliRunner().invoke(main, ["serve", "--public-url", "ftp://ai.example"])
    assert result.exit_code == 2
    assert "--public-url" in result.output
    result = CliRunner().invoke(main, ["serve"], env={"PORTWAY_PUBLIC_URL": "ai.example"})
    assert result.exit_code == 2
    assert "is not an http:// or https:// URL" in result.output
