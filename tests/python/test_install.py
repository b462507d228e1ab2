"""The package as a user gets it: a wheel built by `pip wheel .`, installed into a fresh venv outside
the repository, imported from a folder outside it; and import errors for libraries that are missing,
truncated, for another machine, or not asymvalley's (each in its own subprocess, which must survive
with a clear ImportError rather than die of a signal).
"""
import os
import pathlib
import shutil
import subprocess
import sys
import venv
import zipfile

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
SITE = pathlib.Path(torch.__file__).resolve().parents[1]  # the site-packages that holds torch


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("ASYMVALLEY_LIBRARY", "PYTHONPATH")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True, timeout=1200, env=_clean_env(),
    )
    (whl,) = out.glob("asymvalley-*.whl")
    return whl


@pytest.fixture(scope="module")
def fresh_venv(wheel, tmp_path_factory):
    """A venv of its own (no system site-packages); torch is seen through a .pth naming only the
    folder torch lives in, which comes after the venv's own site-packages, so the wheel's copy of
    asymvalley wins over any other installed copy and src/python is never on the path."""
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(home)
    py = home / "bin" / "python"
    site = pathlib.Path(subprocess.check_output([str(py), "-c", "import site; print(site.getsitepackages()[0])"], text=True).strip())
    # --ignore-installed: through the .pth, pip would see the copy installed in the test venv
    # and install nothing.
    (site / "torch-from-test-python.pth").write_text(f"{SITE}\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        check=True, timeout=300, env=_clean_env(),
    )
    return py, site


def test_wheel_carries_library_next_to_package_and_pins_torch(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        z.extract("asymvalley/libasymvalley.so", tmp_path)
    assert "asymvalley/__init__.py" in names and "asymvalley/libasymvalley.so" in names
    assert "Requires-Dist: torch==2.11.*" in meta.splitlines()
    assert "Requires-Dist: numpy>=1.24" in meta.splitlines()  # asymvalley.valley returns numpy arrays
    assert "-py3-none-linux_" in wheel.name  # platform wheel, any CPython 3
    readelf = shutil.which("readelf")
    assert readelf, "readelf (binutils) is needed to check the library's dynamic section"
    dynamic = subprocess.check_output([readelf, "-d", str(tmp_path / "asymvalley" / "libasymvalley.so")], text=True)
    assert "(NEEDED)" in dynamic and "libtorch_cpu.so" in dynamic  # really the dynamic section
    assert "RPATH" not in dynamic and "RUNPATH" not in dynamic, dynamic


def test_installed_wheel_imports_and_runs_from_outside_the_repo(fresh_venv, tmp_path):
    py, site = fresh_venv
    code = (
        "import sys, torch, asymvalley\n"
        "print(asymvalley.__file__); print(asymvalley.loaded_library())\n"
        "assert not any('src/python' in p for p in sys.path), sys.path\n"
        "avg = [torch.zeros(3)]; n = torch.zeros((), dtype=torch.int64)\n"
        "for k in range(4):\n"
        "    torch.ops.asymvalley.swa_update_(avg, [torch.full((3,), float(k))], n)\n"
        "print(avg[0].tolist(), int(n))\n"
    )
    res = subprocess.run([str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_clean_env())
    assert res.returncode == 0, res.stderr
    package, library, values = res.stdout.splitlines()[-3:]
    assert pathlib.Path(package).resolve().is_relative_to(site.resolve())
    assert pathlib.Path(library) == (site / "asymvalley" / "libasymvalley.so").resolve()
    # SWA of 0, 1, 2, 3 is their mean, 1.5, after four updates.
    assert values == "[1.5, 1.5, 1.5] 4"


def _import_with(library, tmp_path):
    res = subprocess.run(
        [sys.executable, "-c", "import asymvalley"], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, env=_clean_env(ASYMVALLEY_LIBRARY=str(library)),
    )
    assert res.returncode == 1, (res.returncode, res.stderr)  # an exception, not a signal
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("asymvalley._library.LibraryError: asymvalley:"), last
    assert str(library) in last and "make oplib" in last and "ASYMVALLEY_LIBRARY" in last
    return last


def _built_library():
    import asymvalley

    return pathlib.Path(asymvalley.loaded_library())


def test_missing_library_says_where_it_looked(tmp_path):
    assert "op library not found" in _import_with(tmp_path / "nope.so", tmp_path)


def test_not_an_elf_file_is_refused(tmp_path):
    bad = tmp_path / "text.so"
    bad.write_text("not a library\n")
    assert "not an ELF shared library" in _import_with(bad, tmp_path)


@pytest.mark.parametrize("keep", [0.0, 0.25, 0.5, 0.9])
def test_truncated_library_is_refused_before_loading(tmp_path, keep):
    data = _built_library().read_bytes()
    cut = tmp_path / "cut.so"
    cut.write_bytes(data[: max(70, int(len(data) * keep))])
    assert "truncated" in _import_with(cut, tmp_path)


def test_library_for_another_machine_is_refused(tmp_path):
    data = bytearray(_built_library().read_bytes())
    data[18:20] = (183 if data[18] != 183 else 62).to_bytes(2, "little")  # e_machine
    other = tmp_path / "other.so"
    other.write_bytes(bytes(data))
    assert "expected a shared library" in _import_with(other, tmp_path)


def _libc():
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "/libc.so" in path or "/libc-" in path:
                return pathlib.Path(path)
    pytest.fail("libc not found in /proc/self/maps")


@pytest.mark.parametrize("which", ["libc", "libtorch_cpu"])
def test_a_valid_library_that_registers_nothing_is_refused(tmp_path, which):
    lib = _libc() if which == "libc" else SITE / "torch" / "lib" / "libtorch_cpu.so"
    last = _import_with(lib, tmp_path)
    assert "did not register" in last and "torch.ops.asymvalley.swa_update_" in last
    assert "torch.classes.asymvalley.Averager" in last


def test_library_with_unresolved_symbols_says_built_for_another_torch(tmp_path):
    """What a library built against another libtorch looks like to dlopen: a symbol that this
    process's libtorch does not define."""
    cc = shutil.which("cc")
    assert cc, "a C compiler is needed (the op library's build needs one too)"
    src = tmp_path / "other_torch.c"
    src.write_text(
        "extern void _ZN2at18symbol_of_other_torchEv(void);\n"
        "void asymvalley_probe(void) { _ZN2at18symbol_of_other_torchEv(); }\n"
    )
    lib = tmp_path / "libother_torch.so"
    subprocess.run([cc, "-shared", "-fPIC", "-Wl,-z,now", "-o", str(lib), str(src)], check=True, timeout=120)
    last = _import_with(lib, tmp_path)
    assert "undefined symbol" in last and "built for another torch" in last and torch.__version__ in last


def test_source_checkout_falls_back_to_the_cargo_build(tmp_path):
    """Run from the source tree (as benches/ do), the package loads target/release's library."""
    built = ROOT / "target" / "release" / "libasymvalley.so"
    res = subprocess.run(
        [sys.executable, "-c", "import asymvalley; print(asymvalley.__file__); print(asymvalley.loaded_library())"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=_clean_env(PYTHONPATH=str(ROOT / "src" / "python")),
    )
    assert res.returncode == 0, res.stderr
    package, library = res.stdout.splitlines()[-2:]
    assert pathlib.Path(package).resolve().is_relative_to(ROOT / "src" / "python")
    assert pathlib.Path(library) == built.resolve()
