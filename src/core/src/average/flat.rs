//! Flat storage: one contiguous buffer per (device, dtype) group, with per-variable views.
//!
//! An update (lerp, first-update copy, copy-out, flat-side bias) is one fused pass of the plan
//! ([`crate::plan::FusedPlan`]) over every `(view, variable)` pair, whatever their number and
//! dtypes: it reads the average and the parameter and writes the average once, 12 bytes per fp32
//! parameter (10 for bf16 into fp32), the memory-bandwidth floor. The plan is rebuilt only when a
//! variable's storage, size, dtype or device changes. Where the pass cannot run (a non-contiguous
//! variable, variables on several devices, a device without the fused pass) the update falls back
//! to one fused `_foreach_*` call per group, with the same results. Half-precision sources get an
//! fp32 group, because a bf16 shadow with decay 0.9999 never moves.
use crate::error::{Error, Result};
use crate::plan::fused::{FusedPlan, Ineligible};
use crate::plan::FusedOp;
use crate::shim;
use std::cell::RefCell;
use tch::{Device, Kind, Tensor};

/// The dtype an average of `source` is kept in: fp32 for half precision, otherwise the same.
pub fn average_kind(source: Kind) -> Kind {
    match source {
        Kind::Half | Kind::BFloat16 => Kind::Float,
        other => other,
    }
}

/// What the storage needs to know of one variable.
#[derive(Clone, Debug, PartialEq)]
pub struct VarSpec {
    /// The variable's shape.
    pub shape: Vec<i64>,
    /// The model's dtype for it.
    pub kind: Kind,
    /// Its device.
    pub device: Device,
}

/// One (device, source dtype) group: a flat buffer and the views that tile it.
#[derive(Debug)]
pub struct FlatGroup {
    /// The device of every member.
    pub device: Device,
    /// The dtype of the model's variables in this group.
    pub source_kind: Kind,
    /// The contiguous 1-D buffer (dtype [`average_kind`]`(source_kind)`).
    pub buffer: Tensor,
    /// Views into `buffer`, one per member, shaped like the variable.
    pub views: Vec<Tensor>,
    /// The members' indices in the caller's variable list.
    pub members: Vec<usize>,
}

/// Averages of a list of variables, stored group-wise.
#[derive(Debug)]
pub struct FlatStorage {
    groups: Vec<FlatGroup>,
    len: usize,
    /// Every view in the caller's order (the plan's average list).
    ordered: Vec<Tensor>,
    plan: RefCell<PlanState>,
}

/// The fused plan and why the last update did not use it (if it did not).
#[derive(Debug, Default)]
struct PlanState {
    plan: FusedPlan,
    fallback: Option<Ineligible>,
}

