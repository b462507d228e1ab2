//! Bad input gets an error that names the argument, the value and what was expected, and
//! changes nothing.
use crate::common::{randomize, var_store};
use asymvalley::average::{Averager, AveragerConfig, EmaConfig, Rule, Warmup};
use tch::{nn, Device, Kind, Tensor};

fn message(config: AveragerConfig) -> String {
    let vs = var_store(&[vec![2]], Kind::Float, false);
    Averager::new(&vs, config).unwrap_err().to_string()
}

#[test]
fn out_of_range_configuration_is_named_with_its_value() {
    for decay in [0.0, 1.0, 1.5, -0.1, f64::NAN] {
        let msg = message(AveragerConfig::ema(decay));
        assert!(
            msg.contains("decay") && msg.contains(&decay.to_string()) && msg.contains("(0, 1)"),
            "{msg}"
        );
    }
    let msg = message(AveragerConfig {
        update_every: 0,
        ..AveragerConfig::swa()
    });
    assert!(
        msg.contains("update_every = 0") && msg.contains(">= 1"),
        "{msg}"
    );
    let bad_power = EmaConfig {
        decay: 0.9,
        warmup: Warmup::Power {
            gamma: 0.0,
            power: 0.5,
            min_decay: 0.0,
        },
    };
    let msg = message(AveragerConfig {
        rule: Rule::Ema(bad_power),
        ..AveragerConfig::swa()
    });
    assert!(msg.contains("warmup_gamma = 0"), "{msg}");
    let bad_min = EmaConfig {
        decay: 0.9,
        warmup: Warmup::Power {
            gamma: 1.0,
            power: 0.5,
            min_decay: 0.95,
        },
    };
    let msg = message(AveragerConfig {
        rule: Rule::Ema(bad_min),
        ..AveragerConfig::swa()
    });
    assert!(msg.contains("min_decay = 0.95"), "{msg}");
}

#[test]
fn an_empty_var_store_is_refused() {
    let msg = Averager::new(&nn::VarStore::new(Device::Cpu), AveragerConfig::swa())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("empty VarStore"), "{msg}");
}

/// Updates `avg` with a model that differs from the tracked one; checks the message and that
/// the average did not move.
fn refused(avg: &mut Averager, other: &nn::VarStore, needles: &[&str]) {
    let before = avg.averaged("p00").unwrap().copy();
    let steps = avg.steps();
    let msg = avg.update(other).unwrap_err().to_string();
    for n in needles {
        assert!(msg.contains(n), "`{msg}` lacks `{n}`");
    }
    assert!(avg.averaged("p00").unwrap().equal(&before));
    assert_eq!(avg.steps(), steps);
}

#[test]
fn mismatched_models_are_refused_and_nothing_changes() {
    let vs = var_store(&[vec![3, 2], vec![4]], Kind::Float, false);
    let mut avg = Averager::new(&vs, AveragerConfig::swa()).unwrap();
    randomize(&vs);
    avg.update(&vs).unwrap();
    refused(
        &mut avg,
        &var_store(&[vec![3, 2], vec![5]], Kind::Float, false),
        &["shape", "p01", "[5]", "[4]"],
    );
    refused(
        &mut avg,
        &var_store(&[vec![3, 2], vec![4]], Kind::Double, false),
        &["dtype", "Double", "Float"],
    );
    refused(
        &mut avg,
        &var_store(&[vec![3, 2]], Kind::Float, false),
        &["p01", "missing from the model"],
    );
    refused(
        &mut avg,
        &var_store(&[vec![3, 2], vec![4], vec![1]], Kind::Float, false),
        &["p02", "missing from the averager"],
    );
}

#[test]
fn using_the_average_before_any_update_is_refused() {
    let vs = var_store(&[vec![2]], Kind::Float, false);
    let mut avg = Averager::new(&vs, AveragerConfig::swa()).unwrap();
    for msg in [
        avg.copy_to(&vs).unwrap_err().to_string(),
        avg.swap_in(&vs).unwrap_err().to_string(),
    ] {
        assert!(msg.contains("before any update"), "{msg}");
    }
    assert!(avg
        .swap_out(&vs)
        .unwrap_err()
        .to_string()
        .contains("without a swap_in"));
}

#[test]
fn shim_errors_come_back_as_errors_not_aborts() {
    // A length mismatch is caught in Rust; a shape mismatch reaches ATen and comes back as Shim.
    let a = [Tensor::zeros([3], (Kind::Float, Device::Cpu))];
    let msg = asymvalley::shim::foreach_lerp_(&a, &[], 0.5)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("src has 0 tensors but avg has 1"), "{msg}");
    let err =
        asymvalley::shim::foreach_lerp_(&a, &[Tensor::zeros([4], (Kind::Float, Device::Cpu))], 0.5)
            .unwrap_err();
    assert!(matches!(err, asymvalley::Error::Shim { .. }), "{err}");
}
