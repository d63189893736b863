"""The offline environment has one definition, scripts/offline.env, which every runner reads."""
import re
from pathlib import Path

import pytest
from offline_env import ENV_FILE, offline_env  # scripts/: pytest's pythonpath (pyproject.toml)

ROOT = Path(__file__).resolve().parent.parent

#: the variables a runner would otherwise set itself
NAMES = ("COURSE_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "PYTHONHASHSEED",
         "TOKENIZERS_PARALLELISM", "MPLBACKEND")


def test_the_file_defines_the_offline_world():
    env = offline_env()
    assert set(env) == set(NAMES)
    assert env["COURSE_OFFLINE"] == env["HF_HUB_OFFLINE"] == "1" and env["PYTHONHASHSEED"] == "0"


def test_a_malformed_line_is_named(tmp_path):
    bad = tmp_path / "bad.env"
    bad.write_text("# fine\nCOURSE_OFFLINE=1\nexport HF_HUB_OFFLINE 1\n")
    with pytest.raises(ValueError, match=r"bad.env:3: expected NAME=value"):
        offline_env(bad)


def test_the_tests_run_in_it():
    import os

    assert {name: os.environ.get(name) for name in NAMES} == offline_env()


@pytest.mark.parametrize("script", ["scripts/test.sh", "scripts/build_site.sh", "scripts/site.sh",
                                    "scripts/test_newest.sh"])
def test_the_shell_scripts_source_it(script):
    assert "set -a; . scripts/offline.env; set +a" in (ROOT / script).read_text()


def test_no_other_runner_keeps_its_own_copy():
    # A copy is a file that sets two or more of the variables (NAME=..., "NAME": ..., a dict()
    # keyword, setenv("NAME", ...)); a test that switches COURSE_OFFLINE alone is testing it.
    setting = re.compile(r"""\b(%s)\b(?:["']?\s*[:=,]|["']\s*\))""" % "|".join(NAMES))
    allowed = {ENV_FILE, ROOT / "tests" / "test_offline_env.py",
               ROOT / "tests" / "test_runtime.py"}  # which switch wins, COURSE_OFFLINE or HF_HUB_OFFLINE
    copies = {}
    for path in [*ROOT.glob("scripts/*"), *ROOT.glob(".ci/*"), *ROOT.glob("tests/**/*.py")]:
        if path.is_file() and path not in allowed:
            names = {m.group(1) for m in setting.finditer(path.read_text())}
            if len(names) >= 2:
                copies[str(path.relative_to(ROOT))] = sorted(names)
    assert not copies, f"these files set the offline variables themselves: {copies}"
