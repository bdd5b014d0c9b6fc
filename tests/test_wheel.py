"""A built wheel installs into a fresh virtualenv and works outside the clone (configs included).

    pytest -m slow tests/test_wheel.py

The fresh venv gets proxylm from the wheel alone (--no-deps); its dependencies (torch & co, not downloaded here)
come from the running interpreter's site-packages through a path file, appended after the venv's own
site-packages so the wheel's proxylm is the one imported (a .pth line adds a path, it runs no editable finder).
"""

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_clone(tmp_path):
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:  # build from a copy: setuptools writes build/ and egg-info next to the sources
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(src)], check=True)
    wheel = next(dist.glob("proxylm-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True)
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "PROXYLM_THREADS": "1"}
    where = subprocess.run([str(py), "-c", "import proxylm; print(proxylm.__file__)"], cwd=away, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(site), where
    done = subprocess.run([str(env_dir / "bin" / "proxylm"), "train", "bytes-micro", "--print-config"], cwd=away,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "max_steps: 40" in done.stdout, done.stderr  # shipped configs are in the wheel
    api = subprocess.run([str(py), "-c", "import proxylm.api as a; print(a.load.__doc__.split()[0])"], cwd=away,
                         env=env, capture_output=True, text=True)
    assert api.returncode == 0 and api.stdout.strip() == "The", api.stderr
