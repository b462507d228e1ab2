"""The Python tests run against the installed package, never against src/python.

`make test` installs it first (`pip install --no-deps --no-build-isolation .`, which reuses the
cargo build in target/); by hand, run that line with this Python, then pytest.
"""
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.find_spec("asymvalley")
if _spec is None or _spec.origin is None:
    raise pytest.UsageError(
        "asymvalley is not installed in this Python: run `make test`, or "
        "`python -m pip install --no-deps --no-build-isolation .` from the repository, then pytest"
    )
if pathlib.Path(_spec.origin).resolve().is_relative_to(ROOT / "src"):
    raise pytest.UsageError(
        f"asymvalley resolves to the source tree ({_spec.origin}); the tests must see the installed "
        "copy: remove src/python from PYTHONPATH and install the package"
    )


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: on tiny tensors extra threads only spin-wait, which on a
    loaded 2-core machine made the step-by-step comparisons 10-30x slower in CPU time."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
