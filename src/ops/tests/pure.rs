//! The op library's pure Rust, compiled on its own with its unit tests: the types shared with C++
//! (`abi.rs`) and the `Averager` class's rule (`rule.rs`). The library is a cdylib, which no test
//! binary can link, so the two files are included here by path; `crate::abi` then resolves to
//! this crate's copy, exactly as it does in the library.
#[allow(dead_code)]
#[path = "../src/abi.rs"]
mod abi;
#[allow(dead_code)]
#[path = "../src/rule.rs"]
mod rule;
#[allow(dead_code)]
#[path = "../src/switch.rs"]
mod switch;
