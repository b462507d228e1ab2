//! The optimizer wrapper `asymvalley::optim::Averaging`: the train2.py schedule against the
//! values its README prints, averages against an f64 mean of the snapshots the schedule selects,
//! the annealed learning rate against SWALR's own recursion, bitwise resume, bad input.
use asymvalley::average::Rule;
use asymvalley::optim::{Anneal, Averaging, LrPolicy, Schedule, Unit};
use asymvalley::Error;
use tch::nn::{self, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

/// A least-squares problem `‖Xw − y‖²/n` in a fresh VarStore (fixed seed), with its data.
fn problem(seed: i64) -> (VarStore, Tensor, Tensor) {
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let _ = vs.root().randn_standard("w", &[5, 1]);
    let _ = vs.root().zeros("b", &[1]);
    let x = Tensor::randn([32, 5], (Kind::Float, Device::Cpu));
    let y = Tensor::randn([32, 1], (Kind::Float, Device::Cpu));
    (vs, x, y)
}

fn loss(vs: &VarStore, x: &Tensor, y: &Tensor) -> Tensor {
    let v = vs.variables();
    (x.matmul(&v["w"]) + &v["b"] - y).square().mean(Kind::Float)
}

fn sgd(vs: &VarStore) -> nn::Optimizer {
    nn::Sgd::default().build(vs, 0.05).unwrap()
}

fn steps(unit: Unit, start: u64, frequency: u64) -> Schedule {
    Schedule {
        unit,
        start,
        frequency,
        end: None,
    }
}

#[test]
fn train2_schedule_matches_the_official_readme_values() {
    // README run: 225 epochs, lr_init 0.1, swa_start 126, swa_lr 0.05.
    let (vs, _, _) = problem(0);
    let schedule = Schedule {
        unit: Unit::Epochs,
        start: 126,
        frequency: 1,
        end: Some(225),
    };
    let policy = LrPolicy::Train2 {
        lr: 0.1,
        swa_lr: 0.05,
    };
    let mut opt = Averaging::new(&vs, sgd(&vs), Rule::Swa, schedule, policy).unwrap();
    let printed = [
        (64u64, 0.099008),
        (80, 0.083135),
        (100, 0.063294),
        (113, 0.050397),
    ];
    let mut first_average = None;
    for e in 0..225u64 {
        let lr = opt.lr();
        if e <= 63 {
            assert_eq!(lr, 0.1, "epoch {e}");
        } else if e >= 114 {
            assert!((lr - 0.05).abs() < 1e-12, "epoch {e}: {lr}");
        }
        if let Some(&(_, want)) = printed.iter().find(|(pe, _)| *pe == e) {
            assert!((lr - want).abs() < 5e-7, "epoch {e}: {lr} vs {want}");
        }
        let before = opt.averager().n_averaged();
        opt.end_epoch(&vs).unwrap();
        if before == 0 && opt.averager().n_averaged() == 1 {
            first_average = Some(e);
        }
    }
    // train2.py averages the ends of epochs 125..=224: 100 snapshots.
    assert_eq!(first_average, Some(125));
    assert_eq!(opt.averager().n_averaged(), 100);
}

#[test]
fn averages_equal_the_f64_mean_of_the_scheduled_snapshots() {
    let (vs, x, y) = problem(1);
    let schedule = steps(Unit::Steps, 3, 2);
    let policy = LrPolicy::Keep { lr: 0.05 };
    let mut opt = Averaging::new(&vs, sgd(&vs), Rule::Swa, schedule, policy).unwrap();
    let mut snaps: Vec<Tensor> = Vec::new();
    for c in 1..=12u64 {
        let l = loss(&vs, &x, &y);
        opt.backward_step(&vs, &l).unwrap();
        // The snapshots train2.py's rule selects: c ≥ 3, (c − 3) % 2 == 0.
        if c >= 3 && (c - 3) % 2 == 0 {
            snaps.push(vs.variables()["w"].to_kind(Kind::Double));
        }
    }
    assert_eq!(snaps.len(), 5);
    assert_eq!(opt.averager().n_averaged(), 5);
    let want = Tensor::stack(&snaps, 0).mean_dim(0, false, Kind::Double);
    let got = opt.averager().averaged("w").unwrap().to_kind(Kind::Double);
    let err = (got - &want).abs().max().double_value(&[]);
    assert!(err < 1e-6, "max |avg − mean| = {err}");
}

/// torch.optim.swa_utils.SWALR.get_lr, step by step: it recovers the starting lr from the lr it
/// set last, `(lr − α_prev·swa_lr)/(1 − α_prev)`, then sets `swa_lr·α + lr0·(1 − α)`.
fn swalr_sequence(lr0: f64, swa_lr: f64, anneal: u64, shape: Anneal, n: u64) -> Vec<f64> {
    let f = |t: f64| match shape {
        Anneal::Cosine => (1.0 - (std::f64::consts::PI * t).cos()) / 2.0,
        Anneal::Linear => t,
    };
    let mut group_lr = lr0;
    let mut out = Vec::new();
    for step_count in 2..(n + 2) {
        let step = step_count - 1;
        let prev_t = ((step as f64 - 1.0) / anneal.max(1) as f64).clamp(0.0, 1.0);
        let prev_alpha = f(prev_t);
        let initial = if prev_alpha == 1.0 {
            swa_lr
        } else {
            (group_lr - prev_alpha * swa_lr) / (1.0 - prev_alpha)
        };
        let t = (step as f64 / anneal.max(1) as f64).clamp(0.0, 1.0);
        let alpha = f(t);
        group_lr = swa_lr * alpha + initial * (1.0 - alpha);
        out.push(group_lr);
    }
    out
}

#[test]
fn annealed_lr_follows_swalr_at_every_tick() {
    for shape in [Anneal::Cosine, Anneal::Linear] {
        let (vs, x, y) = problem(2);
        let (start, anneal) = (4u64, 5u64);
        let policy = LrPolicy::Annealed {
            lr: 0.1,
            swa_lr: 0.02,
            steps: anneal,
            shape,
        };
        let mut opt = Averaging::new(
            &vs,
            sgd(&vs),
            Rule::Swa,
            steps(Unit::Steps, start, 1),
            policy,
        )
        .unwrap();
        let want = swalr_sequence(0.1, 0.02, anneal, shape, 10);
        for c in 0..(start + 10) {
            let lr = opt.lr();
            if c < start {
                assert_eq!(lr, 0.1, "{shape:?} tick {c}");
            } else {
                let w = want[(c - start) as usize];
                assert!(
                    (lr - w).abs() < 1e-12,
                    "{shape:?} tick {c}: {lr} vs SWALR {w}"
                );
            }
            let l = loss(&vs, &x, &y);
            opt.backward_step(&vs, &l).unwrap();
        }
    }
}

#[test]
fn resume_mid_schedule_is_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("averaging.safetensors");
    let schedule = steps(Unit::Steps, 3, 2);
    let policy = LrPolicy::Annealed {
        lr: 0.1,
        swa_lr: 0.03,
        steps: 3,
        shape: Anneal::Cosine,
    };
    // Reference: 14 uninterrupted steps.
    let (vs, x, y) = problem(3);
    let mut opt = Averaging::new(&vs, sgd(&vs), Rule::Swa, schedule, policy).unwrap();
    for c in 0..14 {
        if c == 7 {
            opt.save(&path).unwrap();
        }
        let l = loss(&vs, &x, &y);
        opt.backward_step(&vs, &l).unwrap();
    }
    // Same run, interrupted at 7: a fresh process would rebuild the model and the wrapper.
    let (vs2, _, _) = problem(3);
    let mut opt2 = Averaging::new(&vs2, sgd(&vs2), Rule::Swa, schedule, policy).unwrap();
    for _ in 0..7 {
        let l = loss(&vs2, &x, &y);
        opt2.backward_step(&vs2, &l).unwrap();
    }
    // The resumed process: a model initialised differently, then loaded with the weights at 7
    // (`VarStore::copy` is what `VarStore::load` of the caller's model file amounts to).
    let (mut fresh, _, _) = problem(77);
    fresh.copy(&vs2).unwrap();
    let mut resumed = Averaging::new(&fresh, sgd(&fresh), Rule::Swa, schedule, policy).unwrap();
    resumed.load(&fresh, &path).unwrap();
    assert_eq!(resumed.ticks(), 7);
    assert_eq!(resumed.lr(), opt2.lr());
    for _ in 7..14 {
        let l = loss(&fresh, &x, &y);
        resumed.backward_step(&fresh, &l).unwrap();
    }
    for name in ["w", "b"] {
        assert!(
            fresh.variables()[name].equal(&vs.variables()[name]),
            "model {name}"
        );
        let a = resumed.averager().averaged(name).unwrap();
        let b = opt.averager().averaged(name).unwrap();
        assert!(a.equal(&b), "average {name}");
    }
    assert_eq!(resumed.averager().n_averaged(), opt.averager().n_averaged());
    assert_eq!(resumed.lr(), opt.lr());
}

