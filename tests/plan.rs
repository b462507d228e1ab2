//! The fused-update plan's indexing (`asymvalley::plan::Layout`): every element of every tensor is
//! covered by exactly one block, each segment begins at an aligned tensor offset, and small tensors
//! are packed. Checked over the real model shapes of fixtures/param_shapes.json and adversarial
//! sizes (0 and 1 element, tails, 2^31+ elements).
//!
//! Oracle: coverage is checked from the definition, independently of how the layout computes it:
//! per tensor, the segments of all blocks, sorted by offset, must tile `[0, size)` with no gap and
//! no overlap (exact for any size, so it also covers 2^31+ elements without materialising them);
//! for small cases an element-by-element count must be exactly 1 everywhere.
use asymvalley::plan::Layout;
use asymvalley::Error;

/// (block_elems, align) pairs: the kernel's default shape, a wider vector, and degenerate ones.
const SHAPES: [(u64, u64); 5] = [(4096, 4), (1024, 8), (4, 4), (3, 1), (1, 1)];

fn model_sizes() -> Vec<(String, Vec<u64>)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/param_shapes.json"
    );
    let text = std::fs::read_to_string(path).expect("fixtures/param_shapes.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let models = v.as_object().expect("an object of models");
    models
        .iter()
        .map(|(name, shapes)| {
            let sizes = shapes
                .as_array()
                .expect("a list of shapes")
                .iter()
                .map(|s| {
                    s.as_array()
                        .expect("a shape")
                        .iter()
                        .map(|d| d.as_u64().expect("a dimension"))
                        .product::<u64>()
                })
                .collect();
            (name.clone(), sizes)
        })
        .collect()
}

/// Checks coverage by interval tiling, alignment, block bounds and the packing bound.
fn check_tiling(sizes: &[u64], block: u64, align: u64) {
    let l = Layout::new(sizes, block, align).expect("valid layout");
    let mut per_tensor: Vec<Vec<(u64, u64)>> = vec![Vec::new(); sizes.len()];
    for b in 0..l.blocks() {
        let mut used = 0u64;
        let mut last = None;
        for s in l.segments(b) {
            assert!(s.len >= 1, "empty segment in block {b}");
            assert_eq!(s.offset % align, 0, "block {b}: unaligned offset {s:?}");
            assert!(
                last.map_or(true, |t| s.tensor > t),
                "block {b}: tensor order"
            );
            last = Some(s.tensor);
            used += s.len;
            per_tensor[s.tensor as usize].push((s.offset, s.len));
        }
        assert!(used <= block, "block {b} holds {used} > {block} elements");
        assert!(used >= 1, "block {b} has no work");
    }
    assert!(l.segments(l.blocks()).next().is_none(), "past the end");
    for (t, segs) in per_tensor.iter_mut().enumerate() {
        segs.sort_unstable();
        let mut next = 0u64;
        for &(off, len) in segs.iter() {
            assert_eq!(
                off, next,
                "tensor {t}: gap or overlap at {off} (expected {next})"
            );
            next = off + len;
        }
        assert_eq!(next, sizes[t], "tensor {t}: covered {next} of {}", sizes[t]);
    }
    // Packing: at most align-1 padding per tensor, nothing else wasted.
    let elems: u64 = sizes.iter().sum();
    let bound = (elems + sizes.len() as u64 * (align - 1)).div_ceil(block);
    assert!(l.blocks() <= bound, "{} blocks > bound {bound}", l.blocks());
    assert!(
        l.blocks() >= elems.div_ceil(block),
        "fewer blocks than elements allow"
    );
}

/// Element by element: each element of each tensor is counted exactly once.
fn check_elements(sizes: &[u64], block: u64, align: u64) {
    let l = Layout::new(sizes, block, align).expect("valid layout");
    let mut count: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n as usize]).collect();
    for b in 0..l.blocks() {
        for s in l.segments(b) {
            for i in s.offset..s.offset + s.len {
                count[s.tensor as usize][i as usize] += 1;
            }
        }
    }
    for (t, c) in count.iter().enumerate() {
        if let Some(i) = c.iter().position(|&k| k != 1) {
            panic!("tensor {t} element {i} covered {} times", c[i]);
        }
    }
}

#[test]
fn real_models_every_element_once() {
    let models = model_sizes();
    assert_eq!(models.len(), 2, "resnet50 and vit_b_16");
    for (name, sizes) in &models {
        assert!(sizes.len() > 100, "{name}: {} tensors", sizes.len());
        for (block, align) in [(4096, 4), (1024, 8), (4096, 1)] {
            check_tiling(sizes, block, align);
        }
        check_elements(sizes, 4096, 4);
    }
}

#[test]
fn real_models_pack_small_tensors() {
    // ResNet-50 has about a hundred tensors of 64..2048 elements (BatchNorm, fc bias): with one
    // block per tensor it would need more blocks than elements / 4096 + tensors / 2.
    let models = model_sizes();
    let (_, sizes) = models
        .iter()
        .find(|(n, _)| n == "resnet50")
        .expect("resnet50");
    let l = Layout::new(sizes, 4096, 4).expect("valid layout");
    let per_tensor: u64 = sizes.iter().map(|&n| n.div_ceil(4096)).sum();
    let elems: u64 = sizes.iter().sum();
    assert_eq!(
        l.blocks(),
        elems.div_ceil(4096),
        "no padding is needed for these shapes"
    );
    assert!(
        l.blocks() + 90 < per_tensor,
        "{} blocks vs {per_tensor} for one-block-per-tensor",
        l.blocks()
    );
}

