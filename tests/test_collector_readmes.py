"""Every registered collector kind has a README beside its code (as Telegraf's inputs have):
its sample config loads through the real config loader and shows every option (commented out
where it is an alternative or a default), and it documents every option and every metric the
collector declares."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from dutyd.agent.config import Settings, load_config
from dutyd.collectors import COLLECTORS, Collector
from dutyd.collectors.base import Readings, TargetConfig

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


def models_in(annotation: object) -> Iterator[type[BaseModel]]:
    """The config models inside a field's type (`list[ModbusRegister]`, `X | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from models_in(arg)


def options_of(model: type[BaseModel]) -> Iterator[tuple[str, str]]:
    """(model name, option) for every option of `model` and of the models nested in it."""
    seen = {model}
    stack = [model]
    while stack:
        current = stack.pop()
        for name, field in current.model_fields.items():
            yield current.__name__, field.alias or name
            for nested in models_in(field.annotation):
                if nested not in seen:
                    seen.add(nested)
                    stack.append(nested)


def in_sample(sample: str, key: str) -> bool:
    """`key:` begins a line of the sample, set or commented out (`# key:`), or an item of a
    list of mappings (`- key:`, `# - key:`)."""
    pattern = rf"^[ \t]*(?:#[ \t]*)?(?:-[ \t]+)?{re.escape(key)}:"
    return re.search(pattern, sample, re.MULTILINE) is not None


def test_sample_config_shows_every_option(kind: str) -> None:
    collector = COLLECTORS[kind]
    sample = sample_of(readme_of(collector).read_text(encoding="utf-8"))
    options = list(options_of(collector.config_model))
    # The fields every target has (depends_on, shard, ...) are options of every kind.
    assert {o for _, o in options} >= set(TargetConfig.model_fields)
    missing = [f"{model}.{key}" for model, key in options if not in_sample(sample, key)]
    assert not missing, f"{kind}: the README's sample config does not show {missing}"


def test_in_sample_reads_keys_not_words() -> None:
    sample = "targets:\n  - name: a\n    # shard: b   # depends_on: x\n    labels: {port: 1}\n"
    assert in_sample(sample, "name") and in_sample(sample, "shard")
    assert not in_sample(sample, "depends_on") and not in_sample(sample, "port")


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
