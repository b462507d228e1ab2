//! A small cache of [`FusedPlan`]s keyed by the call's [`Fingerprint`], for callers that hold no
//! plan of their own (the op library's free functions `torch.ops.asymvalley.*`).
//!
//! An update of the same pairs finds the plan built for them and reuses it as it is, so repeated
//! updates of one model never rebuild (on CUDA: never re-upload the device tables, no per-step
//! host-to-device copy). Pairs that match no plan get a new one; when the cache is full the least
//! recently used plan is dropped (its device tables with it). Several averages of one model (an
//! SWA and an EMA, or the update's `(avg, params)` and the bias's `(avg, out)`) each keep their
//! plan. A refused or ineligible call adds nothing.
use super::fused::{Fingerprint, FusedPlan, Ineligible};
use super::FusedOp;
use crate::Result;
use tch::Tensor;

/// Up to `capacity` plans, most recently used first.
#[derive(Debug)]
pub struct PlanCache {
    plans: Vec<FusedPlan>,
    capacity: usize,
    builds: u64,
}

impl PlanCache {
    /// The default capacity: 8 (a few averages of a few models per process).
    pub const CAPACITY: usize = 8;

    /// An empty cache of at most `capacity` plans (at least 1).
    pub fn new(capacity: usize) -> Self {
        PlanCache {
            plans: Vec::new(),
            capacity: capacity.max(1),
            builds: 0,
        }
    }

    /// How many plans were built so far (one per fingerprint not found in the cache).
    pub fn builds(&self) -> u64 {
        self.builds
    }

    /// How many plans the cache holds.
    pub fn len(&self) -> usize {
        self.plans.len()
    }

    /// Whether the cache holds no plan.
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// [`FusedPlan::apply`] (`scalar` `None`) or [`FusedPlan::apply_with_device_scalar`] through
    /// the plan built for these pairs, building one if none is.
    ///
    /// # Errors
    /// Those of the plan's `apply`; nothing is modified (tensors or cache) when it errs.
    pub fn apply(
        &mut self,
        op: FusedOp,
        avg: &[Tensor],
        model: &[Tensor],
        scalar: Option<&Tensor>,
    ) -> Result<std::result::Result<(), Ineligible>> {
        let fp = Fingerprint::of(avg, model);
        let found = self.plans.iter().position(|p| p.built_for(&fp));
        let mut plan = match found {
            Some(i) => self.plans.remove(i),
            None => FusedPlan::new(),
        };
        let out = plan.apply_fingerprinted(op, avg, model, scalar, Some(fp));
        // Keep a found plan even when this call was refused (it is still valid for its pairs);
        // a new one only when it was built.
        if found.is_some() || plan.builds() > 0 {
            if found.is_none() {
                self.builds += 1;
            }
            self.plans.insert(0, plan);
            self.plans.truncate(self.capacity);
        }
        out
    }
}

impl Default for PlanCache {
    fn default() -> Self {
        Self::new(Self::CAPACITY)
    }
}