#[test]
fn adversarial_small_sizes_every_element_once() {
    let cases: Vec<Vec<u64>> = vec![
        vec![],
        vec![0],
        vec![1],
        vec![0, 0, 1, 0],
        vec![1; 1000],
        vec![4095, 4096, 4097, 1, 3, 5, 7, 8, 9],
        vec![5, 0, 0, 17, 0, 4],
        (1..200).collect(),
    ];
    for sizes in &cases {
        for (block, align) in SHAPES {
            check_tiling(sizes, block, align);
            check_elements(sizes, block, align);
        }
    }
    // Only zero-sized tensors: no block at all (no launch).
    for sizes in [vec![], vec![0, 0]] {
        assert_eq!(Layout::new(&sizes, 4096, 4).expect("valid").blocks(), 0);
    }
}

#[test]
fn beyond_2_pow_31_elements() {
    let big = (1u64 << 31) + 3;
    let cases = [
        vec![big],
        vec![7, big, 1, (1 << 31) - 1, 64],
        vec![(1u64 << 32) + 1, 5],
    ];
    for sizes in &cases {
        check_tiling(sizes, 1 << 16, 4);
    }
    let l = Layout::new(&[1, big, 1], 1 << 16, 4).expect("valid");
    // Tensor 2 starts past 2^31 in the virtual space, after padding tensor 1 to a multiple of 4.
    assert_eq!(l.starts(), &[0, 4, 4 + ((big + 3) & !3)]);
    assert!(l.total() > 1 << 31);
}

#[test]
fn bad_arguments_are_refused_by_name() {
    let cases: [(u64, u64, &str); 4] = [
        (4096, 3, "align"),
        (4096, 0, "align"),
        (0, 4, "block_elems"),
        (6, 4, "block_elems"),
    ];
    for (block, align, field) in cases {
        match Layout::new(&[10], block, align) {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("({block}, {align}): expected InvalidConfig({field}), got {other:?}"),
        }
    }
    match Layout::new(&[u64::MAX - 2, 5], 4096, 4) {
        Err(Error::InvalidConfig { field, value, .. }) => {
            assert_eq!(field, "sizes");
            assert!(value.contains("u64"), "{value}");
        }
        other => panic!("overflow: expected InvalidConfig(sizes), got {other:?}"),
    }
}

/// The CPU fused pass against libtorch itself (the independent oracle): `lerp`, `copy_`/`to_kind`
/// must agree bitwise, because the pass uses ATen's own formulas (fused multiply-adds); the bias,
/// which has no single torch op, against an fp64 reference within one rounding of the output.
/// Over ResNet-50's and ViT-B/16's real shapes, adversarial sizes (0, 1, tails) and values
/// (signed zeros, subnormals, values near the fp32 range), every source dtype, fp32 and fp64
/// averages, and weights on both sides of the formula's switch at ½.
mod cpu_pass {
    use asymvalley::plan::{apply_cpu, lerp_cpu, FusedOp, Layout};
    use asymvalley::Error;
    use tch::{Device, Kind, Tensor};

    const WEIGHTS: [f64; 7] = [0.0, 1e-4, 0.37, 0.5, 2.0 / 3.0, 0.9999, 1.0];

    fn pair(sizes: &[u64], avg_kind: Kind, src_kind: Kind) -> (Vec<Tensor>, Vec<Tensor>) {
        tch::manual_seed(15);
        let make = |kind: Kind, scale: f64| -> Vec<Tensor> {
            sizes
                .iter()
                .map(|&n| Tensor::randn([n as i64], (kind, Device::Cpu)) * scale)
                .collect()
        };
        let avg = make(avg_kind, 1.0);
        let mut src = make(src_kind, 3.0);
        // Adversarial values in the last tensor with at least 8 elements.
        if let Some(t) = src.iter_mut().rev().find(|t| t.numel() >= 8) {
            // Signed zeros, subnormals and values near the top of the source's range.
            let v = if src_kind == Kind::Half {
                [0.0, -0.0, 1e-7, -3e-6, 6e4, -6e4, 65000.0, 1e-4]
            } else {
                [0.0, -0.0, 1e-40, -1e-41, 3e38, -3e38, 65000.0, 1e-30]
            };
            let special = Tensor::from_slice(&v).to_kind(src_kind);
            t.narrow(0, 0, 8).copy_(&special);
        }
        (avg, src)
    }

    fn sizes_with_tails(model: &str) -> Vec<u64> {
        let models = super::model_sizes();
        let (_, shapes) = models.iter().find(|(n, _)| n == model).expect("model");
        let mut sizes = shapes.clone();
        sizes.extend([1, 3, 4097, 0, 5, 8, 4095, 33]);
        sizes
    }

    fn bitwise(got: &[Tensor], want: &[Tensor], what: &str) {
        for (t, (a, e)) in got.iter().zip(want).enumerate() {
            assert_eq!(a.kind(), e.kind(), "{what} tensor {t}: dtype");
            if !a.equal(e) {
                let diff = a.to_kind(Kind::Double) - e.to_kind(Kind::Double);
                let n = diff.ne(0.0).sum(Kind::Int64).int64_value(&[]);
                panic!("{what} tensor {t} ({} elements): {n} differ", a.numel());
            }
        }
    }

