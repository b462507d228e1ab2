//! Build script: compiles the C++ shim (fused `at::_foreach_*` kernels and the TorchScript op
//! registrations) and gives every artifact an rpath to libtorch.
//!
//! Why each step (see `../shared/design/BUILD.md`):
//! - tch's own rpath does not reach our binaries, so we print one for every artifact.
//! - the shim is linked `+whole-archive`, otherwise the linker drops the object holding
//!   `TORCH_LIBRARY` and `torch.ops.load_library` succeeds with no ops registered.
//! - binaries that must see CUDA link `libtorch_cuda` explicitly, because `--as-needed` drops it.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/csrc");
    println!("cargo:rerun-if-changed=build.rs");
    let lib_dir = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys must be a direct dependency so that DEP_TCH_LIBTORCH_LIB is set");
    let lib_dir = PathBuf::from(lib_dir);
    let torch_root = lib_dir
        .parent()
        .expect("DEP_TCH_LIBTORCH_LIB has a parent folder")
        .to_path_buf();

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .include(torch_root.join("include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false)
        .opt_level(2)
        .link_lib_modifier("+whole-archive");
    for entry in std::fs::read_dir("src/csrc").expect("src/csrc exists") {
        let path = entry.expect("readable src/csrc entry").path();
        if path.extension().is_some_and(|e| e == "cpp") {
            build.file(&path);
        }
    }
    build.compile("asymvalley_shim");

    let lib = lib_dir.display();
    println!("cargo:rustc-link-search=native={lib}");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // Binaries and benches may run on a GPU machine: keep libtorch_cuda in their DT_NEEDED.
    println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    println!("cargo:rustc-link-arg-benches=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
}
