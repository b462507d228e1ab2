"""Every ```python block of README.md runs, as a user would run it: in a fresh interpreter with the
installed package, from an empty temp folder (so nothing from the checkout is importable and files
it writes land there). A block that fails prints its stderr."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)


def _title(block):
    """The README section a block sits in, for the test id."""
    text = (ROOT / "README.md").read_text()
    before = text[: text.index(block)]
    heads = re.findall(r"^#+ (.+)$", before, re.M)
    return heads[-1] if heads else "top"


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 6  # op library, flat-side bias, EMA, timm, Lightning, SWA


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{i}:{_title(b)[:40]}" for i, b in enumerate(BLOCKS)])
def test_readme_block_runs(block, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(block)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the installed package
    env["OMP_NUM_THREADS"] = "1"
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode == 0, f"README block failed (exit {run.returncode}):\n{block}\n--- stderr ---\n{run.stderr[-4000:]}"