    /// ResNet-50's first 40 tensors (every kind of its shapes: conv, BatchNorm, downsample) and
    /// the tails: the cheap set for the full dtype x weight grid.
    fn small_sizes() -> Vec<u64> {
        let all = sizes_with_tails("resnet50");
        let n = all.len();
        all[..40].iter().chain(&all[n - 8..]).copied().collect()
    }

    #[test]
    fn lerp_equals_torch_lerp_bitwise() {
        let full = sizes_with_tails("resnet50");
        let small = small_sizes();
        for (avg_kind, src_kind, sizes, weights) in [
            (
                Kind::Float,
                Kind::Float,
                &full,
                &[1e-4, 0.37, 0.5, 0.9999][..],
            ),
            (Kind::Float, Kind::BFloat16, &full, &[1e-4, 0.9999][..]),
            (Kind::Float, Kind::Float, &small, &WEIGHTS[..]),
            (Kind::Float, Kind::BFloat16, &small, &WEIGHTS[..]),
            (Kind::Float, Kind::Half, &small, &WEIGHTS[..]),
            (Kind::Float, Kind::Double, &small, &WEIGHTS[..]),
            (Kind::Double, Kind::Double, &small, &WEIGHTS[..]),
            (Kind::Double, Kind::Float, &small, &WEIGHTS[..]),
            (Kind::Double, Kind::BFloat16, &small, &WEIGHTS[..]),
        ] {
            let layout = Layout::new(sizes, 4096, 4).expect("valid layout");
            let (avg0, src) = pair(sizes, avg_kind, src_kind);
            for &w in weights {
                let mut avg: Vec<Tensor> = avg0.iter().map(|a| a.copy()).collect();
                // The oracle: torch's own lerp on the source converted to the average's dtype
                // (exact for widening; fp64 -> fp32 rounds the source once, as the pass does).
                let want: Vec<Tensor> = avg0
                    .iter()
                    .zip(&src)
                    .map(|(a, s)| a.lerp(&s.to_kind(avg_kind), w))
                    .collect();
                lerp_cpu(&layout, &mut avg, &src, w).expect("valid call");
                bitwise(&avg, &want, &format!("{avg_kind:?}<-{src_kind:?} w={w}"));
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn has_avx2_fma() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn has_avx2_fma() -> bool {
        false
    }

    /// The variant in use is the forced one in the child, and AVX2+FMA on a CPU that has both.
    #[test]
    fn variant_is_the_one_asked_for() {
        let forced = std::env::var("ASYMVALLEY_FUSED_CPU").ok();
        let want = if forced.as_deref() == Some("baseline") {
            "baseline"
        } else if has_avx2_fma() {
            "avx2+fma"
        } else {
            "baseline"
        };
        assert_eq!(asymvalley::plan::cpu_variant(), want);
    }

    /// The baseline (non-AVX2) variant of the pass, forced in a child process (the variant is
    /// picked once per process), must pass the same bitwise tests.
    #[test]
    fn baseline_variant_is_bitwise_too() {
        if std::env::var_os("ASYMVALLEY_FUSED_CPU").is_some() {
            return; // already the child
        }
        let exe = std::env::current_exe().expect("test binary path");
        for test in [
            "plan::cpu_pass::variant_is_the_one_asked_for",
            "plan::cpu_pass::lerp_equals_torch_lerp_bitwise",
            "plan::cpu_pass::copies_equal_torch_conversions_bitwise",
            "plan::cpu_pass::bias_within_one_rounding_of_fp64",
        ] {
            let out = std::process::Command::new(&exe)
                .args([test, "--exact", "--test-threads=1"])
                .env("ASYMVALLEY_FUSED_CPU", "baseline")
                .output()
                .expect("child test run");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "{test} with the baseline variant:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn lerp_equals_torch_lerp_bitwise_on_vit() {
        let sizes = sizes_with_tails("vit_b_16");
        let layout = Layout::new(&sizes, 4096, 4).expect("valid layout");
        for src_kind in [Kind::Float, Kind::BFloat16] {
            let (avg0, src) = pair(&sizes, Kind::Float, src_kind);
            for w in [1e-3, 0.75] {
                let mut avg: Vec<Tensor> = avg0.iter().map(|a| a.copy()).collect();
                let want: Vec<Tensor> = avg0
                    .iter()
                    .zip(&src)
                    .map(|(a, s)| a.lerp(&s.to_kind(Kind::Float), w))
                    .collect();
                lerp_cpu(&layout, &mut avg, &src, w).expect("valid call");
                bitwise(&avg, &want, &format!("vit Float<-{src_kind:?} w={w}"));
            }
        }
    }

    #[test]
    fn copies_equal_torch_conversions_bitwise() {
        let sizes = small_sizes();
        let layout = Layout::new(&sizes, 4096, 4).expect("valid layout");
        for (avg_kind, model_kind) in [
            (Kind::Float, Kind::Float),
            (Kind::Float, Kind::BFloat16),
            (Kind::Float, Kind::Half),
            (Kind::Float, Kind::Double),
            (Kind::Double, Kind::Double),
            (Kind::Double, Kind::BFloat16),
        ] {
            let (avg, model) = pair(&sizes, avg_kind, model_kind);
            // Copy-in: avg <- model, as Tensor::to_kind rounds (or widens) it.
            let want: Vec<Tensor> = model.iter().map(|m| m.to_kind(avg_kind)).collect();
            let got: Vec<Tensor> = avg.iter().map(|a| a.copy()).collect();
            apply_cpu(&layout, FusedOp::CopyIn, &got, &model).expect("copy-in");
            bitwise(
                &got,
                &want,
                &format!("copy-in {avg_kind:?}<-{model_kind:?}"),
            );
            // Copy-out: model <- avg, rounded to the model's dtype (nearest even).
            let want: Vec<Tensor> = avg.iter().map(|a| a.to_kind(model_kind)).collect();
            let out: Vec<Tensor> = model.iter().map(|m| m.copy()).collect();
            apply_cpu(&layout, FusedOp::CopyOut, &avg, &out).expect("copy-out");
            bitwise(
                &out,
                &want,
                &format!("copy-out {avg_kind:?}->{model_kind:?}"),
            );
        }
    }

    #[test]
    fn bias_within_one_rounding_of_fp64() {
        let sizes = small_sizes();
        let layout = Layout::new(&sizes, 4096, 4).expect("valid layout");
        for (avg_kind, model_kind) in [
            (Kind::Float, Kind::Float),
            (Kind::Float, Kind::BFloat16),
            (Kind::Double, Kind::Double),
        ] {
            let (avg, anchor) = pair(&sizes, avg_kind, model_kind);
            let beta = 0.3;
            let out: Vec<Tensor> = anchor.iter().map(|m| m.copy()).collect();
            apply_cpu(&layout, FusedOp::Bias(beta), &avg, &out).expect("bias");
            // One rounding of the output's dtype: 2^-24 (fp32), 2^-8 (bf16), 2^-53 (fp64),
            // relative, plus the fp32 rounding of beta (an fp32 average computes with it).
            let (rel, beta_ref) = match (avg_kind, model_kind) {
                (Kind::Double, _) => (2f64.powi(-52), beta),
                (_, Kind::BFloat16) => (2f64.powi(-8), beta as f32 as f64),
                _ => (2f64.powi(-23), beta as f32 as f64),
            };
            for (t, ((o, a), c)) in out.iter().zip(&avg).zip(&anchor).enumerate() {
                if o.numel() == 0 {
                    continue;
                }
                let a64 = a.to_kind(Kind::Double);
                let c64 = c.to_kind(avg_kind).to_kind(Kind::Double);
                let want = &a64 + (&a64 - &c64) * beta_ref;
                let err = (o.to_kind(Kind::Double) - &want).abs();
                // The output's rounding, plus the fp32 rounding of avg - anchor scaled by beta.
                let bound = (want.abs() + (&a64 - &c64).abs() * beta_ref) * rel + 1e-44;
                let bad = err.gt_tensor(&bound).sum(Kind::Int64).int64_value(&[]);
                assert_eq!(
                    bad, 0,
                    "{avg_kind:?}/{model_kind:?} tensor {t}: {bad} elements off"
                );
            }
        }
    }

    #[test]
    fn first_update_copies_exactly() {
        let sizes = [64u64, 9408, 1, 7];
        let layout = Layout::new(&sizes, 4096, 4).expect("valid layout");
        let (mut avg, src) = pair(&sizes, Kind::Float, Kind::Float);
        lerp_cpu(&layout, &mut avg, &src, 1.0).expect("valid call");
        for (a, s) in avg.iter().zip(&src) {
            assert!(a.equal(s));
        }
    }

    #[test]
    fn refused_calls_change_nothing() {
        let sizes = [10u64, 20];
        let layout = Layout::new(&sizes, 4096, 4).expect("valid layout");
        let (avg, src) = pair(&sizes, Kind::Float, Kind::Float);
        let before: Vec<Tensor> = avg.iter().map(|a| a.copy()).collect();
        let check = |mut avg: Vec<Tensor>, src: &[Tensor], w: f64, what: &str| {
            let r = lerp_cpu(&layout, &mut avg, src, w);
            assert!(r.is_err(), "{what}: accepted");
            let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
            for (a, b) in avg.iter().zip(&before) {
                assert!(a.equal(b), "{what}: modified ({msg})");
            }
            msg
        };
        let copy = |v: &[Tensor]| v.iter().map(|a| a.copy()).collect::<Vec<_>>();
        let m = check(copy(&avg), &src, 1.5, "weight");
        assert!(m.contains("weight") && m.contains("1.5"), "{m}");
        let m = check(copy(&avg), &src[..1], 0.5, "length");
        assert!(m.contains("model") && m.contains('1'), "{m}");
        let mut wrong = copy(&src);
        wrong[1] = Tensor::zeros([21], (Kind::Float, Device::Cpu));
        let m = check(copy(&avg), &wrong, 0.5, "size");
        assert!(m.contains("model[1]") && m.contains("21"), "{m}");
        let mut half_avg = copy(&avg);
        half_avg[1] = avg[1].to_kind(Kind::BFloat16);
        let r = lerp_cpu(&layout, &mut half_avg, &src, 0.5);
        let m = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(m.contains("avg[1]") && m.contains("BFloat16"), "{m}");
        assert!(
            half_avg[0].equal(&before[0]),
            "avg[0] modified by a refused call"
        );
        let strided = Tensor::zeros([20, 2], (Kind::Float, Device::Cpu)).select(1, 0);
        let mut s2 = copy(&src);
        s2[1] = strided;
        let m = check(copy(&avg), &s2, 0.5, "contiguity");
        assert!(m.contains("contiguous"), "{m}");
        assert!(matches!(
            lerp_cpu(&layout, &mut copy(&avg), &src, f64::NAN),
            Err(Error::InvalidConfig {
                field: "weight",
                ..
            })
        ));
        let out = copy(&src);
        let r = apply_cpu(&layout, FusedOp::Bias(-1.0), &avg, &out);
        assert!(
            matches!(r, Err(Error::InvalidConfig { field: "beta", .. })),
            "{r:?}"
        );
        assert!(out[0].equal(&src[0]) && out[1].equal(&src[1]));
    }
}

/// The Rust `Averager` on the fused plan: results against an fp64 reference (SWA) and against
/// torch's own `lerp_` sequence bitwise (EMA), while the model's storage is swapped under it
/// (`set_data`, `VarStore::copy`, a non-contiguous replacement): the plan is rebuilt exactly when
/// a pointer, size or contiguity changes, falls back when it cannot run, and never reads a stale
/// pointer (the average would then miss the new values).
mod averager_plan {
    use asymvalley::average::{Averager, AveragerConfig};
    use asymvalley::plan::fused::{FusedPlan, Ineligible};
    use asymvalley::plan::FusedOp;
    use asymvalley::Error;
    use tch::{nn, Device, Kind, Tensor};

    const SHAPES: [(&str, &[i64]); 5] = [
        ("a", &[64, 3, 7, 7]),
        ("b", &[64]),
        ("c", &[1]),
        ("d", &[10, 2048]),
        ("e", &[5]),
    ];

    fn model() -> nn::VarStore {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        for (name, shape) in SHAPES {
            let _ = vs.root().randn(name, shape, 0.0, 1.0);
        }
        vs
    }

    fn var(vs: &nn::VarStore, name: &str) -> Tensor {
        vs.variables().remove(name).expect("variable")
    }

    fn fill_random(vs: &nn::VarStore) {
        tch::no_grad(|| {
            for (_, mut t) in vs.variables() {
                let r = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)).to_kind(t.kind());
                t.copy_(&r);
            }
        });
    }

    #[test]
    fn swa_follows_storage_changes_and_matches_f64() {
        let mut vs = model();
        let mut swa = Averager::new(&vs, AveragerConfig::swa()).expect("averager");
        let mut sums: Vec<Tensor> = SHAPES
            .iter()
            .map(|(_, s)| Tensor::zeros(*s, (Kind::Double, Device::Cpu)))
            .collect();
        let mut expected_builds = 1;
        // Every replaced tensor is kept alive, so the allocator cannot hand its address to the
        // next fresh tensor: a fresh tensor at a previous plan's very address is (rightly) not a
        // rebuild, which would make the counts below depend on the allocator.
        let mut replaced: Vec<Tensor> = Vec::new();
        for k in 0..7u32 {
            fill_random(&vs);
            match k {
                // New storage for `d` (and `b`): the plan must follow, or it averages stale memory.
                2 => {
                    for name in ["d", "b"] {
                        let mut t = var(&vs, name);
                        let fresh = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) + 10.0;
                        replaced.push(t.detach());
                        tch::no_grad(|| t.set_data(&fresh));
                    }
                    expected_builds += 1;
                }
                // In-place copy from another model: same storage, no rebuild.
                3 => {
                    let other = model();
                    fill_random(&other);
                    vs.copy(&other).expect("copy");
                }
                // A non-contiguous `d`: the fused pass cannot run, the update falls back.
                4 => {
                    let mut t = var(&vs, "d");
                    let fresh = Tensor::randn([2048, 10], (Kind::Float, Device::Cpu)).tr();
                    replaced.push(t.detach());
                    tch::no_grad(|| t.set_data(&fresh));
                }
                // Contiguous again (new storage): rebuilt.
                5 => {
                    let mut t = var(&vs, "d");
                    let fresh = Tensor::randn([10, 2048], (Kind::Float, Device::Cpu));
                    replaced.push(t.detach());
                    tch::no_grad(|| t.set_data(&fresh));
                    expected_builds += 1;
                }
                _ => {}
            }
            swa.update(&vs).expect("update");
            let (builds, fallback) = swa.storage().fused_status();
            if k == 4 {
                assert!(
                    matches!(fallback, Some(Ineligible::NotContiguous(_))),
                    "step {k}: {fallback:?}"
                );
            } else {
                assert_eq!(fallback, None, "step {k}");
            }
            assert_eq!(builds, expected_builds, "step {k}: plan builds");
            for ((name, _), sum) in SHAPES.iter().zip(sums.iter_mut()) {
                *sum += var(&vs, name).to_kind(Kind::Double);
                let want = &*sum / f64::from(k + 1);
                let got = swa.averaged(name).expect("averaged").to_kind(Kind::Double);
                let err = (&got - &want).abs().max().double_value(&[]);
                let scale = want.abs().max().double_value(&[]).max(1.0);
                assert!(
                    err <= 4e-6 * scale,
                    "step {k} `{name}`: max error {err} (scale {scale})"
                );
            }
        }
    }

    #[test]
    fn ema_of_bf16_model_equals_torch_lerp_sequence_bitwise() {
        let mut vs = model();
        vs.bfloat16();
        let decay = 0.9;
        let mut ema = Averager::new(&vs, AveragerConfig::ema(decay)).expect("averager");
        let mut reference: Vec<Tensor> = Vec::new();
        for k in 0..5 {
            fill_random(&vs);
            ema.update(&vs).expect("update");
            for (i, (name, _)) in SHAPES.iter().enumerate() {
                let p = var(&vs, name).to_kind(Kind::Float);
                if k == 0 {
                    reference.push(p);
                } else {
                    reference[i] = reference[i].lerp(&p, 1.0 - decay);
                }
                let got = ema.averaged(name).expect("averaged");
                assert_eq!(got.kind(), Kind::Float);
                assert!(got.equal(&reference[i]), "update {k} `{name}`");
            }
        }
        assert_eq!(ema.storage().fused_status(), (1, None));
        // Copy-out rounds to bf16 exactly as torch's conversion does.
        ema.copy_to(&vs).expect("copy_to");
        for (i, (name, _)) in SHAPES.iter().enumerate() {
            assert!(
                var(&vs, name).equal(&reference[i].to_kind(Kind::BFloat16)),
                "`{name}`"
            );
        }
    }

    #[test]
    fn write_biased_matches_f64_reference() {
        let vs = model();
        let mut swa = Averager::new(&vs, AveragerConfig::swa()).expect("averager");
        for _ in 0..3 {
            fill_random(&vs);
            swa.update(&vs).expect("update");
        }
        fill_random(&vs);
        let anchors: Vec<Tensor> = SHAPES.iter().map(|(n, _)| var(&vs, n).copy()).collect();
        let beta = 0.5;
        swa.write_biased(&vs, beta).expect("write_biased");
        for ((name, _), anchor) in SHAPES.iter().zip(&anchors) {
            let avg = swa.averaged(name).expect("averaged").to_kind(Kind::Double);
            let want = &avg + (&avg - anchor.to_kind(Kind::Double)) * beta;
            let got = var(&vs, name).to_kind(Kind::Double);
            let err = (&got - &want).abs().max().double_value(&[]);
            assert!(err <= 1e-5, "`{name}`: max error {err}");
        }
        assert_eq!(swa.storage().fused_status().1, None);
    }

    fn pairs(sizes: &[i64], kind: Kind) -> (Vec<Tensor>, Vec<Tensor>) {
        let avg = sizes
            .iter()
            .map(|&n| Tensor::zeros([n], (Kind::Float, Device::Cpu)))
            .collect();
        let model = sizes
            .iter()
            .map(|&n| Tensor::randn([n], (Kind::Float, Device::Cpu)).to_kind(kind))
            .collect();
        (avg, model)
    }

    #[test]
    fn plan_rebuilds_exactly_on_pointer_size_or_dtype_change() {
        let mut plan = FusedPlan::new();
        let (avg, mut model) = pairs(&[100, 1, 4097], Kind::Float);
        let run = |plan: &mut FusedPlan, avg: &[Tensor], model: &[Tensor]| {
            plan.apply(FusedOp::CopyIn, avg, model)
                .expect("valid call")
                .expect("eligible");
            for (a, m) in avg.iter().zip(model) {
                assert!(
                    a.equal(&m.to_kind(Kind::Float)),
                    "copy-in read the wrong data"
                );
            }
        };
        run(&mut plan, &avg, &model);
        run(&mut plan, &avg, &model);
        assert_eq!(plan.builds(), 1, "unchanged tensors: no rebuild");
        // New storage, same size and dtype.
        model[1] = Tensor::randn([1], (Kind::Float, Device::Cpu));
        run(&mut plan, &avg, &model);
        assert_eq!(plan.builds(), 2, "pointer change");
        // Same pointers reinterpreted? No: a dtype change always allocates; check it rebuilds.
        model[2] = model[2].to_kind(Kind::BFloat16);
        run(&mut plan, &avg, &model);
        assert_eq!(plan.builds(), 3, "dtype change");
        // A size change of a pair.
        let mut avg = avg;
        avg[0] = Tensor::zeros([7], (Kind::Float, Device::Cpu));
        model[0] = Tensor::randn([7], (Kind::Float, Device::Cpu));
        run(&mut plan, &avg, &model);
        assert_eq!(plan.builds(), 4, "size change");
        assert_eq!(
            plan.layout().map(|l| l.sizes().to_vec()),
            Some(vec![7, 1, 4097])
        );
    }

    #[test]
    fn plan_refusals_change_nothing() {
        let mut plan = FusedPlan::new();
        let (avg, model) = pairs(&[10, 20], Kind::Float);
        plan.apply(FusedOp::CopyIn, &avg, &model)
            .expect("valid")
            .expect("eligible");
        let before: Vec<Tensor> = avg.iter().map(|a| a.copy()).collect();
        let r = plan.apply(FusedOp::Lerp(2.0), &avg, &model);
        assert!(
            matches!(
                r,
                Err(Error::InvalidConfig {
                    field: "weight",
                    ..
                })
            ),
            "{r:?}"
        );
        let r = plan.apply(FusedOp::Lerp(0.5), &avg, &model[..1]);
        assert!(matches!(r, Err(Error::LengthMismatch { .. })), "{r:?}");
        // Mismatched sizes within a pair: not eligible, nothing written.
        let wrong = vec![
            model[0].shallow_clone(),
            Tensor::randn([21], (Kind::Float, Device::Cpu)),
        ];
        let r = plan
            .apply(FusedOp::Lerp(0.5), &avg, &wrong)
            .expect("valid call");
        assert!(matches!(r, Err(Ineligible::Dtype(1))), "{r:?}");
        // An integer model tensor: not eligible.
        let ints = vec![
            model[0].shallow_clone(),
            Tensor::zeros([20], (Kind::Int64, Device::Cpu)),
        ];
        let r = plan
            .apply(FusedOp::CopyIn, &avg, &ints)
            .expect("valid call");
        assert!(matches!(r, Err(Ineligible::Dtype(1))), "{r:?}");
        for (a, b) in avg.iter().zip(&before) {
            assert!(a.equal(b), "a refused call modified the average");
        }
        assert_eq!(plan.builds(), 1, "refusals do not replace the plan");
    }
}

/// The op library's plan cache ([`PlanCache`]) and the device-scalar entry
/// ([`FusedPlan::apply_with_device_scalar`]), on CPU tensors: the cache is device-agnostic (a
/// fingerprint of pointers, sizes, dtypes, devices), and on the CPU the scalar tensor is read on
/// the host, so both are exercised here; the CUDA launch reading it is the GPU run's.
mod plan_cache {
    use asymvalley::plan::fused::{check_device_scalar, FusedPlan};
    use asymvalley::plan::{FusedOp, PlanCache};
    use asymvalley::Error;
    use tch::{Device, Kind, Tensor};

