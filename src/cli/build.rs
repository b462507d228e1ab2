//! Build script of the application: an rpath to libtorch for the binary, tests and benches
//! (tch's own does not reach them), and `libtorch_cuda` kept in the binary's and benches'
//! DT_NEEDED, because `--as-needed` drops it and `tch::Cuda::is_available()` would be false on
//! a GPU machine.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys must be a direct dependency so that DEP_TCH_LIBTORCH_LIB is set");
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    println!("cargo:rustc-link-arg-benches=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
}
