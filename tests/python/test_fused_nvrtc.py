"""The fused averaging kernel (src/core/csrc/fused/average.cu) compiles for sm_80 and sm_90 on a
machine without a GPU, with no warning: NVRTC (libnvrtc from the nvidia-cuda-nvrtc wheel torch
depends on) needs no driver to compile, only to load, so CI catches a kernel that does not build.

It is compiled the way the launcher (src/core/src/shim/cuda.rs) compiles it: plan.cuh handed to
NVRTC as an in-memory header (no include path to the source folder), the CUDA headers of the
wheel, and the options of csrc/fused/nvrtc_options.txt, to a cubin for sm_XY.

Oracle: NVRTC's own result code and log; a deliberately broken source must fail (the check can fail).
"""
import ctypes
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FUSED = ROOT / "src" / "core" / "csrc" / "fused"
KERNELS = ["av_apply"]


def _launcher_options(arch: str, include: pathlib.Path) -> list[bytes]:
    """The launcher's option list: architecture, CUDA include path, then nvrtc_options.txt."""
    lines = (FUSED / "nvrtc_options.txt").read_text().splitlines()
    extra = [l.strip() for l in lines if l.strip() and not l.strip().startswith("#")]
    return [f"--gpu-architecture=sm_{arch}".encode(), f"--include-path={include}".encode()] + [
        e.encode() for e in extra
    ]


def _cuda_root():
    import nvidia

    for base in nvidia.__path__:
        root = pathlib.Path(base) / "cu13"
        if (root / "lib" / "libnvrtc.so.13").exists():
            return root
    pytest.skip("libnvrtc.so.13 (nvidia-cuda-nvrtc) is not installed")


def _compile(source: str, arch: str):
    """Compiles `source` to a cubin as the launcher does; returns (result code, log, cubin)."""
    root = _cuda_root()
    # libnvrtc dlopens its builtins by bare soname, which is not on the loader's path in a wheel:
    # loading it first, globally, lets that dlopen find the already-loaded library.
    ctypes.CDLL(str(root / "lib" / "libnvrtc-builtins.so.13.0"), mode=ctypes.RTLD_GLOBAL)
    nvrtc = ctypes.CDLL(str(root / "lib" / "libnvrtc.so.13"))
    prog = ctypes.c_void_p()
    header = ctypes.c_char_p((FUSED / "plan.cuh").read_text().encode())
    header_name = ctypes.c_char_p(b"plan.cuh")
    rc = nvrtc.nvrtcCreateProgram(
        ctypes.byref(prog), source.encode(), b"average.cu", 1, ctypes.byref(header), ctypes.byref(header_name)
    )
    assert rc == 0, f"nvrtcCreateProgram: {rc}"
    opts = _launcher_options(arch, root / "include")
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    cubin = b""
    if rc == 0:
        nvrtc.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetCUBIN(prog, buf)
        cubin = buf.raw
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode(errors="replace").strip(), cubin


@pytest.mark.parametrize("arch", ["80", "90"])
def test_kernels_compile_without_warnings(arch):
    rc, log, cubin = _compile((FUSED / "average.cu").read_text(), arch)
    assert rc == 0, log
    assert log == "", f"NVRTC warnings for sm_{arch}:\n{log}"
    assert cubin[:4] == b"\x7fELF", f"sm_{arch}: not an ELF cubin"
    for k in KERNELS:
        assert k.encode() in cubin, f"{k} missing from the sm_{arch} cubin"


def test_options_file_is_what_the_launcher_reads():
    # The launcher embeds the same file (include_str!) and prepends the same two options.
    src = (ROOT / "src" / "core" / "src" / "shim" / "cuda.rs").read_text()
    assert 'include_str!("../../csrc/fused/nvrtc_options.txt")' in src
    assert 'include_str!("../../csrc/fused/plan.cuh")' in src
    assert "--gpu-architecture=sm_{arch}" in src


def test_broken_kernel_is_caught():
    rc, log, _ = _compile((FUSED / "average.cu").read_text() + "\n__global__ void x() { undeclared; }\n", "80")
    assert rc != 0 and "undeclared" in log