    fn pairs(sizes: &[i64]) -> (Vec<Tensor>, Vec<Tensor>) {
        let opts = (Kind::Float, Device::Cpu);
        let avg = sizes.iter().map(|&n| Tensor::randn([n], opts)).collect();
        let model = sizes.iter().map(|&n| Tensor::randn([n], opts)).collect();
        (avg, model)
    }

    fn copies(ts: &[Tensor]) -> Vec<Tensor> {
        ts.iter().map(Tensor::copy).collect()
    }

    /// torch's own lerp of every pair: the oracle.
    fn lerped(avg: &[Tensor], model: &[Tensor], w: f64) -> Vec<Tensor> {
        avg.iter().zip(model).map(|(a, m)| a.lerp(m, w)).collect()
    }

    fn assert_equal(got: &[Tensor], want: &[Tensor], what: &str) {
        for (t, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(g.equal(w), "{what}: tensor {t} differs from torch.lerp");
        }
    }

    #[test]
    fn same_fingerprint_builds_once_changed_storage_rebuilds() {
        let mut cache = PlanCache::default();
        let (avg, mut model) = pairs(&[100, 1, 4097]);
        for step in 0..3 {
            let want = lerped(&avg, &model, 0.25);
            cache
                .apply(FusedOp::Lerp(0.25), &avg, &model, None)
                .expect("valid call")
                .expect("eligible");
            assert_equal(&avg, &want, &format!("step {step}"));
        }
        assert_eq!(cache.builds(), 1, "the same pairs reuse their plan");
        assert_eq!(cache.len(), 1);
        // New storage for one parameter (same size and dtype): a new plan, never the stale one.
        model[1] = Tensor::randn([1], (Kind::Float, Device::Cpu));
        let want = lerped(&avg, &model, 0.5);
        cache
            .apply(FusedOp::Lerp(0.5), &avg, &model, None)
            .expect("valid call")
            .expect("eligible");
        assert_equal(&avg, &want, "after the storage change");
        assert_eq!(cache.builds(), 2, "changed storage: one rebuild");
    }