#[test]
fn swap_scope_restores_and_bias_is_affine() {
    let (vs, x, y) = problem(4);
    let mut opt = Averaging::new(
        &vs,
        sgd(&vs),
        Rule::Swa,
        steps(Unit::Steps, 1, 1),
        LrPolicy::Keep { lr: 0.05 },
    )
    .unwrap();
    for _ in 0..5 {
        let l = loss(&vs, &x, &y);
        opt.backward_step(&vs, &l).unwrap();
    }
    let own = vs.variables()["w"].copy();
    let avg = opt.averager().averaged("w").unwrap().copy();
    let seen = opt
        .with_average(&vs, || vs.variables()["w"].copy())
        .unwrap();
    assert!(seen.equal(&avg));
    assert!(vs.variables()["w"].equal(&own));
    opt.write_biased(&vs, 0.5).unwrap();
    let want = &avg + (&avg - &own) * 0.5;
    let err = (vs.variables()["w"].copy() - want)
        .abs()
        .max()
        .double_value(&[]);
    assert!(err < 1e-6, "{err}");
}

fn field(e: Error) -> String {
    e.to_string()
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_changes_nothing() {
    let (vs, x, y) = problem(5);
    let keep = LrPolicy::Keep { lr: 0.05 };
    let new = |s: Schedule, p: LrPolicy| Averaging::new(&vs, sgd(&vs), Rule::Swa, s, p);
    let e = field(
        new(
            Schedule {
                end: Some(10),
                ..steps(Unit::Epochs, 11, 1)
            },
            keep,
        )
        .unwrap_err(),
    );
    assert!(
        e.contains("start") && e.contains("11") && e.contains("10"),
        "{e}"
    );
    let e = field(new(steps(Unit::Steps, 3, 0), keep).unwrap_err());
    assert!(e.contains("frequency") && e.contains('0'), "{e}");
    let e = field(new(steps(Unit::Steps, 0, 1), keep).unwrap_err());
    assert!(e.contains("start"), "{e}");
    for bad in [-0.1, f64::NAN] {
        let p = LrPolicy::Constant {
            lr: 0.1,
            swa_lr: bad,
        };
        let e = field(new(steps(Unit::Steps, 3, 1), p).unwrap_err());
        assert!(e.contains("swa_lr") && e.contains(&bad.to_string()), "{e}");
    }
    let empty = VarStore::new(Device::Cpu);
    let opt = nn::Sgd::default().build(&empty, 0.1).unwrap();
    let e =
        field(Averaging::new(&empty, opt, Rule::Swa, steps(Unit::Steps, 1, 1), keep).unwrap_err());
    assert!(e.contains("empty VarStore"), "{e}");

    // A variable added after wrapping: the step is refused before the optimizer moves anything.
    let mut opt = new(steps(Unit::Steps, 1, 1), keep).unwrap();
    let l = loss(&vs, &x, &y);
    opt.backward_step(&vs, &l).unwrap();
    let _ = vs.root().zeros("late", &[2]);
    let w = vs.variables()["w"].copy();
    let l = loss(&vs, &x, &y);
    let e = field(opt.backward_step(&vs, &l).unwrap_err());
    assert!(e.contains("late"), "{e}");
    assert!(vs.variables()["w"].equal(&w));
    assert_eq!(opt.ticks(), 1);
    assert_eq!(opt.averager().n_averaged(), 1);
    let e = field(opt.end_epoch(&vs).unwrap_err());
    assert!(e.contains("end_epoch"), "{e}");
}

/// The README's Rust example, verbatim between the markers; `readme_rust_example_is_this_code`
/// checks that the README still shows exactly this.
#[test]
#[rustfmt::skip]
fn readme_rust_example_runs() -> asymvalley::Result<()> {
    // README-BEGIN
    use asymvalley::average::Rule;
    use asymvalley::optim::{Anneal, Averaging, LrPolicy, Schedule, Unit};
    use tch::nn::{OptimizerConfig, Sgd, VarStore};
    use tch::{Device, Kind, Tensor};
    let vs = VarStore::new(Device::Cpu);
    let w = vs.root().randn_standard("w", &[3]);
    let schedule = Schedule { unit: Unit::Steps, start: 10, frequency: 2, end: Some(40) };
    let lr = LrPolicy::Annealed { lr: 0.1, swa_lr: 0.02, steps: 5, shape: Anneal::Cosine };
    let mut opt = Averaging::new(&vs, Sgd::default().build(&vs, 0.1)?, Rule::Swa, schedule, lr)?;
    for _ in 0..40 {
        let loss = (&w - Tensor::ones([3], (Kind::Float, Device::Cpu))).square().sum(Kind::Float);
        opt.backward_step(&vs, &loss)?;
    }
    assert_eq!(opt.averager().n_averaged(), 16);
    let avg_w = opt.with_average(&vs, || w.copy())?; // evaluate with the average, then swap back
    assert!(avg_w.allclose(&opt.averager().averaged("w").unwrap(), 0.0, 0.0, false));
    // README-END
    Ok(())
}

#[test]
fn readme_rust_example_is_this_code() {
    let readme = include_str!("../README.md");
    let section = readme
        .split("## Optimizer wrapper (Rust and Python)")
        .nth(1)
        .unwrap();
    let block = section
        .split("```rust\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let src = include_str!("optim.rs");
    let ours = src
        .split("// README-BEGIN\n")
        .nth(1)
        .unwrap()
        .split("    // README-END")
        .next()
        .unwrap();
    let strip = |s: &str| s.split_whitespace().collect::<String>();
    assert_eq!(strip(block), strip(ours));
}

/// `Linear(5 → 4) → BatchNorm(4)`, trained through the wrapper; the BatchNorm re-estimated inside
/// the swap equals the sample-weighted mean of the batch statistics of the *averaged* linear layer.
struct LinearBn {
    linear: nn::Linear,
    bn: asymvalley::bn::BatchNorm,
}

impl asymvalley::bn::BatchNormModel for LinearBn {
    fn batch_norms(&self) -> Vec<&asymvalley::bn::BatchNorm> {
        vec![&self.bn]
    }
    fn forward_train(&self, xs: &Tensor) -> asymvalley::Result<Tensor> {
        use tch::nn::Module;
        self.bn.forward_t(&self.linear.forward(xs), true)
    }
}

#[test]
fn bn_is_reestimated_for_the_average_inside_the_scope_and_restored_after() {
    use asymvalley::bn::{BatchNormModel, BnWeighting};
    tch::manual_seed(6);
    let vs = VarStore::new(Device::Cpu);
    let linear = nn::linear(vs.root() / "linear", 5, 4, Default::default());
    let bn = asymvalley::bn::BatchNorm::new(vs.root() / "bn", 4).unwrap();
    let model = LinearBn { linear, bn };
    let mut opt = Averaging::new(
        &vs,
        sgd(&vs),
        Rule::Swa,
        steps(Unit::Steps, 2, 1),
        LrPolicy::Keep { lr: 0.05 },
    )
    .unwrap();
    let x = Tensor::randn([16, 5], (Kind::Float, Device::Cpu)) * 2.0 + 1.0;
    for _ in 0..6 {
        let l = model.forward_train(&x).unwrap().square().mean(Kind::Float);
        opt.backward_step(&vs, &l).unwrap();
    }
    let own_mean = vs.variables()["bn.running_mean"].copy();
    let batches: Vec<Tensor> = [7i64, 3, 12]
        .iter()
        .map(|&b| Tensor::randn([b, 5], (Kind::Float, Device::Cpu)) + 3.0)
        .collect();
    let avg_w = opt
        .averager()
        .averaged("linear.weight")
        .unwrap()
        .to_kind(Kind::Double);
    let avg_b = opt
        .averager()
        .averaged("linear.bias")
        .unwrap()
        .to_kind(Kind::Double);
    // Oracle: the averaged layer applied in f64, batch means weighted by batch size.
    let (mut want, mut n) = (Tensor::zeros([4], (Kind::Double, Device::Cpu)), 0.0);
    for xs in &batches {
        let h = xs.to_kind(Kind::Double).matmul(&avg_w.tr()) + &avg_b;
        let b = xs.size()[0] as f64;
        want += h.mean_dim(0, false, Kind::Double) * b;
        n += b;
    }
    let want = want / n;
    let got = opt
        .with_average_bn(
            &vs,
            &model,
            batches.iter().map(|t| t.shallow_clone()),
            BnWeighting::SampleWeighted,
            || vs.variables()["bn.running_mean"].to_kind(Kind::Double),
        )
        .unwrap();
    let err = (got - want).abs().max().double_value(&[]);
    assert!(err < 1e-5, "{err}");
    assert!(vs.variables()["bn.running_mean"].equal(&own_mean));
    assert!(!opt.averager().is_swapped_in());
}

#[test]
fn swa_and_ema_together_each_match_their_f64_reference_and_resume() {
    use asymvalley::average::EmaConfig;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("both.safetensors");
    let schedule = steps(Unit::Steps, 4, 3);
    let keep = LrPolicy::Keep { lr: 0.05 };
    let run = |n: usize, load: bool| {
        let (vs, x, y) = problem(8);
        let mut opt = Averaging::new(&vs, sgd(&vs), Rule::Swa, schedule, keep)
            .unwrap()
            .with_ema(&vs, EmaConfig::new(0.8))
            .unwrap();
        let mut snaps = Vec::new();
        for c in 0..n {
            if load && c == 5 {
                // A fresh wrapper (empty averages, position 0) resumed from the file.
                opt = Averaging::new(&vs, sgd(&vs), Rule::Swa, schedule, keep)
                    .unwrap()
                    .with_ema(&vs, EmaConfig::new(0.8))
                    .unwrap();
                opt.load(&vs, &path).unwrap();
                assert_eq!(opt.ticks(), 5);
            } else if !load && c == 5 {
                opt.save(&path).unwrap();
            }
            let l = loss(&vs, &x, &y);
            opt.backward_step(&vs, &l).unwrap();
            snaps.push(vs.variables()["w"].to_kind(Kind::Double));
        }
        (opt, snaps)
    };
    let (opt, snaps) = run(12, false);
    // EMA: the first step copies, then avg ← 0.8·avg + 0.2·w, in f64.
    let mut ema = snaps[0].copy();
    for s in &snaps[1..] {
        ema = ema * 0.8 + s * 0.2;
    }
    let got = opt
        .ema()
        .unwrap()
        .averaged("w")
        .unwrap()
        .to_kind(Kind::Double);
    assert!((got - &ema).abs().max().double_value(&[]) < 1e-6);
    // SWA: completed steps 4, 7, 10.
    let picked: Vec<Tensor> = [4usize, 7, 10]
        .iter()
        .map(|&c| snaps[c - 1].shallow_clone())
        .collect();
    let want = Tensor::stack(&picked, 0).mean_dim(0, false, Kind::Double);
    let got = opt.averager().averaged("w").unwrap().to_kind(Kind::Double);
    assert!((got - want).abs().max().double_value(&[]) < 1e-6);
    // The same run with its wrapper rebuilt at step 5 and resumed from the file: bitwise equal.
    let (again, _) = run(12, true);
    assert!(again
        .ema()
        .unwrap()
        .averaged("w")
        .unwrap()
        .equal(&opt.ema().unwrap().averaged("w").unwrap()));
    assert!(again
        .averager()
        .averaged("w")
        .unwrap()
        .equal(&opt.averager().averaged("w").unwrap()));
}

#[test]
fn coptimizer_with_momentum_on_epochs_averages_the_epoch_ends_and_is_returned() {
    let (vs, x, y) = problem(9);
    let mut copt = tch::COptimizer::sgd(0.1, 0.9, 0.0, 1e-4, false).unwrap();
    for t in vs.trainable_variables() {
        copt.add_parameters(&t, 0).unwrap();
    }
    let schedule = Schedule {
        unit: Unit::Epochs,
        start: 3,
        frequency: 1,
        end: Some(6),
    };
    let policy = LrPolicy::Train2 {
        lr: 0.1,
        swa_lr: 0.05,
    };
    let mut opt = Averaging::new(&vs, copt, Rule::Swa, schedule, policy).unwrap();
    let mut ends = Vec::new();
    for e in 0..6u64 {
        // train2.py with swa_start 3: t = e/3; factor 1, then linear, then r = 0.5.
        let t = e as f64 / 3.0;
        let want = if t <= 0.5 {
            0.1
        } else if t <= 0.9 {
            0.1 * (1.0 - 0.5 * (t - 0.5) / 0.4)
        } else {
            0.05
        };
        assert!((opt.lr() - want).abs() < 1e-12, "epoch {e}");
        for _ in 0..3 {
            let l = loss(&vs, &x, &y);
            opt.backward_step(&vs, &l).unwrap();
        }
        opt.end_epoch(&vs).unwrap();
        if e >= 2 {
            ends.push(vs.variables()["w"].to_kind(Kind::Double));
        }
    }
    let want = Tensor::stack(&ends, 0).mean_dim(0, false, Kind::Double);
    let (copt, averager) = opt.into_parts();
    let got = averager.averaged("w").unwrap().to_kind(Kind::Double);
    assert!((got - want).abs().max().double_value(&[]) < 1e-6);
    assert_eq!(averager.n_averaged(), 4);
    copt.zero_grad().unwrap(); // the inner optimizer, with its momentum, is the caller's again
}
