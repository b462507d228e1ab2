//! `asymvalley theory` as a user runs it: extreme arguments finish within seconds with a result
//! or a refusal that names the argument and its range, and the smooth blend is refused past the
//! ratio where it grows a second local minimum (found here by grid search, independently of
//! the harness's derivation).
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary with `args`, killing it after `limit`. Returns (exit code, stdout, stderr,
/// elapsed); panics on a timeout, which is the hang this file guards against.
fn theory(args: &[&str], limit: Duration) -> (i32, String, String, Duration) {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_asymvalley"))
        .arg("theory")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
                start.elapsed(),
            );
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            let _ = child.wait();
            panic!(
                "`asymvalley theory {}` still running after {limit:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Short SGD so a computed case takes well under a second.
const FAST: [&str; 4] = ["--steps", "20000", "--burn-in", "1000"];

fn assert_result_or_clear_refusal(args: &[&str], option: &str) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(FAST);
    let (code, out, err, took) = theory(&all, Duration::from_secs(30));
    let what = format!("`theory {}` ({took:?})", all.join(" "));
    if code == 0 {
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: {e}: {out}"));
        for key in ["g0", "c_star", "c_max", "sgd_mean", "langevin_mean"] {
            assert!(
                v[key].as_f64().is_some_and(f64::is_finite),
                "{what}: {key} is not a finite number: {out}"
            );
        }
    } else {
        assert!(
            err.contains(option) && err.contains("expected") && !err.contains("panicked"),
            "{what}: exit {code} without a clear message naming `{option}`: {err}"
        );
    }
}

#[test]
fn extreme_arguments_finish_with_a_result_or_a_named_refusal() {
    // The huge values, tiny, negative, NaN, inf, and the ends of the accepted range.
    let values = [
        "1e200", "1e300", "1e308", "1e-300", "-1", "NaN", "inf", "1e-6", "1e6",
    ];
    let options: [(&str, &[&str]); 8] = [
        ("a-flat", &[]),
        ("a-sharp", &[]),
        ("scale", &[]),
        ("noise", &[]),
        ("eta", &[]),
        ("z", &[]),
        ("k", &["--family", "smooth", "--a-sharp", "10"]),
        ("p", &["--family", "power"]),
    ];
    for (option, extra) in options {
        for value in values {
            let flag = format!("--{option}");
            let mut args: Vec<&str> = extra.to_vec();
            args.extend(["--json", flag.as_str(), value]);
            assert_result_or_clear_refusal(&args, option);
        }
    }
    // Every shift law at the extreme ends of the accepted scale range.
    for law in ["uniform", "gaussian", "laplace", "two-point"] {
        for scale in ["1e-6", "1e6"] {
            assert_result_or_clear_refusal(&["--json", "--shift", law, "--scale", scale], "scale");
        }
    }
}

#[test]
fn a_negative_scale_gets_a_range_message_not_a_parse_error() {
    let (code, _, err, _) = theory(&["--scale", "-1"], Duration::from_secs(30));
    assert_ne!(code, 0);
    assert!(
        err.contains("scale") && err.contains("-1") && err.contains("[1e-6, 1e6]"),
        "{err}"
    );
    assert!(!err.contains("unexpected argument"), "{err}");
}

/// Whether ½x²(σ(x) + rσ(−x)) has a local minimum at some x in (0, 30], by a dense grid
/// (step 1e-4; the second minimum, once born, sits near x ≈ 3 and is wider than that).
fn has_second_minimum(r: f64) -> bool {
    let sigma = |z: f64| 1.0 / (1.0 + (-z).exp());
    let f = |x: f64| 0.5 * x * x * (sigma(x) + r * sigma(-x));
    let h = 1e-4;
    let (mut a, mut b) = (f(h), f(2.0 * h));
    for i in 3..300_000 {
        let c = f(i as f64 * h);
        if b < a && b < c {
            return true;
        }
        (a, b) = (b, c);
    }
    false
}

#[test]
fn the_smooth_blend_is_refused_past_its_critical_ratio() {
    // Bisection on r between one ratio with a single minimum and one with two.
    let (mut lo, mut hi) = (10.0, 100.0);
    assert!(!has_second_minimum(lo) && has_second_minimum(hi));
    for _ in 0..30 {
        let mid = 0.5 * (lo + hi);
        if has_second_minimum(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let critical = 0.5 * (lo + hi);
    // The grid resolves the fold only to about 1e-3 relative: test 1 % either side.
    for k in ["0.5", "4", "50"] {
        for mirror in [false, true] {
            let (below, above) = (
                format!("{}", 0.99 * critical),
                format!("{}", 1.01 * critical),
            );
            let args = |sharp: &str| {
                let (flat, sharp) = if mirror { (sharp, "1") } else { ("1", sharp) };
                let mut v: Vec<String> = ["--family", "smooth", "--k", k, "--json"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                v.extend([
                    "--a-flat".into(),
                    flat.into(),
                    "--a-sharp".into(),
                    sharp.into(),
                ]);
                if mirror {
                    v.push("--mirror".into());
                }
                v.extend(FAST.iter().map(|s| s.to_string()));
                v
            };
            let run = |a: Vec<String>| {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                theory(&a, Duration::from_secs(30))
            };
            let (code, out, err, _) = run(args(&below));
            assert_eq!(
                code, 0,
                "k {k} mirror {mirror}: ratio {below} refused: {err}"
            );
            assert!(out.contains("\"family\":\"smooth\""), "{out}");
            let (code, _, err, _) = run(args(&above));
            assert_ne!(code, 0, "k {k} mirror {mirror}: ratio {above} accepted");
            let ratio = format!("{:.4}", 1.01 * critical);
            assert!(
                err.contains("a-sharp")
                    && err.contains(&ratio)
                    && err.contains("second local minimum"),
                "k {k} mirror {mirror}: {err}"
            );
        }
    }
}

#[test]
fn a_step_size_past_the_sharp_side_stability_warns_loudly() {
    let mut args = vec!["--json", "--a-sharp", "100", "--eta", "0.05"];
    args.extend(FAST);
    let (code, out, err, _) = theory(&args, Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&out).is_ok(),
        "{out}"
    );
    // η·a = 5 > 2, computed here: |1 − 5| > 1, the sharp-side step overshoots.
    assert!(
        err.contains("warning") && err.contains("eta·a_sharp = 5"),
        "{err}"
    );
    // η·a = 0.5: inside the stable regime, no warning.
    let mut args = vec!["--json", "--a-sharp", "10", "--eta", "0.05"];
    args.extend(FAST);
    let (code, _, err, _) = theory(&args, Duration::from_secs(30));
    assert_eq!(code, 0);
    assert!(!err.contains("warning"), "{err}");
}
