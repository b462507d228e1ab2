//! Claim 13, the official `interpulation.py` line, against its definition (harness/THEOREMS.md
//! §8): the grid is `t_i = (i − D)/P` for i = 0..2D+P; `w(t_i) = w_swa + t_i·(w_sgd − w_swa)`
//! moves only the parameters; BatchNorm is recomputed by `bn_update` at every point.
use asymvalley::valley::profile::grid_line;
use asymvalley_cli::data::Digits;
use asymvalley_cli::experiment::line::{line_point, line_profiles};
use asymvalley_cli::experiment::solution::{bn_update, evaluate_both};
use asymvalley_cli::experiment::weights::{interpolate, restore, snapshot};
use asymvalley_cli::model::{DigitsCnn, DigitsCnnConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

#[test]
fn the_official_grid_puts_swa_and_sgd_exactly_on_it() {
    // The README run: distances D = 80, division P = 40 (extend = D/P = 2).
    let t = grid_line(2, 40).unwrap();
    assert_eq!(t.len(), 2 * 80 + 40 + 1);
    for (i, &ti) in t.iter().enumerate() {
        assert_eq!(ti, (i as f64 - 80.0) / 40.0, "t_{i}");
    }
    assert_eq!(t[80], 0.0);
    assert_eq!(t[120], 1.0);
    assert_eq!((t[0], t[200]), (-2.0, 3.0));
}

fn cnn(seed: i64) -> (VarStore, DigitsCnn) {
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let net = DigitsCnn::new(
        &vs.root(),
        &DigitsCnnConfig {
            channels: [4, 8],
            ..Default::default()
        },
    )
    .unwrap();
    (vs, net)
}

#[test]
fn line_points_are_parameters_only_and_hit_both_ends() {
    let (vs, _net) = cnn(3);
    let a = snapshot(&vs).unwrap();
    let names: Vec<String> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(n, _)| n)
        .collect();
    // Parameters only: conv weights, BN γ/β, head; never running statistics.
    assert_eq!(a.len(), names.len());
    assert!(names
        .iter()
        .all(|n| !n.contains("running") && !n.contains("num_batches")));
    let b: Vec<Tensor> = a.iter().map(|x| x.randn_like()).collect();
    let at0 = interpolate(&a, &b, 0.0).unwrap();
    let at1 = interpolate(&a, &b, 1.0).unwrap();
    let mid = interpolate(&a, &b, -1.5).unwrap();
    for i in 0..a.len() {
        assert!(at0[i].equal(&a[i]), "t = 0 is SWA exactly");
        let err = (&at1[i] - &b[i]).abs().max().double_value(&[]);
        assert!(err < 1e-6, "t = 1 is SGD up to rounding: {err}");
        let want = (&a[i].to_kind(Kind::Double) * 2.5) - (&b[i].to_kind(Kind::Double) * 1.5);
        let err = (mid[i].to_kind(Kind::Double) - want)
            .abs()
            .max()
            .double_value(&[]);
        assert!(err < 1e-5, "t = -1.5: {err}");
    }
    assert!(interpolate(&a, &b[1..], 0.5).is_err());
}

#[test]
fn the_line_profile_recomputes_batch_norm_at_every_point() {
    let data = Digits::load(Device::Cpu).unwrap();
    let (vs, net) = cnn(4);
    let swa = snapshot(&vs).unwrap();
    let sgd: Vec<Tensor> = swa.iter().map(|x| x + x.randn_like() * 0.05).collect();
    // Stale statistics the line must not use.
    restore(&vs, &sgd).unwrap();
    let offsets = [-1.0, 0.0, 0.5, 1.0];
    let line = line_profiles(&vs, &net, &data, &swa, &sgd, &offsets, 256, 9, || {}).unwrap();
    // Each point equals an independent evaluation: weights written, bn_update over the same
    // shuffled training batches (seed 9, batch 256), eval on both splits.
    for (i, &t) in offsets.iter().enumerate() {
        restore(&vs, &interpolate(&swa, &sgd, t).unwrap()).unwrap();
        bn_update(&net, &data.train, 256, 9).unwrap();
        let want = evaluate_both(&net, &data, 256).unwrap();
        assert!(
            (line.train.loss[i] - want.train.loss).abs() < 1e-5,
            "train at t = {t}"
        );
        assert!(
            (line.test.loss[i] - want.test.loss).abs() < 1e-5,
            "test at t = {t}"
        );
        // line_point is the same point.
        let p = line_point(&vs, &net, &swa, &sgd, t, &data, 256, 9).unwrap();
        assert!((p.test.loss - want.test.loss).abs() < 1e-9);
    }
    // Recomputing matters: the loss at SGD's end with SWA's statistics differs.
    assert!(line.test.loss[0] != line.test.loss[3]);
}
