"""examples/announce installs as a package of its own beside fwxtwisted, in a fresh
virtualenv: twistd finds its `announce` command, and its trial tests pass there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "announce"

#: What fwxtwisted's package is built from (a copy: building in the worktree would
#: leave build/ and egg-info behind).
PROJECT_FILES = ("pyproject.toml", "README.md", "fwxtwisted", "twisted")


def run(*command: str | Path, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def copyTree(source: Path, target: Path, names: tuple[str, ...] | None = None) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache", "_trial_temp*")
    for name in names or tuple(path.name for path in source.iterdir()):
        path = source / name
        if path.is_dir():
            shutil.copytree(path, target / name, ignore=ignore)
        elif path.exists():
            shutil.copy2(path, target / name)


@pytest.mark.slow
def test_announce_installs_beside_fwxtwisted(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    venv = tmp_path / "venv"
    # The system's packages (Twisted, pyOpenSSL, setuptools, pip) are used as they are:
    # nothing is downloaded.
    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv,
        cwd=tmp_path, env=env)  # fmt: skip
    python = venv / "bin" / "python"
    project = tmp_path / "fwxtwisted-src"
    example = tmp_path / "announce-src"
    project.mkdir()
    example.mkdir()
    copyTree(ROOT, project, PROJECT_FILES)
    copyTree(EXAMPLE, example)
    for source in (project, example):
        run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
            "--no-build-isolation", source, cwd=tmp_path, env=env)  # fmt: skip

    where = run(python, "-c", "import announce_filter, fwxtwisted; "
                "print(announce_filter.__file__); print(fwxtwisted.__file__)",
                cwd=tmp_path, env=env)  # fmt: skip
    assert all(str(venv) in line for line in where.split()), where

    twistd = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
    usage = run(python, "-c", twistd, "fwx", "--help", cwd=tmp_path, env=env)
    assert "announce" in usage, usage
    announceUsage = run(python, "-c", twistd, "fwx", "announce", "--help", cwd=tmp_path, env=env)
    assert "--upstream" in announceUsage, announceUsage

    # The tests alone, away from the sources: the filter comes from the installed package.
    tests = tmp_path / "tests"
    tests.mkdir()
    shutil.copy2(EXAMPLE / "test_announce.py", tests / "test_announce.py")
    result = run(python, "-m", "twisted.trial", "--temp-directory", tmp_path / "trial",
                 "test_announce", cwd=tests, env=env)  # fmt: skip
    assert "PASSED" in result, result