    #[test]
    fn two_averages_keep_their_plans_and_the_oldest_is_evicted() {
        let mut cache = PlanCache::new(2);
        let (a, m) = pairs(&[10, 20]);
        let (b, n) = pairs(&[30]);
        for _ in 0..3 {
            for (avg, model) in [(&a, &m), (&b, &n)] {
                cache
                    .apply(FusedOp::CopyIn, avg, model, None)
                    .expect("valid")
                    .expect("eligible");
                assert_equal(avg, model, "copy-in");
            }
        }
        assert_eq!(cache.builds(), 2, "alternating averages: one plan each");
        let (c, o) = pairs(&[5]);
        cache
            .apply(FusedOp::CopyIn, &c, &o, None)
            .expect("valid")
            .expect("eligible");
        assert_eq!((cache.builds(), cache.len()), (3, 2), "capacity 2");
        // `a` was the least recently used: it was dropped, so using it again builds.
        cache
            .apply(FusedOp::CopyIn, &a, &m, None)
            .expect("valid")
            .expect("eligible");
        assert_eq!(cache.builds(), 4);
    }

    #[test]
    fn refused_and_ineligible_calls_add_no_plan_and_write_nothing() {
        let mut cache = PlanCache::default();
        let (avg, model) = pairs(&[10, 20]);
        let before = copies(&avg);
        let r = cache.apply(FusedOp::Lerp(1.5), &avg, &model, None);
        assert!(
            matches!(
                r,
                Err(Error::InvalidConfig {
                    field: "weight",
                    ..
                })
            ),
            "{r:?}"
        );
        let strided = vec![
            model[0].shallow_clone(),
            Tensor::randn([20, 2], (Kind::Float, Device::Cpu)).select(1, 0),
        ];
        let r = cache
            .apply(FusedOp::Lerp(0.5), &avg, &strided, None)
            .expect("valid");
        assert!(r.is_err(), "a non-contiguous model tensor is not eligible");
        assert_equal(&avg, &before, "refused calls");
        assert_eq!((cache.builds(), cache.len()), (0, 0));
    }

