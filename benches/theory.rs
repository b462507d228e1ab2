//! Simulator and expectation benchmarks (being written).
pub fn theory_benches(_c: &mut criterion::Criterion) {}
criterion::criterion_group!(theory_benches_group, theory_benches);
