//! Build script of the op library `libasymvalley.so`: compiles `csrc/` (schemas, kernels, Meta
//! kernels, the custom class) against the library's shared headers.
//!
//! - `+whole-archive`: otherwise the linker drops the objects that hold `TORCH_LIBRARY`, and
//!   `torch.ops.load_library` succeeds with no op registered.
//! - the `.so` links only libtorch_cpu and libc10 (never libtorch_cuda, libpython or
//!   libtorch_python), so it loads under any Python whose torch is 2.11.
//! - the rpath to the build machine's libtorch is for Rust tests only; Python loads the library
//!   after `import torch`, whose libtorch is then already in the process.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys must be a direct dependency so that DEP_TCH_LIBTORCH_LIB is set");
    };
    let Ok(core_csrc) = std::env::var("DEP_ASYMVALLEY_CSRC") else {
        panic!("the asymvalley library must be a direct dependency (DEP_ASYMVALLEY_CSRC)");
    };
    let lib_dir = PathBuf::from(lib_dir);
    let Some(torch_root) = lib_dir.parent() else {
        panic!(
            "DEP_TCH_LIBTORCH_LIB ({}) has no parent folder",
            lib_dir.display()
        );
    };

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .include(torch_root.join("include"))
        .include(&core_csrc)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false)
        .opt_level(2)
        .link_lib_modifier("+whole-archive");
    let Ok(entries) = std::fs::read_dir("csrc") else {
        panic!("src/ops/csrc is missing");
    };
    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        if path.extension().is_some_and(|e| e == "cpp") {
            build.file(&path);
        }
    }
    build.compile("asymvalley_ops_cxx");

    let lib = lib_dir.display();
    println!("cargo:rustc-link-search=native={lib}");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
