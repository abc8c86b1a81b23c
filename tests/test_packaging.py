"""Packaging: mpitrain owns exactly one top-level import name. The ``kernels/`` folder at the
repository root ships as ``mpitrain.kernels`` in wheels, sdists and editable installs."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


def _tracked_tree(dest: Path) -> Path:
    """The project's files (tracked or new, not ignored) copied to ``dest``: builds there
    leave the checkout untouched."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return dest


def _build(source: Path, kind: str, out: Path) -> Path:
    """Build a wheel or sdist of ``source`` with setuptools' PEP 517 backend (no network)."""
    code = (f"import setuptools.build_meta as b; "
            f"print(b.build_{kind}({str(out)!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    return out / done.stdout.strip().splitlines()[-1]


def _expected_modules() -> set[str]:
    """Every module the wheel must hold, as paths inside it."""
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "mpitrain").rglob("*.py")}
    modules |= {"mpitrain/" + str(p.relative_to(ROOT))
                for p in (ROOT / "kernels").rglob("*.py")}
    return modules


def _check_wheel(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"mpitrain", "mpitrain-0.1.0.dist-info"}, sorted(tops)
    missing = _expected_modules() - set(names)
    assert not missing, sorted(missing)
    top_level = [n for n in names if n.endswith("top_level.txt")]
    if top_level:  # setuptools writes it; when present it must name mpitrain alone
        text = zipfile.ZipFile(wheel).read(top_level[0]).decode()
        assert text.split() == ["mpitrain"], text


def test_package_list_matches_the_tree():
    """pyproject.toml lists packages explicitly (for the kernels mapping): every folder of
    mpitrain/ with an __init__.py is in it, and nothing else but mpitrain.kernels."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "mpitrain").rglob("__init__.py")}
    assert set(config["packages"]) == found | {"mpitrain.kernels"}
    assert config["package-dir"] == {"mpitrain.kernels": "kernels"}


def test_wheel_and_sdist_ship_one_top_level_name(tmp_path):
    source = _tracked_tree(tmp_path / "src")
    wheel = _build(source, "wheel", tmp_path / "dist")
    _check_wheel(wheel)
    sdist = _build(source, "sdist", tmp_path / "sdist")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    assert (unpacked / "kernels" / "network.py").is_file()
    _check_wheel(_build(unpacked, "wheel", tmp_path / "from-sdist"))

    # installed from the wheel: mpitrain.kernels imports from there, 'kernels' does not exist
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, timeout=240)
    code = ("import importlib.util, mpitrain.kernels.network as n; print(n.__file__); "
            "print(importlib.util.find_spec('kernels'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(target),
                                                       "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    location, spec = done.stdout.split()
    assert Path(location) == target / "mpitrain" / "kernels" / "network.py"
    assert spec == "None"


def test_the_checkout_imports_kernels_from_its_root_folder():
    """An editable install (what `make install` does) or the checkout itself maps
    mpitrain.kernels onto kernels/ at the repository root; nothing is called 'kernels'."""
    code = ("import importlib.util, mpitrain.kernels as k; print(k.__file__); "
            "print(importlib.util.find_spec('kernels'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "tests",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    location, spec = done.stdout.split()
    assert Path(location) == ROOT / "kernels" / "__init__.py"
    assert spec == "None"
