//! The averaging rules against independent references: the arithmetic mean in f64, the EMA's
//! closed-form geometric weights, each warm-up's formula, the bias's affinity in β.
use crate::common::{max_abs_diff, randomize, var_store};
use asymvalley::average::{Action, Averager, AveragerConfig, EmaConfig, Rule, Warmup};
use proptest::prelude::*;
use tch::{Kind, Tensor};

fn snapshot_sequence(
    shapes: &[Vec<i64>],
    kind: Kind,
    config: AveragerConfig,
    steps: usize,
) -> (Averager, Vec<Vec<(String, Tensor)>>) {
    let vs = var_store(shapes, kind, true);
    let mut avg = Averager::new(&vs, config).unwrap();
    let mut snaps = Vec::new();
    for _ in 0..steps {
        snaps.push(randomize(&vs));
        avg.update(&vs).unwrap();
    }
    (avg, snaps)
}

/// Variable `name` of a snapshot.
fn get<'a>(snap: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &snap.iter().find(|(n, _)| n == name).unwrap().1
}

/// The arithmetic mean of snapshots `from..` of variable `name`, in f64.
fn mean_of(snaps: &[Vec<(String, Tensor)>], name: &str) -> Tensor {
    mean_of_refs(&snaps.iter().collect::<Vec<_>>(), name)
}

fn mean_of_refs(snaps: &[&Vec<(String, Tensor)>], name: &str) -> Tensor {
    let picked: Vec<Tensor> = snaps
        .iter()
        .map(|s| s.iter().find(|(n, _)| n == name).unwrap().1.shallow_clone())
        .collect();
    Tensor::stack(&picked, 0).mean_dim(0, false, Kind::Double)
}

#[test]
fn swa_first_update_copies_exactly() {
    let (avg, snaps) = snapshot_sequence(&[vec![5, 7]], Kind::Float, AveragerConfig::swa(), 1);
    let want = get(&snaps[0], "p00").to_kind(Kind::Float);
    assert!(avg.averaged("p00").unwrap().equal(&want));
    assert_eq!(avg.n_averaged(), 1);
}

#[test]
fn swa_equals_arithmetic_mean_fp64() {
    let (avg, snaps) = snapshot_sequence(
        &[vec![4, 3], vec![11]],
        Kind::Double,
        AveragerConfig::swa(),
        50,
    );
    for name in ["p00", "p01"] {
        assert!(max_abs_diff(&avg.averaged(name).unwrap(), &mean_of(&snaps, name)) < 1e-13);
    }
}

#[test]
fn ema_equals_closed_form_geometric_weights() {
    // First update copies θ₀; after k more, w̄ = d^k θ₀ + Σ_{j=1..k} (1−d) d^{k−j} θ_j.
    let d = 0.9;
    let (avg, snaps) = snapshot_sequence(&[vec![6]], Kind::Double, AveragerConfig::ema(d), 25);
    let k = snaps.len() - 1;
    let mut want = get(&snaps[0], "p00") * d.powi(k as i32);
    for (j, snap) in snaps.iter().enumerate().skip(1) {
        want += get(snap, "p00") * ((1.0 - d) * d.powi((k - j) as i32));
    }
    assert!(max_abs_diff(&avg.averaged("p00").unwrap(), &want) < 1e-12);
}

#[test]
fn warmups_equal_their_formulas_at_many_steps() {
    let tf = EmaConfig {
        decay: 0.999,
        warmup: Warmup::TfStyle,
    };
    let pw = EmaConfig {
        decay: 0.9999,
        warmup: Warmup::Power {
            gamma: 1.0,
            power: 2.0 / 3.0,
            min_decay: 0.1,
        },
    };
    for t in [0u64, 1, 2, 5, 10, 99, 1000, 12345, 10_000_000] {
        let x = t as f64;
        assert_eq!(
            tf.decay_at(t),
            f64::min(0.999, (1.0 + x) / (10.0 + x)),
            "tf t={t}"
        );
        let raw = 1.0 - (1.0 + x).powf(-2.0 / 3.0);
        assert_eq!(pw.decay_at(t), raw.clamp(0.1, 0.9999), "power t={t}");
    }
    // The clamp is active at both ends: t=0 gives min_decay, huge t gives decay.
    assert_eq!(pw.decay_at(0), 0.1);
    assert_eq!(pw.decay_at(u64::MAX / 2), 0.9999);
}