impl FlatStorage {
    /// Allocates zeroed storage for `specs` (grouped in first-seen order of (device, dtype)).
    pub fn new(specs: &[VarSpec]) -> Result<Self> {
        let mut keys: Vec<(Device, Kind)> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let key = (spec.device, spec.kind);
            match keys.iter().position(|k| *k == key) {
                Some(g) => members[g].push(i),
                None => {
                    keys.push(key);
                    members.push(vec![i]);
                }
            }
        }
        let mut groups = Vec::with_capacity(keys.len());
        for ((device, source_kind), members) in keys.into_iter().zip(members) {
            let numels: Vec<i64> = members
                .iter()
                .map(|&i| specs[i].shape.iter().product())
                .collect();
            let total: i64 = numels.iter().sum();
            let buffer = Tensor::f_zeros([total], (average_kind(source_kind), device))?;
            let mut views = Vec::with_capacity(members.len());
            let mut offset = 0;
            for (&i, &numel) in members.iter().zip(&numels) {
                views.push(
                    buffer
                        .f_narrow(0, offset, numel)?
                        .f_view(specs[i].shape.as_slice())?,
                );
                offset += numel;
            }
            groups.push(FlatGroup {
                device,
                source_kind,
                buffer,
                views,
                members,
            });
        }
        let mut storage = FlatStorage {
            groups,
            len: specs.len(),
            ordered: Vec::new(),
            plan: RefCell::new(PlanState::default()),
        };
        storage.ordered = storage.views_in_order();
        Ok(storage)
    }

    /// How often the fused plan was (re)built, and why the last update fell back to the
    /// per-group `_foreach_*` path (`None` when it took the fused pass, or before any update).
    pub fn fused_status(&self) -> (u64, Option<Ineligible>) {
        match self.plan.try_borrow() {
            Ok(state) => (state.plan.builds(), state.fallback.clone()),
            Err(_) => (0, None),
        }
    }

    /// Runs `op` over every `(average, model[i])` pair through the plan; `false` (nothing
    /// changed) when the caller must take the per-group path instead.
    fn fused(&self, op: FusedOp, model: &[Tensor]) -> Result<bool> {
        let mut state = self.plan.try_borrow_mut().map_err(|_| Error::Shim {
            op: op.name(),
            msg: "the averager's plan is in use by another call".into(),
        })?;
        let outcome = state.plan.apply(op, &self.ordered, model)?;
        let applied = outcome.is_ok();
        state.fallback = outcome.err();
        Ok(applied)
    }

    /// The groups.
    pub fn groups(&self) -> &[FlatGroup] {
        &self.groups
    }

    /// The number of variables stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The view of variable `i` (in the caller's order).
    pub fn view(&self, i: usize) -> Option<&Tensor> {
        self.groups
            .iter()
            .find_map(|g| g.members.iter().position(|&m| m == i).map(|k| &g.views[k]))
    }

    /// Every view, in the caller's order.
    pub fn views_in_order(&self) -> Vec<Tensor> {
        let mut out: Vec<Option<Tensor>> = (0..self.len).map(|_| None).collect();
        for g in &self.groups {
            for (k, &m) in g.members.iter().enumerate() {
                out[m] = Some(g.views[k].shallow_clone());
            }
        }
        out.into_iter().flatten().collect()
    }

    fn pick(group: &FlatGroup, sources: &[Tensor]) -> Vec<Tensor> {
        group
            .members
            .iter()
            .map(|&m| sources[m].shallow_clone())
            .collect()
    }

    /// `avg ← avg + weight·(source − avg)` for every variable; `sources` in the caller's order.
    pub fn lerp_(&self, sources: &[Tensor], weight: f64) -> Result<()> {
        if self.fused(FusedOp::Lerp(weight), sources)? {
            return Ok(());
        }
        for g in &self.groups {
            shim::foreach_lerp_(&g.views, &Self::pick(g, sources), weight)?;
        }
        Ok(())
    }

    /// `avg ← source` for every variable.
    pub fn copy_from(&self, sources: &[Tensor]) -> Result<()> {
        if self.fused(FusedOp::CopyIn, sources)? {
            return Ok(());
        }
        for g in &self.groups {
            shim::foreach_copy_(&g.views, &Self::pick(g, sources))?;
        }
        Ok(())
    }

    /// `dest ← avg` for every variable (converted to the destination's dtype).
    pub fn copy_into(&self, dests: &[Tensor]) -> Result<()> {
        if self.fused(FusedOp::CopyOut, dests)? {
            return Ok(());
        }
        for g in &self.groups {
            shim::foreach_copy_(&Self::pick(g, dests), &g.views)?;
        }
        Ok(())
    }

    /// `dest ← avg + β·(avg − anchor)` for every variable; `dest` may alias `anchor`.
    pub fn biased_into(&self, dests: &[Tensor], anchors: &[Tensor], beta: f64) -> Result<()> {
        super::bias::validate_beta(beta)?;
        // Every group is checked before any is written: a refused β changes nothing.
        for g in &self.groups {
            super::bias::validate_beta_for(beta, g.buffer.kind())?;
        }
        // The fused pass writes the biased weights over their anchors (the Averager's case).
        let in_place = dests.len() == anchors.len()
            && dests
                .iter()
                .zip(anchors)
                .all(|(d, a)| d.data_ptr() == a.data_ptr() && d.size() == a.size());
        if in_place && self.fused(FusedOp::Bias(beta), anchors)? {
            return Ok(());
        }
        for g in &self.groups {
            super::bias::bias_toward_flat(
                &Self::pick(g, dests),
                &g.views,
                &Self::pick(g, anchors),
                beta,
            )?;
        }
        Ok(())
    }
}