    #[test]
    fn a_host_scalar_tensor_gives_the_host_scalars_values() {
        let mut plan = FusedPlan::new();
        let (avg, model) = pairs(&[3, 4096, 4099]);
        for w in [0.0, 0.3, 0.5, 0.9, 1.0] {
            let want = lerped(&avg, &model, w);
            let weight = Tensor::from(w);
            assert_eq!(weight.kind(), Kind::Double);
            plan.apply_with_device_scalar(FusedOp::Lerp(f64::NAN), &avg, &model, &weight)
                .expect("valid")
                .expect("eligible");
            assert_equal(&avg, &want, &format!("weight {w}"));
        }
        // The bias: model <- avg + beta (avg - model), the closed form in fp64 (within fp32 rounding).
        let beta = 0.75;
        let want: Vec<Tensor> = avg
            .iter()
            .zip(&model)
            .map(|(a, m)| {
                let (a, m) = (a.to_kind(Kind::Double), m.to_kind(Kind::Double));
                &a + (&a - m) * beta
            })
            .collect();
        plan.apply_with_device_scalar(FusedOp::Bias(f64::NAN), &avg, &model, &Tensor::from(beta))
            .expect("valid")
            .expect("eligible");
        for (g, w) in model.iter().zip(&want) {
            let err = (g.to_kind(Kind::Double) - w).abs().max().double_value(&[]);
            assert!(err <= 1e-5, "bias: max error {err}");
        }
        assert_eq!(plan.builds(), 1, "the device-scalar entry shares the plan");
    }