#[test]
fn ema_warmup_drives_the_averager() {
    // With a power warm-up, the average after two updates is lerp(θ₀, θ₁, 1 − decay_at(1)).
    let ema = EmaConfig {
        decay: 0.999,
        warmup: Warmup::Power {
            gamma: 1.0,
            power: 0.75,
            min_decay: 0.0,
        },
    };
    let config = AveragerConfig {
        rule: Rule::Ema(ema),
        ..AveragerConfig::swa()
    };
    let (avg, snaps) = snapshot_sequence(&[vec![3]], Kind::Double, config, 2);
    let d = 1.0 - 2f64.powf(-0.75);
    let want = get(&snaps[0], "p00") * d + get(&snaps[1], "p00") * (1.0 - d);
    assert!(max_abs_diff(&avg.averaged("p00").unwrap(), &want) < 1e-14);
}

#[test]
fn update_after_step_and_every_follow_their_schedule() {
    // SWA from call 3 every 2 calls: snapshots 3, 5, 7 are averaged; the rest ignored.
    let config = AveragerConfig {
        update_after_step: 3,
        update_every: 2,
        ..AveragerConfig::swa()
    };
    let (avg, snaps) = snapshot_sequence(&[vec![4]], Kind::Double, config, 8);
    let want = mean_of_refs(&[&snaps[3], &snaps[5], &snaps[7]], "p00");
    assert!(max_abs_diff(&avg.averaged("p00").unwrap(), &want) < 1e-14);
    assert_eq!((avg.steps(), avg.n_averaged()), (8, 3));
    // An EMA mirrors the model before it starts (ema-pytorch semantics) and counts nothing.
    let ema = AveragerConfig {
        update_after_step: 3,
        ..AveragerConfig::ema(0.5)
    };
    assert_eq!(ema.action(0, 0), Action::Mirror);
    assert_eq!(ema.action(3, 0), Action::Copy);
}

#[test]
fn half_precision_models_still_move_with_decay_0_9999() {
    // A bf16 shadow would never move: (1−d)·|θ − w̄| is below half an ulp. The fp32 average does.
    for kind in [Kind::BFloat16, Kind::Half] {
        let vs = var_store(&[vec![8]], kind, false);
        let mut avg = Averager::new(&vs, AveragerConfig::ema(0.9999)).unwrap();
        let p = vs.variables()["p00"].shallow_clone();
        tch::no_grad(|| {
            let _ = p.shallow_clone().fill_(1.0);
        });
        avg.update(&vs).unwrap();
        tch::no_grad(|| {
            let _ = p.shallow_clone().fill_(1.5);
        });
        for _ in 0..10 {
            avg.update(&vs).unwrap();
        }
        let a = avg.averaged("p00").unwrap();
        assert_eq!(a.kind(), Kind::Float);
        let want = 1.0 + 0.5 * (1.0 - 0.9999f64.powi(10));
        assert!(
            (a.double_value(&[0]) - want).abs() < 1e-6,
            "{kind:?}: {}",
            a.double_value(&[0])
        );
        // And the same update kept in bf16 does not move: this is why the average is fp32.
        let shadow = Tensor::ones([1], (Kind::BFloat16, tch::Device::Cpu));
        let moved = shadow.lerp(
            &Tensor::full([1], 1.5, (Kind::BFloat16, tch::Device::Cpu)),
            1e-4,
        );
        assert_eq!(moved.double_value(&[0]), 1.0);
    }
}

#[test]
fn integer_buffers_are_copied_never_averaged() {
    for config in [
        AveragerConfig::swa(),
        AveragerConfig {
            average_buffers: true,
            ..AveragerConfig::ema(0.9)
        },
    ] {
        let (avg, snaps) = snapshot_sequence(&[vec![2]], Kind::Float, config, 5);
        let last = &snaps
            .last()
            .unwrap()
            .iter()
            .find(|(n, _)| n == "bn.num_batches_tracked")
            .unwrap()
            .1;
        let got = avg.averaged("bn.num_batches_tracked").unwrap();
        assert_eq!(got.kind(), Kind::Int64);
        assert_eq!(got.int64_value(&[]), last.double_value(&[]) as i64);
    }
}

#[test]
fn float_buffers_are_averaged_only_when_asked() {
    let (copied, snaps) = snapshot_sequence(&[vec![2]], Kind::Double, AveragerConfig::swa(), 6);
    let last = snaps
        .last()
        .unwrap()
        .iter()
        .find(|(n, _)| n == "bn.running_mean")
        .unwrap()
        .1
        .shallow_clone();
    assert!(max_abs_diff(&copied.averaged("bn.running_mean").unwrap(), &last) == 0.0);
    let config = AveragerConfig {
        average_buffers: true,
        ..AveragerConfig::swa()
    };
    let (averaged, snaps) = snapshot_sequence(&[vec![2]], Kind::Double, config, 6);
    assert!(
        max_abs_diff(
            &averaged.averaged("bn.running_mean").unwrap(),
            &mean_of(&snaps, "bn.running_mean")
        ) < 1e-14
    );
}

