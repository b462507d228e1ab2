//! Averaging benchmarks (being written).
pub fn average(_c: &mut criterion::Criterion) {}
criterion::criterion_group!(average_benches, average);
