"""One import namespace: installing dutyd adds `dutyd` (and its dist-info) and nothing else."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Folders beside the layers that are not part of the installed package.
NOT_INSTALLED = {"tests", "bench", "scripts", "integrations", "packaging", ".venv", ".git", ".ci"}


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in out.stdout.splitlines() if (ROOT / line).is_file()]


def package_folders() -> set[str]:
    found = set()
    for path in tracked_files():
        parts = Path(path).parts
        if parts[-1] != "__init__.py" or parts[0] in NOT_INSTALLED:
            continue
        found.add(".".join(("dutyd", *parts[:-1])))
    return found


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    assert listed == package_folders()


def test_license_is_an_spdx_expression():
    """setuptools >= 77 deprecates the `license = {text = ...}` table and License ::
    classifiers, and printed the warning on every `pip install`: the SPDX string only."""
    from packaging.licenses import canonicalize_license_expression

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    license_ = project["license"]
    assert isinstance(license_, str), license_
    assert canonicalize_license_expression(license_) == license_
    assert not any(c.startswith("License ::") for c in project.get("classifiers", []))


# aiohttp names that came after 3.9 with the release that added them (aiohttp's CHANGES):
# code that uses one needs a floor at least that high. RequestKey made `import dutyd.web`
# fail on aiohttp 3.10 to 3.13 while pyproject promised >= 3.10.11.
AIOHTTP_ADDED = {
    "AppKey": (3, 9, 0),
    "ClientConnectorDNSError": (3, 10, 10),
    "RequestKey": (3, 14, 0),
    "ResponseKey": (3, 14, 0),
    "encode_basic_auth": (3, 14, 0),
}


def declared_floor(package: str) -> tuple[int, ...]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for requirement in config["project"]["dependencies"]:
        found = re.fullmatch(rf"{package}>=([0-9.]+)(,.*)?", requirement.replace(" ", ""))
        if found:
            return tuple(int(part) for part in found.group(1).split("."))
    raise AssertionError(f"{package} has no >= floor in pyproject.toml")


def test_the_aiohttp_floor_has_every_aiohttp_name_the_code_uses():
    """The floor is a promise: an install at exactly that version must import and run. Only
    the pinned, newer aiohttp is installed here (no network to fetch the floor), so the names
    the installed code uses are checked against the release that added them."""
    floor = declared_floor("aiohttp")
    too_new = []
    for path in tracked_files():
        if not path.endswith(".py") or Path(path).parts[0] in NOT_INSTALLED:
            continue
        text = (ROOT / path).read_text(encoding="utf-8")
        for name, added in AIOHTTP_ADDED.items():
            if added > floor and re.search(rf"\b{name}\b", text):
                too_new.append(f"{path} uses {name} (aiohttp {added}) above the floor {floor}")
    assert too_new == []


def test_a_clean_install_adds_only_dutyd(tmp_path: Path):
    # Build from a copy of the tracked files: pip builds in the source tree and leaves build/.
    source = tmp_path / "source"
    for path in tracked_files():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, source / path)
    wheels = tmp_path / "wheels"
    # -v: pip shows the build backend's output, where setuptools prints its deprecations.
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    output = build.stdout + build.stderr
    for warning in (
        "SetuptoolsDeprecationWarning",
        "License classifiers are deprecated",
        "as a TOML table is deprecated",
    ):
        assert warning not in output, output[output.find(warning) - 500 :][:2000]
    (wheel,) = wheels.glob("dutyd-*.whl")
    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    (site,) = env.glob("lib/python*/site-packages")
    before = {p.name for p in site.iterdir()}
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), wheel],
        check=True,
        timeout=600,
    )
    # `bin` holds the `dutyd` console script, which --target puts beside the packages.
    added = {p.name for p in site.iterdir()} - before - {"bin"}
    assert {n for n in added if not n.endswith(".dist-info")} == {"dutyd"}, added
    assert {n for n in added if n.endswith(".dist-info")} == {
        wheel.name.split("-py")[0] + ".dist-info"
    }
    layers = {p.name for p in (site / "dutyd").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert layers >= {"agent", "core", "collectors", "rules", "storage", "notify", "duty", "web"}
    assert (site / "dutyd" / "rules" / "packs" / "duty.yaml").is_file()
    assert (site / "dutyd" / "web" / "statuspage" / "status.html").is_file()
    # The installed package imports from the venv, not from this checkout (the clock needs
    # nothing beyond the standard library, so no dependency has to be installed for this).
    out = subprocess.run(
        [str(env / "bin" / "python"), "-c", "import dutyd.core.clock as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(site)), out.stdout
