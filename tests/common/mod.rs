//! Shared test helpers: building VarStores with known variables, f64 reference reads.
#![allow(dead_code)]
use tch::{nn, Device, Kind, Tensor};

/// A VarStore with trainable variables `names[i]` of `shapes[i]` in `kind`, plus optionally a
/// float buffer `bn.running_mean` and an int64 buffer `bn.num_batches_tracked`.
pub fn var_store(shapes: &[Vec<i64>], kind: Kind, with_buffers: bool) -> nn::VarStore {
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    for (i, shape) in shapes.iter().enumerate() {
        let _ = root.add(
            &format!("p{i:02}"),
            Tensor::zeros(shape.as_slice(), (kind, Device::Cpu)),
            true,
        );
    }
    if with_buffers {
        let bn = root.sub("bn");
        let _ = bn.add(
            "running_mean",
            Tensor::zeros([3], (kind, Device::Cpu)),
            false,
        );
        let _ = bn.add(
            "num_batches_tracked",
            Tensor::zeros([], (Kind::Int64, Device::Cpu)),
            false,
        );
    }
    vs
}

/// Sets every variable of `vs` to a fresh random draw (ints: a random integer), returns f64 copies by name.
pub fn randomize(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (_, t) in &vars {
            let mut t = t.shallow_clone();
            if t.is_floating_point() {
                t.copy_(&Tensor::randn(t.size(), (Kind::Double, Device::Cpu)));
            } else {
                t.copy_(&Tensor::randint(1000, t.size(), (Kind::Int64, Device::Cpu)));
            }
        }
    });
    vars.into_iter()
        .map(|(n, t)| (n, t.to_kind(Kind::Double).copy()))
        .collect()
}

/// Max |a − b| as f64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// Sets every variable of `vs` from a private RNG seeded with `seed` (torch's global RNG is
/// shared by the test threads, so it cannot make two runs of a test see the same values).
pub fn randomize_seeded(vs: &nn::VarStore, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (_, t) in &vars {
            let values: Vec<f64> = (0..t.numel())
                .map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal) * 100.0)
                .collect();
            t.shallow_clone()
                .copy_(&Tensor::from_slice(&values).reshape(t.size()));
        }
    });
}
