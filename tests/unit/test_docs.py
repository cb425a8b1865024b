"""The configuration doc is generated from the declarations: it must not drift."""

from __future__ import annotations

from pathlib import Path

from kissbot_supervisor.config.docgen import render
from kissbot_supervisor.config.settings import declarations

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_doc_is_up_to_date() -> None:
    assert DOC.read_text() == render(), "run `make docs` and commit docs/configuration.md"


def test_every_setting_is_in_the_doc_with_its_flag() -> None:
    text = DOC.read_text()
    for _name, _default, meta in declarations():
        assert f"`{meta.key}`" in text
        for flag in meta.flags:
            assert f"`{flag}`" in text


def test_the_readmes_settings_example_is_valid() -> None:
    import re

    import yaml

    from kissbot_supervisor.config.load import read_settings

    readme = (DOC.parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "supervisor:" in b]
    assert blocks, "README.md has no settings example"
    for block in blocks:
        settings = read_settings(yaml.safe_load(block), "README.md")
        assert settings.bot_logins_per_10s == 20
