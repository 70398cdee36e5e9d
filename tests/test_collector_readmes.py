"""Every registered collector kind has a README beside its code (as Telegraf's inputs have):
its sample config loads through the real config loader, and it documents every option and
every metric the collector declares."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from dutyd.agent.config import Settings, load_config
from dutyd.collectors import COLLECTORS, Collector
from dutyd.collectors.base import Readings

COLLECTORS_DIR = Path(inspect.getfile(Readings)).parent
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.DOTALL | re.MULTILINE)
ENV_REFERENCE = re.compile(r"_env:\s*([A-Z][A-Z0-9_]*)")


def readme_of(collector: type[Collector]) -> Path:
    return Path(inspect.getfile(collector)).parent / "README.md"


def sample_of(text: str) -> str:
    blocks = YAML_BLOCK.findall(text)
    assert blocks, "the README has no ```yaml sample config"
    return blocks[0]


def load_sample(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The README's sample config through `load_config`, as `dutyd check-config` reads it
    (the environment variables it names set to a dummy secret)."""
    sample = sample_of(readme_of(COLLECTORS[kind]).read_text(encoding="utf-8"))
    for name in ENV_REFERENCE.findall(sample):
        monkeypatch.setenv(name, "sample-secret")
    path = tmp_path / "dutyd.yaml"
    path.write_text(sample, encoding="utf-8")
    return load_config(path)


@pytest.fixture(params=sorted(COLLECTORS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_kind_has_a_readme_in_its_own_folder(kind: str) -> None:
    collector = COLLECTORS[kind]
    readme = readme_of(collector)
    # In the kind's own folder, not one README for all collectors.
    assert readme.parent != COLLECTORS_DIR, f"{kind}: its code is not in a folder of its own"
    assert readme.is_file(), f"{kind}: no {readme}"
    text = readme.read_text(encoding="utf-8")
    assert f"`kind: {kind}`" in text.split("\n", 1)[0], f"{kind}: the title names another kind"


def test_sample_config_loads_through_the_config_loader(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_sample(kind, tmp_path, monkeypatch)
    kinds = {t.kind for t in settings.targets}
    assert kinds == {kind}, f"{kind}: the sample config holds targets of kinds {kinds}"


def test_every_option_is_documented(kind: str) -> None:
    collector = COLLECTORS[kind]
    text = readme_of(collector).read_text(encoding="utf-8")
    missing = [
        field.alias or name
        for name, field in collector.config_model.model_fields.items()
        if f"`{field.alias or name}`" not in text and f"`{field.alias or name}[]" not in text
    ]
    assert not missing, f"{kind}: README does not document options {missing}"


def test_every_metric_is_documented(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = COLLECTORS[kind]
    text = readme_of(collector).read_text(encoding="utf-8")
    names = set(collector.metric_help)
    # Kinds whose names come from the config (Modbus registers, SNMP sensors) emit more: the
    # sample config's names must be documented too.
    for target in load_sample(kind, tmp_path, monkeypatch).targets:
        names |= collector.emits(target)
    assert names, f"{kind}: declares no metrics"
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"{kind}: README does not document metrics {missing}"
