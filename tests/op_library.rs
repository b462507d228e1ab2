//! The op library from Rust: a TorchScript module saved by PyTorch (fixtures/scripted_averager.pt,
//! made by fixtures/make_scripted_averager.py) holds a `torch.classes.asymvalley.Averager` and calls
//! `torch.ops.asymvalley.swa_update_`. The ops are registered by loading the op library
//! `libasymvalley.so` into this process, as `torch.ops.load_library` does in Python (the Rust
//! library itself registers nothing, so there is exactly one TORCH_LIBRARY per process).
use std::sync::OnceLock;
use tch::{CModule, IValue, Kind, Tensor};

/// The op library built by `cargo build --release -p asymvalley-ops` (`make test` builds it
/// first); `ASYMVALLEY_LIBRARY` overrides the path.
fn op_library_path() -> std::path::PathBuf {
    match std::env::var_os("ASYMVALLEY_LIBRARY") {
        Some(p) => p.into(),
        None => concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/release/libasymvalley.so"
        )
        .into(),
    }
}

/// Loads the op library once for the whole test binary; the handle lives as long as the process.
fn register_ops() {
    static LIBRARY: OnceLock<libloading::Library> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let path = op_library_path();
        // SAFETY: loading runs the library's static initializers, which only register ops and
        // classes with the dispatcher of the libtorch this process already links.
        unsafe { libloading::Library::new(&path) }
            .unwrap_or_else(|e| panic!("load {} (build it with `make oplib`): {e}", path.display()))
    });
}

fn tensors(v: IValue) -> Vec<Tensor> {
    match v {
        IValue::TensorList(ts) => ts,
        IValue::GenericList(vs) => vs
            .into_iter()
            .map(|v| match v {
                IValue::Tensor(t) => t,
                other => panic!("expected tensors, got {other:?}"),
            })
            .collect(),
        other => panic!("expected a tensor list, got {other:?}"),
    }
}

fn load() -> CModule {
    register_ops();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/scripted_averager.pt"
    );
    CModule::load(path).expect("fixtures/scripted_averager.pt loads (the ops are registered)")
}

#[test]
fn scripted_averager_from_pytorch_continues_the_average() {
    let module = load();
    let seen = tensors(module.method_is::<IValue>("snapshots", &[]).unwrap());
    assert_eq!(seen.len(), 6, "3 snapshots of 2 tensors");
    tch::manual_seed(7);
    let new = [
        Tensor::randn([3, 4], (Kind::Float, tch::Device::Cpu)),
        Tensor::randn([5], (Kind::Float, tch::Device::Cpu)),
    ];
    let n = module
        .method_is(
            "update",
            &[IValue::TensorList(
                new.iter().map(|t| t.shallow_clone()).collect(),
            )],
        )
        .unwrap();
    assert!(
        matches!(n, IValue::Int(4)),
        "n_averaged after the 4th update: {n:?}"
    );
    let avg = tensors(module.method_is::<IValue>("average", &[]).unwrap());
    for (i, a) in avg.iter().enumerate() {
        let all: Vec<Tensor> = (0..3)
            .map(|s| seen[2 * s + i].shallow_clone())
            .chain([new[i].shallow_clone()])
            .collect();
        let mean = Tensor::stack(&all, 0).mean_dim(0, false, Kind::Float);
        assert!(
            a.allclose(&mean, 1e-6, 1e-6, false),
            "tensor {i}: {a:?} vs {mean:?}"
        );
    }
}

#[test]
fn scripted_swa_op_runs_from_rust() {
    let module = load();
    let avg = [Tensor::zeros([2], (Kind::Float, tch::Device::Cpu))];
    let p1 = Tensor::from_slice(&[1.0f32, 2.0]);
    let p2 = Tensor::from_slice(&[3.0f32, 6.0]);
    let n = Tensor::from(0i64);
    for p in [&p1, &p2] {
        module
            .method_is(
                "swa",
                &[
                    IValue::TensorList(avg.iter().map(|t| t.shallow_clone()).collect()),
                    IValue::TensorList(vec![p.shallow_clone()]),
                    IValue::Tensor(n.shallow_clone()),
                ],
            )
            .unwrap();
    }
    assert_eq!(n.int64_value(&[]), 2);
    assert!(avg[0].equal(&Tensor::from_slice(&[2.0f32, 4.0])));
    // A bad call is a Rust error, not a crash.
    let err = module
        .method_is(
            "swa",
            &[
                IValue::TensorList(avg.iter().map(|t| t.shallow_clone()).collect()),
                IValue::TensorList(vec![]),
                IValue::Tensor(n.shallow_clone()),
            ],
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("params has 0 tensors but avg has 1"),
        "{err}"
    );
}