#[test]
fn bias_with_beta_zero_is_the_average_and_is_affine_in_beta() {
    let vs = var_store(&[vec![5], vec![2, 2]], Kind::Double, false);
    let mut avg = Averager::new(&vs, AveragerConfig::swa()).unwrap();
    for _ in 0..4 {
        randomize(&vs);
        avg.update(&vs).unwrap();
    }
    let anchor = randomize(&vs); // the "last SGD iterate"
    let write = |beta: f64| -> Vec<Tensor> {
        for (n, t) in &anchor {
            tch::no_grad(|| vs.variables()[n].shallow_clone().copy_(t));
        }
        avg.write_biased(&vs, beta).unwrap();
        anchor
            .iter()
            .map(|(n, _)| vs.variables()[n].to_kind(Kind::Double).copy())
            .collect()
    };
    let (w0, w1, w25) = (write(0.0), write(1.0), write(2.5));
    for (i, (n, a)) in anchor.iter().enumerate() {
        let mean = avg.averaged(n).unwrap();
        assert!(max_abs_diff(&w0[i], &mean) < 1e-15);
        // w̃(β) = w̄ + β(w̄ − anchor), checked at β = 1 and β = 2.5 from the reference formula.
        assert!(max_abs_diff(&w1[i], &(&mean + (&mean - a))) < 1e-13);
        assert!(max_abs_diff(&w25[i], &(&mean + (&mean - a) * 2.5)) < 1e-13);
    }
    assert!(avg.write_biased(&vs, -0.5).is_err());
}

#[test]
fn swap_in_and_out_restore_the_model_exactly() {
    let vs = var_store(&[vec![3, 3]], Kind::Float, true);
    let mut avg = Averager::new(&vs, AveragerConfig::swa()).unwrap();
    for _ in 0..3 {
        randomize(&vs);
        avg.update(&vs).unwrap();
    }
    let before: Vec<Tensor> = {
        let v = vs.variables();
        let mut names: Vec<&String> = v.keys().collect();
        names.sort();
        names.into_iter().map(|n| v[n].copy()).collect()
    };
    avg.swap_in(&vs).unwrap();
    assert!(vs.variables()["p00"].equal(&avg.averaged("p00").unwrap()));
    assert!(
        avg.update(&vs).is_err(),
        "updating while swapped in would average the average"
    );
    avg.swap_out(&vs).unwrap();
    let v = vs.variables();
    let mut names: Vec<&String> = v.keys().collect();
    names.sort();
    for (n, b) in names.into_iter().zip(&before) {
        assert!(v[n].equal(b), "{n} not restored");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha, ..ProptestConfig::default() })]

    /// SWA over any shapes and sequence length equals the f64 arithmetic mean of the snapshots
    /// (fp32 storage: relative error bounded by a few ulps times the sequence length).
    #[test]
    fn swa_mean_holds_for_random_shapes(
        shapes in proptest::collection::vec(proptest::collection::vec(1i64..6, 0..4), 1..5),
        steps in 1usize..30,
        seed in 0i64..1000,
    ) {
        tch::manual_seed(seed);
        let (avg, snaps) = snapshot_sequence(&shapes, Kind::Float, AveragerConfig::swa(), steps);
        for i in 0..shapes.len() {
            let name = format!("p{i:02}");
            let err = max_abs_diff(&avg.averaged(&name).unwrap(), &mean_of(&snaps, &name));
            prop_assert!(err < 1e-5 * steps as f64, "{name}: {err}");
        }
    }

    /// EMA with any decay equals its closed form.
    #[test]
    fn ema_closed_form_holds_for_random_decays(decay in 0.01f64..0.999, steps in 1usize..20, seed in 0i64..1000) {
        tch::manual_seed(seed);
        let (avg, snaps) = snapshot_sequence(&[vec![4]], Kind::Double, AveragerConfig::ema(decay), steps);
        let k = steps - 1;
        let mut want = get(&snaps[0], "p00") * decay.powi(k as i32);
        for (j, snap) in snaps.iter().enumerate().take(k + 1).skip(1) {
            want += get(snap, "p00") * ((1.0 - decay) * decay.powi((k - j) as i32));
        }
        prop_assert!(max_abs_diff(&avg.averaged("p00").unwrap(), &want) < 1e-12);
    }
}

