"""The fused averaging kernels (src/core/csrc/fused/average.cu) compile for sm_80 and sm_90 on a
machine without a GPU, with no warning: NVRTC (libnvrtc from the nvidia-cuda-nvrtc wheel torch
depends on) needs no driver to compile, only to load, so CI catches a kernel that does not build.

Oracle: NVRTC's own result code and log; a deliberately broken source must fail (the check can fail).
"""
import ctypes
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FUSED = ROOT / "src" / "core" / "csrc" / "fused"
KERNELS = ["av_lerp", "av_bias", "av_copy_out"]


def _cuda_root():
    import nvidia

    for base in nvidia.__path__:
        root = pathlib.Path(base) / "cu13"
        if (root / "lib" / "libnvrtc.so.13").exists():
            return root
    pytest.skip("libnvrtc.so.13 (nvidia-cuda-nvrtc) is not installed")


def _compile(source: str, arch: str):
    """Compiles `source` to PTX; returns (result code, log, ptx)."""
    root = _cuda_root()
    # libnvrtc dlopens its builtins by bare soname, which is not on the loader's path in a wheel:
    # loading it first, globally, lets that dlopen find the already-loaded library.
    ctypes.CDLL(str(root / "lib" / "libnvrtc-builtins.so.13.0"), mode=ctypes.RTLD_GLOBAL)
    nvrtc = ctypes.CDLL(str(root / "lib" / "libnvrtc.so.13"))
    prog = ctypes.c_void_p()
    rc = nvrtc.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"average.cu", 0, None, None)
    assert rc == 0, f"nvrtcCreateProgram: {rc}"
    for k in KERNELS:
        nvrtc.nvrtcAddNameExpression(prog, k.encode())
    opts = [
        f"--gpu-architecture=compute_{arch}".encode(),
        f"--include-path={FUSED}".encode(),
        f"--include-path={root / 'include'}".encode(),
        b"--std=c++17",
        b"-default-device",
    ]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    ptx = b""
    if rc == 0:
        nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetPTX(prog, buf)
        ptx = buf.value
    nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode(errors="replace").strip(), ptx


@pytest.mark.parametrize("arch", ["80", "90"])
def test_kernels_compile_without_warnings(arch):
    rc, log, ptx = _compile((FUSED / "average.cu").read_text(), arch)
    assert rc == 0, log
    assert log == "", f"NVRTC warnings for sm_{arch}:\n{log}"
    for k in KERNELS:
        assert f".entry {k}(".encode() in ptx, f"{k} missing from the sm_{arch} PTX"


def test_broken_kernel_is_caught():
    rc, log, _ = _compile((FUSED / "average.cu").read_text() + "\n__global__ void x() { undeclared; }\n", "80")
    assert rc != 0 and "undeclared" in log
