//! The detector's rise-ratio interval as the study uses it: the classification at the ratio
//! threshold, an interval that contains 1 vetoing "asymmetric", and the interval's coverage of
//! the true ratio over replicates of a known per-example model.
use asymvalley::valley::asymmetry::{analyze, AsymmetryConfig, ValleyClass};
use rand::SeedableRng;
use rand_distr::{Distribution, Exp};

const OFFSETS: [f64; 3] = [-1.0, 0.0, 1.0];

/// Per-example losses `[offset][example]` from per-example rises (−, +) over a zero centre.
fn per_example(rises: &[(f64, f64)]) -> Vec<Vec<f32>> {
    vec![
        rises.iter().map(|r| r.0 as f32).collect(),
        vec![0.0; rises.len()],
        rises.iter().map(|r| r.1 as f32).collect(),
    ]
}

fn classify(rises: &[(f64, f64)], seed: u64) -> (ValleyClass, f64, Option<[f64; 2]>) {
    let per = per_example(rises);
    let mean = |row: &[f32]| row.iter().map(|&x| x as f64).sum::<f64>() / row.len() as f64;
    let losses: Vec<f64> = per.iter().map(|r| mean(r)).collect();
    let cfg = AsymmetryConfig {
        seed,
        ..AsymmetryConfig::default()
    };
    let a = analyze(&OFFSETS, &losses, Some(&per), &cfg).unwrap();
    (a.class, a.rise_ratio, a.rise_ratio_ci)
}

#[test]
fn the_threshold_is_inclusive_and_one_inside_the_interval_vetoes() {
    // Identical examples: the bootstrap interval is the point R itself.
    let (class, r, ci) = classify(&[(0.5, 1.0); 40], 0);
    assert_eq!(
        (class, r),
        (ValleyClass::Asymmetric, 2.0),
        "R = 2 exactly is asymmetric"
    );
    let [lo, hi] = ci.unwrap();
    assert!((lo - 2.0).abs() < 1e-6 && (hi - 2.0).abs() < 1e-6);
    // Just under the threshold: comparable rises above flat_rise = 0.1, so sharp.
    let (class, r, _) = classify(&[(0.5 * 1.01, 1.0); 40], 0);
    assert!(r < 2.0);
    assert_eq!(class, ValleyClass::Sharp);
    // Mean rises 0.5 and 1.5 (R = 3), but carried by 2 of 40 examples each: the interval
    // reaches across 1, so the detector does not call it asymmetric.
    let mut noisy = vec![(0.0, 0.0); 40];
    noisy[0] = (10.0, 0.0);
    noisy[1] = (10.0, 0.0);
    noisy[2] = (0.0, 30.0);
    noisy[3] = (0.0, 30.0);
    let (class, r, ci) = classify(&noisy, 0);
    let [lo, hi] = ci.unwrap();
    assert!(
        (r - 3.0).abs() < 1e-6 && lo < 1.0 && hi > 1.0,
        "R {r} [{lo}, {hi}]"
    );
    assert_ne!(class, ValleyClass::Asymmetric);
}

#[test]
fn the_rise_ratio_interval_covers_the_true_ratio() {
    // 200 replicates of 200 examples, rises − ~ Exp(mean 1) and + ~ Exp(mean 2): the true
    // ratio of mean rises is R = 2. Nominal coverage 95 %; the test asks for ≥ 180/200 (90 %).
    // If the true coverage were 94 %, fewer than 180 would have probability 0.009 (binomial).
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (minus, plus) = (Exp::new(1.0).unwrap(), Exp::new(0.5).unwrap());
    let mut covered = 0;
    for rep in 0..200 {
        let rises: Vec<(f64, f64)> = (0..200)
            .map(|_| (minus.sample(&mut rng), plus.sample(&mut rng)))
            .collect();
        let (_, _, ci) = classify(&rises, rep);
        let [lo, hi] = ci.unwrap();
        if lo <= 2.0 && 2.0 <= hi {
            covered += 1;
        }
    }
    assert!(covered >= 180, "coverage {covered}/200");
}