/// The power warm-up at several γ and p against `1 − (1 + t/γ)^(−p)` written out here; each
/// case also checks that the swapped reading `1 − (1 + tγ)^(−p)` would be told apart, so a
/// γ ↔ 1/γ mix-up cannot pass.
#[test]
fn power_warmup_matches_its_formula_at_several_gamma_and_p() {
    for gamma in [0.1, 0.5, 2.0, 10.0, 1000.0] {
        for power in [0.5, 2.0 / 3.0, 0.75, 1.5] {
            let ema = EmaConfig {
                decay: 1.0 - 1e-12,
                warmup: Warmup::Power {
                    gamma,
                    power,
                    min_decay: 0.0,
                },
            };
            for t in [1u64, 3, 10, 100, 1000] {
                let x = t as f64;
                let want = 1.0 - (1.0 + x / gamma).powf(-power);
                let inverted = 1.0 - (1.0 + x * gamma).powf(-power);
                let got = ema.decay_at(t);
                assert!(
                    (got - want).abs() <= 1e-15,
                    "γ={gamma} p={power} t={t}: {got} vs {want}"
                );
                if t == 10 {
                    assert!(
                        (inverted - want).abs() > 1e-4,
                        "γ={gamma} p={power}: the test cannot tell γ from 1/γ"
                    );
                }
            }
        }
    }
    // Through the averager: the second update lerps with weight 1 − decay_at(1) = (1 + 1/γ)^(−p).
    for (gamma, power) in [(10.0, 0.5), (0.25, 1.5)] {
        let config = AveragerConfig {
            rule: Rule::Ema(EmaConfig {
                decay: 0.9999,
                warmup: Warmup::Power {
                    gamma,
                    power,
                    min_decay: 0.0,
                },
            }),
            ..AveragerConfig::swa()
        };
        let (avg, snaps) = snapshot_sequence(&[vec![5]], Kind::Double, config, 2);
        let w = (1.0 + 1.0 / gamma).powf(-power);
        let want = get(&snaps[0], "p00") * (1.0 - w) + get(&snaps[1], "p00") * w;
        assert!(
            max_abs_diff(&avg.averaged("p00").unwrap(), &want) < 1e-14,
            "γ={gamma} p={power}"
        );
    }
}

/// The averager's whole state around `update_after_step` = 3: before it nothing (SWA) or a
/// mirror (EMA, ema-pytorch's semantics); the first averaging call copies exactly, counts one,
/// and copies the integer buffer; the next one lerps.
#[test]
fn state_right_after_update_after_step() {
    for ema in [false, true] {
        let config = AveragerConfig {
            update_after_step: 3,
            average_buffers: true,
            ..if ema {
                AveragerConfig::ema(0.75)
            } else {
                AveragerConfig::swa()
            }
        };
        let vs = var_store(&[vec![4]], Kind::Double, true);
        let mut avg = Averager::new(&vs, config).unwrap();
        let out = var_store(&[vec![4]], Kind::Double, true);
        let mut snaps = Vec::new();
        for call in 0..5u64 {
            snaps.push(randomize(&vs));
            avg.update(&vs).unwrap();
            let what = format!("ema={ema} after call {call}");
            let n_want = call.saturating_sub(2);
            assert_eq!(
                (avg.steps(), avg.n_averaged()),
                (call + 1, n_want),
                "{what}"
            );
            let filled = avg.copy_to(&out).is_ok();
            assert_eq!(filled, ema || call >= 3, "{what}: filled");
            if !filled {
                continue;
            }
            let s = &snaps[call as usize];
            // The copied integer buffer is the model's current one, always.
            let nbt = out.variables()["bn.num_batches_tracked"].shallow_clone();
            assert_eq!(
                nbt.int64_value(&[]),
                get(s, "bn.num_batches_tracked").double_value(&[]) as i64,
                "{what}: copy"
            );
            let got = out.variables()["p00"].shallow_clone();
            let want = if call <= 3 {
                // Mirror (EMA before the start) and the first averaging call: exact copies.
                get(s, "p00").shallow_clone()
            } else if ema {
                get(&snaps[3], "p00") * 0.75 + get(s, "p00") * 0.25
            } else {
                (get(&snaps[3], "p00") + get(s, "p00")) * 0.5
            };
            assert!(max_abs_diff(&got, &want) < 1e-14, "{what}: average");
            if call == 3 {
                assert!(got.equal(get(s, "p00")), "{what}: the first copy is exact");
            }
        }
    }
}