    #[test]
    fn bad_scalar_tensors_are_refused_by_name_and_change_nothing() {
        let mut plan = FusedPlan::new();
        let (avg, model) = pairs(&[10, 20]);
        let before = copies(&avg);
        let cases: Vec<(FusedOp, Tensor, &str, &str)> = vec![
            (FusedOp::Lerp(0.0), Tensor::from(0.5f32), "weight", "Float"),
            (
                FusedOp::Lerp(0.0),
                Tensor::from_slice(&[0.5f64]),
                "weight",
                "1 dimensions",
            ),
            (FusedOp::Bias(0.0), Tensor::from(0.5f32), "beta", "Float"),
            (FusedOp::Lerp(0.0), Tensor::from(1.5f64), "weight", "1.5"),
            (FusedOp::Bias(0.0), Tensor::from(-1.0f64), "beta", "-1"),
            (FusedOp::CopyIn, Tensor::from(0.5f64), "op", "copy-in"),
        ];
        for (op, scalar, field, says) in cases {
            let r = plan.apply_with_device_scalar(op, &avg, &model, &scalar);
            match r {
                Err(e @ Error::InvalidConfig { .. }) => {
                    let text = e.to_string();
                    assert!(
                        matches!(e, Error::InvalidConfig { field: f, .. } if f == field),
                        "{op:?}: {text}"
                    );
                    assert!(text.contains(says), "{op:?}: {text} does not say {says}");
                }
                other => panic!("{op:?} with {scalar:?}: {other:?}"),
            }
        }
        assert_equal(&avg, &before, "refused calls");
        assert_eq!(plan.builds(), 0, "refusals build nothing");
    }

