//! The one integration-test binary (`cargo test --release --test integration`).
mod common;

/// SWA/EMA/warm-ups/bias against closed forms and f64 references; half precision; buffers.
mod average;
/// BatchNorm re-estimation against the sample-weighted mean of batch statistics.
mod batch_norm;
/// The flat-side bias: Rust `write_biased` against Python `asymvalley.bias_toward_flat` on the same tensors.
mod bias_cross_language;
/// Checkpoint/resume: bitwise resume, truncated or corrupted files refused, atomicity.
mod checkpoint;
/// Bad input: named, valued, expected; nothing modified.
mod errors;
/// The TorchScript op library from Rust: a PyTorch-saved module holding an Averager, via CModule.
mod op_library;
/// The optimizer wrapper: train2.py schedule, f64-reference averages, SWALR lr, bitwise resume.
mod optim;
/// The fused-update plan: every element covered once over real model and adversarial shapes.
mod plan;
/// The study's per-seed properties and verdicts under two floating-point configurations (child processes).
mod study_cpu_independence;
/// The detector's rise-ratio interval at its threshold and its coverage over replicates.
mod study_detector_interval;
/// The study's line (claim 13): the official grid, parameters-only points, BN recomputed.
mod study_line;
/// The study's restart (claim 14): the full budget, the official rule, the last passing epoch kept.
mod study_restart;
/// The averaging theorems through the project's own SWA (SGD in tch on synthetic valleys).
mod theorems_through_averager;
/// `asymvalley theory` on extreme arguments and past the smooth blend's critical ratio.
mod theory_cli;
/// The demo's training pieces: the train2.py schedule and SWA over a real training run.
mod training;
/// The asymmetric-valley detector on synthetic valleys with known answers, and the probe CLI.
mod valley;
/// `probe --between A B` against PyTorch evaluating the interpolated weights with `bn_update`.
mod valley_between;
/// Traced BatchNorm refused, unused layers excluded, dropout deterministic under `--bn full`.
mod valley_bn_check;
/// `probe --direction hessian --compare-random M` on a valley whose sharpest direction is asymmetric.
mod valley_compare;
/// `probe --device cpu|cuda`.
mod valley_device;
/// `probe --directions`: load, check against the model, never overwrite.
mod valley_directions;
/// The `filter` direction on 1-D tensors: zeroed, or `d = w` with `--filter-keep-1d`.
mod valley_filter;
/// `probe --direction hessian` against a closed-form quadratic and autograd's full Hessian.
mod valley_hessian;
/// `probe --test-data`: the shift scale from train vs held-out profiles.
mod valley_shift;
/// Helpers for the probe CLI tests (Python-saved models, the CLI, its JSON).
mod valley_support;
/// `probe --surface` against PyTorch evaluating `w + a·d1 + b·d2`, and its row b = 0 against the profile.
mod valley_surface;
