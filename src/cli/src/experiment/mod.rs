//! The paper's experiment at small scale (He, Huang & Yuan 2019, §4–§5) as a multi-seed study,
//! one concept per file:
//!
//! - [`weights`]: the sorted walk over a VarStore's parameters (snapshot, restore, interpolate);
//! - [`solution`]: a solution's results with BatchNorm re-estimated (official `bn_update`);
//! - [`restart`]: SGD restarted from SWA and the `sgd_after_swa.py` selection rule;
//! - [`line`]: the SWA→SGD line (`interpulation.py`) and its fitted valley;
//! - [`shift`]: the train/test shift on held-out chunks and its sign test;
//! - [`gain_region`]: SWA's displacement against the fitted gain region (0, c_max);
//! - [`directions`]: random-direction probes;
//! - [`seed_run`]: the pipeline for one seed;
//! - [`facts`]: what one seed shows, property by property;
//! - [`verdict`]: k of N seeds, the Wilson interval, and the verdict;
//! - [`study`]: seeds 0..N, the summary table and the spreads;
//! - [`figures`] and [`report`]: the SVG figures and `report.md` (a minijinja template).
pub mod directions;
pub mod facts;
pub mod figures;
pub mod gain_region;
pub mod line;
pub mod report;
pub mod restart;
pub mod seed_run;
pub mod shift;
pub mod solution;
pub mod study;
pub mod verdict;
pub mod weights;

pub use study::{run_study, Study, StudyConfig};