    #[test]
    fn a_scalar_on_another_device_is_refused_by_its_metadata() {
        // No GPU here: the check is on metadata only, so CUDA devices are named without one.
        let on = |d: Device| {
            check_device_scalar(
                FusedOp::Lerp(0.0),
                Some(Kind::Double),
                0,
                d,
                Some(Device::Cuda(0)),
            )
        };
        assert!(on(Device::Cuda(0)).is_ok());
        for d in [Device::Cpu, Device::Cuda(1)] {
            let e = on(d).expect_err("another device");
            let text = e.to_string();
            assert!(
                text.contains("weight") && text.contains("Cuda(0)"),
                "{text}"
            );
        }
        let e = check_device_scalar(FusedOp::Lerp(0.0), None, 0, Device::Cpu, None)
            .expect_err("undefined");
        assert!(e.to_string().contains("undefined"), "{e}");
    }
}

/// The CUDA launcher's host side, on a machine without a GPU: the exact source and options it
/// compiles with build through NVRTC (from the torch wheel) for sm_80 and sm_90 with an empty log,
/// and without a driver it says so and leaves the CPU path working.
mod cuda_host {
    use asymvalley::average::{Averager, AveragerConfig};
    use asymvalley::shim::cuda;
    use tch::{nn, Device};

    #[test]
    fn kernel_compiles_for_sm80_and_sm90_without_warnings() {
        let home = cuda::cuda_home().expect("the torch wheel's nvidia/cu13 (NVRTC) is installed");
        assert!(
            home.join("include").join("cuda_bf16.h").exists(),
            "{}",
            home.display()
        );
        for arch in [80, 90] {
            let c = cuda::compile(arch).unwrap_or_else(|e| panic!("sm_{arch}: {e}"));
            assert_eq!(c.log, "", "NVRTC warnings for sm_{arch}");
            // An ELF cubin holding the entry point.
            assert_eq!(&c.cubin[..4], b"\x7fELF", "sm_{arch}: not an ELF cubin");
            let name = cuda::KERNEL_NAME.as_bytes();
            assert!(
                c.cubin.windows(name.len()).any(|w| w == name),
                "sm_{arch}: {} missing from the cubin",
                cuda::KERNEL_NAME
            );
        }
        let opts = cuda::options(90, &home.join("include"));
        assert_eq!(opts[0], "--gpu-architecture=sm_90");
        assert!(opts.iter().any(|o| o == "--std=c++17"), "{opts:?}");
    }

    #[test]
    fn without_a_driver_the_launcher_says_so_and_cpu_is_unaffected() {
        if tch::Cuda::is_available() {
            return; // a GPU machine: benches/gpu/run.sh checks the launcher there.
        }
        let msg = cuda::available(0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("CUDA driver"), "{msg}");
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = vs.root().randn("w", &[3, 5], 0.0, 1.0);
        let mut swa = Averager::new(&vs, AveragerConfig::swa()).expect("averager");
        swa.update(&vs).expect("update");
        assert_eq!(swa.storage().fused_status(), (1, None));
    }
}
