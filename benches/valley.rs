//! Profile cost vs the model evaluations it needs (issue 5 §5): a P-point stale profile of the
//! demo's MLP on the digits training set against P plain evaluations of the same data; and the
//! full vs k-batch BatchNorm modes.
use asymvalley::valley::directions::{Direction, DirectionKind, ParamSubset};
use asymvalley::valley::model::{LossKind, ProbeModel, TchModel};
use asymvalley::valley::profile::{evaluate, grid_through, profile, BnMode, BnPlan};
use asymvalley_cli::data::Digits;
use asymvalley_cli::model::{DigitsNet, DigitsNetConfig};
use asymvalley_cli::train::input_batches;
use criterion::Criterion;
use tch::{nn::VarStore, Device};

const POINTS: usize = 21;

pub fn valley_benches(c: &mut Criterion) {
    let data = Digits::load(Device::Cpu).expect("digits");
    let vs = VarStore::new(Device::Cpu);
    let net = DigitsNet::new(&vs.root(), &DigitsNetConfig::default()).expect("net");
    let model = TchModel::from_network(&vs, &net);
    let params = model.parameters().expect("params");
    let d = Direction::random(&params, DirectionKind::Uniform, &ParamSubset::All, 0)
        .expect("direction");
    let train = data.train.probe_data(256).expect("data");
    let offsets = grid_through(POINTS, 1.0).expect("grid");
    let batches = input_batches(&data.train, 256, Some(0)).expect("batches");
    let mut g = c.benchmark_group("valley");
    g.bench_function(format!("evaluations/{POINTS}"), |b| {
        b.iter(|| {
            for _ in 0..POINTS {
                evaluate(&model, &train, LossKind::CrossEntropy).expect("eval");
            }
        })
    });
    for mode in [BnMode::Stale, BnMode::Batches(2), BnMode::Full] {
        let plan =
            BnPlan::new(mode, batches.iter().map(|t| t.shallow_clone()).collect()).expect("plan");
        g.bench_function(format!("profile_{mode}/{POINTS}"), |b| {
            b.iter(|| {
                profile(
                    &model,
                    &d,
                    &offsets,
                    &[&train],
                    LossKind::CrossEntropy,
                    &plan,
                    |_| {},
                )
                .expect("profile")
            })
        });
    }
    g.finish();
}

criterion::criterion_group!(valley_benches_group, valley_benches);
