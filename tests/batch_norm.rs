//! BatchNorm re-estimation (the official `bn_update` rule, stated in src/core/src/bn/mod.rs): running stats equal the sample-weighted
//! mean of the per-batch statistics (unbiased variances), whatever they were before, with every
//! momentum restored; PyTorch's `update_bn` weighting gives the equal-per-batch mean instead.
use asymvalley::bn::BatchNorm;
use asymvalley::bn::{reestimate_batch_norm, BatchNormModel, BnWeighting};
use asymvalley::Result;
use tch::{nn, nn::Module, Device, Kind, Tensor};

/// `Linear(5 → 4) → BatchNorm(4)`: the batch statistics are those of `linear(x)`.
struct LinearBn {
    linear: nn::Linear,
    bn: BatchNorm,
}

impl BatchNormModel for LinearBn {
    fn batch_norms(&self) -> Vec<&BatchNorm> {
        vec![&self.bn]
    }
    fn forward_train(&self, xs: &Tensor) -> Result<Tensor> {
        self.bn.forward_t(&self.linear.forward(xs), true)
    }
}

fn model() -> (nn::VarStore, LinearBn) {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let linear = nn::linear(vs.root() / "linear", 5, 4, Default::default());
    let bn = BatchNorm::new(vs.root() / "bn", 4).unwrap();
    (vs, LinearBn { linear, bn })
}

/// Batches of unequal sizes (so the two weightings differ), shifted so means are far from 0.
fn batches() -> Vec<Tensor> {
    [7i64, 3, 12, 5]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            Tensor::randn([b, 5], (Kind::Float, Device::Cpu)) * (1.0 + i as f64) + 2.0 * i as f64
        })
        .collect()
}

/// The independent oracle: per-batch mean and unbiased variance of `linear(x)` in f64, combined.
fn expected(m: &LinearBn, batches: &[Tensor], weighting: BnWeighting) -> (Tensor, Tensor) {
    let (mut mean, mut var, mut total) = (
        Tensor::zeros([4], (Kind::Double, Device::Cpu)),
        Tensor::zeros([4], (Kind::Double, Device::Cpu)),
        0.0,
    );
    for xs in batches {
        let h = tch::no_grad(|| m.linear.forward(xs)).to_kind(Kind::Double);
        let b = h.size()[0] as f64;
        let w = match weighting {
            BnWeighting::SampleWeighted => b,
            _ => 1.0,
        };
        let mu = h.mean_dim(0, false, Kind::Double);
        let s2 = (&h - &mu).square().sum_dim_intlist(0, false, Kind::Double) / (b - 1.0);
        mean += mu * w;
        var += s2 * w;
        total += w;
    }
    (mean / total, var / total)
}

#[test]
fn reestimation_equals_the_sample_weighted_mean_of_batch_statistics() {
    let (_vs, m) = model();
    let data = batches();
    for weighting in [BnWeighting::SampleWeighted, BnWeighting::EqualPerBatch] {
        // Garbage statistics before the call must not matter.
        tch::no_grad(|| {
            let _ = m.bn.running_mean.shallow_clone().fill_(123.0);
            let _ = m.bn.running_var.shallow_clone().fill_(0.001);
        });
        m.bn.set_momentum(0.37);
        let seen =
            reestimate_batch_norm(&m, data.iter().map(|t| t.shallow_clone()), weighting).unwrap();
        assert_eq!(seen, 27);
        let (mean, var) = expected(&m, &data, weighting);
        let err_mean = (m.bn.running_mean.to_kind(Kind::Double) - &mean)
            .abs()
            .max()
            .double_value(&[]);
        let err_var = ((m.bn.running_var.to_kind(Kind::Double) - &var).abs() / &var)
            .max()
            .double_value(&[]);
        assert!(err_mean < 1e-4, "{weighting:?} mean error {err_mean}");
        assert!(err_var < 1e-4, "{weighting:?} relative var error {err_var}");
        assert_eq!(m.bn.momentum(), 0.37, "momentum restored");
    }
    // The two weightings really differ on unequal batches (so the test above tells them apart).
    let (a, _) = expected(&m, &data, BnWeighting::SampleWeighted);
    let (b, _) = expected(&m, &data, BnWeighting::EqualPerBatch);
    assert!((a - b).abs().max().double_value(&[]) > 0.1);
}

#[test]
fn a_model_without_batch_norm_is_left_alone() {
    struct NoBn;
    impl BatchNormModel for NoBn {
        fn batch_norms(&self) -> Vec<&BatchNorm> {
            vec![]
        }
        fn forward_train(&self, _: &Tensor) -> Result<Tensor> {
            panic!("no forward pass is needed without BatchNorm")
        }
    }
    assert_eq!(
        reestimate_batch_norm(&NoBn, batches(), BnWeighting::SampleWeighted).unwrap(),
        0
    );
}
