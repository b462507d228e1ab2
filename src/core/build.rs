//! Build script of the library: compiles its C++ (`csrc/`: the fused `at::_foreach_*` kernels
//! that tch does not bind, and the TorchScript module handle) and gives the library's own tests
//! and doctests an rpath to libtorch.
//!
//! Why each step:
//! - tch's own rpath does not reach our artifacts, so we print one (torch-sys is a direct
//!   dependency so that `DEP_TCH_LIBTORCH_LIB` is set here).
//! - the ABI flag must match the PyPI wheel's libtorch (`_GLIBCXX_USE_CXX11_ABI=1`).
//! - no `+whole-archive`: nothing here registers with the dispatcher; the op library
//!   (`src/ops`) holds every `TORCH_LIBRARY` block.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys must be a direct dependency so that DEP_TCH_LIBTORCH_LIB is set");
    };
    let lib_dir = PathBuf::from(lib_dir);
    let Some(torch_root) = lib_dir.parent() else {
        panic!(
            "DEP_TCH_LIBTORCH_LIB ({}) has no parent folder",
            lib_dir.display()
        );
    };
    // Exported for dependents' build scripts (DEP_ASYMVALLEY_CSRC): the shared kernel headers.
    let csrc = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("csrc");
    println!("cargo:csrc={}", csrc.display());

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .include(torch_root.join("include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false)
        .opt_level(2);
    for name in ["foreach.cpp", "torchscript.cpp"] {
        build.file(csrc.join(name));
    }
    build.compile("asymvalley_core_cxx");

    // The fused update's CPU pass (csrc/fused): its own build so that the kernel headers it
    // shares with the CUDA source stay apart from the shim's files.
    // `-fopenmp`: `at::parallel_for` is a header template whose threads come from an
    // `#pragma omp parallel` compiled into the caller (libtorch is built with OpenMP); without the
    // flag the pragma is ignored and the pass runs on one thread. The runtime is the libgomp.so.1
    // that libtorch_cpu itself loads (from libtorch's folder, by its soname), so the pass shares
    // torch's thread pool and `torch.set_num_threads`.
    let mut fused = cc::Build::new();
    fused
        .cpp(true)
        .std("c++17")
        .include(torch_root.join("include"))
        .include(csrc.join("fused"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag("-fopenmp")
        .warnings(false)
        .opt_level(3)
        .file(csrc.join("fused").join("cpu.cpp"))
        .compile("asymvalley_fused_cpu");

    let lib = lib_dir.display();
    println!("cargo:rustc-link-search=native={lib}");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    // libtorch ships libgomp.so.1 without a libgomp.so link: named verbatim.
    println!("cargo:rustc-link-lib=dylib:+verbatim=libgomp.so.1");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
}
