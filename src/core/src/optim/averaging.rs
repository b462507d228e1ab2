//! [`Averaging`]: a tch optimizer plus an averager of the same `VarStore`, driven by a schedule.
use super::inner::InnerOptimizer;
use super::schedule::{LrPolicy, Schedule, Unit};
use crate::average::{Averager, AveragerConfig, EmaConfig, Rule};
use crate::bn::{reestimate_batch_norm, BatchNormModel, BnWeighting};
use crate::error::{Error, Result};
use std::path::Path;
use tch::nn::{self, VarStore};
use tch::Tensor;

/// SWA or EMA on top of any `nn::Optimizer`.
///
/// Every tick (a step or an epoch, as the [`Schedule`] says) runs the averager's update: before
/// `start` ticks nothing is averaged (an EMA mirrors the model, as ema-pytorch and timm do), from
/// then on every `frequency`-th tick averages. The learning rate of the next tick is set from the
/// [`LrPolicy`] after each tick. The averager's own step counter is the schedule position, so
/// [`save`](Self::save) / [`load`](Self::load) resume the schedule and the learning rate exactly.
pub struct Averaging<O: InnerOptimizer = nn::Optimizer> {
    opt: O,
    averager: Averager,
    schedule: Schedule,
    lr: LrPolicy,
    /// An optional EMA updated after every optimizer step, alongside the scheduled average.
    ema: Option<Averager>,
}

impl<O: InnerOptimizer> std::fmt::Debug for Averaging<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Averaging")
            .field("averager", &self.averager)
            .field("schedule", &self.schedule)
            .field("lr", &self.lr)
            .finish_non_exhaustive()
    }
}

impl<O: InnerOptimizer> Averaging<O> {
    /// Wraps `opt`, which optimizes the trainable variables of `vs`, with the averaging `rule`
    /// (SWA, or EMA with its warm-up) on `schedule`, and sets the first tick's learning rate.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a start of 0 or after the end, a frequency of 0, a negative or
    /// NaN learning rate, or a `VarStore` without variables; nothing is changed then.
    pub fn new(
        vs: &VarStore,
        mut opt: O,
        rule: Rule,
        schedule: Schedule,
        lr: LrPolicy,
    ) -> Result<Self> {
        schedule.validate()?;
        lr.validate(&schedule)?;
        let config = AveragerConfig {
            rule,
            // The averager's update k (0-based) completes tick k+1.
            update_after_step: schedule.start - 1,
            update_every: schedule.frequency,
            average_buffers: false,
        };
        let averager = Averager::new(vs, config)?;
        opt.set_lr(lr.lr_at(&schedule, 0))?;
        Ok(Averaging {
            opt,
            averager,
            schedule,
            lr,
            ema: None,
        })
    }

    /// Adds an EMA (with its warm-up) updated after every optimizer step from now on, next to the
    /// scheduled average: SWA and EMA in one run. Its first update copies the model.
    ///
    /// # Errors
    /// An out-of-range decay or warm-up, or an EMA already added; nothing changes then.
    pub fn with_ema(mut self, vs: &VarStore, ema: EmaConfig) -> Result<Self> {
        if self.ema.is_some() {
            return Err(Error::invalid(
                "with_ema",
                "a second EMA",
                "at most one EMA per wrapper",
            ));
        }
        self.ema = Some(Averager::new(
            vs,
            AveragerConfig {
                rule: Rule::Ema(ema),
                ..AveragerConfig::swa()
            },
        )?);
        Ok(self)
    }

    /// The per-step EMA, when one was added with [`with_ema`](Self::with_ema).
    pub fn ema(&self) -> Option<&Averager> {
        self.ema.as_ref()
    }

    /// The completed ticks (steps or epochs, as the schedule counts).
    pub fn ticks(&self) -> u64 {
        self.averager.steps()
    }

    /// The learning rate the next tick runs with.
    pub fn lr(&self) -> f64 {
        self.lr.lr_at(&self.schedule, self.ticks())
    }

    /// The averager (the average, its counters).
    pub fn averager(&self) -> &Averager {
        &self.averager
    }

    /// The inner optimizer, e.g. to change its momentum. Its learning rate is reset by the policy
    /// at every tick.
    pub fn optimizer_mut(&mut self) -> &mut O {
        &mut self.opt
    }

    /// Ends the wrapping: the inner optimizer (with its state) and the averager.
    pub fn into_parts(self) -> (O, Averager) {
        (self.opt, self.averager)
    }

    /// Zeroes the gradients of the optimized variables.
    pub fn zero_grad(&mut self) -> Result<()> {
        self.opt.zero_grad()
    }

    /// `zero_grad`, `loss.backward()`, then [`step`](Self::step).
    pub fn backward_step(&mut self, vs: &VarStore, loss: &Tensor) -> Result<()> {
        self.check_model(vs)?;
        self.opt.zero_grad()?;
        loss.f_backward()?;
        self.step(vs)
    }

    /// The inner optimizer's step, then, on a steps schedule, the tick (average when due, set the
    /// learning rate).
    ///
    /// # Errors
    /// The model no longer matches what was wrapped (a variable added or removed after wrapping)
    /// or the average is swapped in: the step is refused before the optimizer runs.
    pub fn step(&mut self, vs: &VarStore) -> Result<()> {
        self.check_model(vs)?;
        self.opt.step()?;
        if let Some(ema) = self.ema.as_mut() {
            ema.update(vs)?;
        }
        if self.schedule.unit == Unit::Steps {
            self.tick(vs)?;
        }
        Ok(())
    }

    /// Ends an epoch: on an epochs schedule, the tick (average when due, set the learning rate).
    ///
    /// # Errors
    /// On a steps schedule (epochs are not ticks there), or when the model does not match.
    pub fn end_epoch(&mut self, vs: &VarStore) -> Result<()> {
        if self.schedule.unit != Unit::Epochs {
            return Err(Error::invalid(
                "end_epoch",
                "called on a steps schedule",
                "a schedule with unit = epochs",
            ));
        }
        self.check_model(vs)?;
        self.tick(vs)
    }

    fn check_model(&self, vs: &VarStore) -> Result<()> {
        if self.averager.is_swapped_in() || self.ema.as_ref().is_some_and(Averager::is_swapped_in) {
            return Err(Error::invalid(
                "step",
                "called while the average is swapped into the model",
                "the model's own weights (leave the swap first)",
            ));
        }
        self.averager.model_variables(vs).map(|_| ())
    }

    fn tick(&mut self, vs: &VarStore) -> Result<()> {
        self.averager.update(vs)?;
        self.opt.set_lr(self.lr())
    }

    /// Runs `f` with the average swapped into `vs` (for evaluation), then puts the model's own
    /// weights back, whatever `f` returns.
    pub fn with_average<R>(&mut self, vs: &VarStore, f: impl FnOnce() -> R) -> Result<R> {
        self.averager.swap_in(vs)?;
        let out = f();
        self.averager.swap_out(vs)?;
        Ok(out)
    }

    /// Runs `f` with the average swapped in and its own BatchNorm statistics: the swap, one
    /// re-estimation pass over `batches` through [`reestimate_batch_norm`] (the official
    /// `bn_update` is [`BnWeighting::SampleWeighted`]), `f`, then the swap back, which also
    /// restores the model's own running statistics. Returns `f`'s result.
    pub fn with_average_bn<M, R>(
        &mut self,
        vs: &VarStore,
        model: &M,
        batches: impl IntoIterator<Item = Tensor>,
        weighting: BnWeighting,
        f: impl FnOnce() -> R,
    ) -> Result<R>
    where
        M: BatchNormModel + ?Sized,
    {
        self.averager.swap_in(vs)?;
        let out = reestimate_batch_norm(model, batches, weighting).map(|_| f());
        self.averager.swap_out(vs)?;
        out
    }

    /// Writes the average into the model for good (the end of training; torchcontrib's final
    /// `swap_swa_sgd`).
    pub fn copy_average_to(&self, vs: &VarStore) -> Result<()> {
        self.averager.copy_to(vs)
    }

    /// Writes the flat-side-biased solution `w̄ + β(w̄ − w)` into the model, `w` being the model's
    /// current (last SGD) weights. Re-estimate BatchNorm afterwards with
    /// [`reestimate_batch_norm`](crate::bn::reestimate_batch_norm).
    pub fn write_biased(&self, vs: &VarStore, beta: f64) -> Result<()> {
        self.averager.write_biased(vs, beta)
    }

    /// Saves the averaging state and the schedule position, atomically (the model is the caller's
    /// `VarStore::save`; tch cannot save the inner optimizer's state).
    ///
    /// The EMA, if any, goes to `<path>.ema` (also atomic, written second).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.averager.save(path)?;
        match &self.ema {
            Some(ema) => ema.save(ema_path(path)),
            None => Ok(()),
        }
    }

    /// Resumes from [`save`](Self::save): the average, the position, and the learning rate of the
    /// next tick. On error nothing changes.
    pub fn load(&mut self, vs: &VarStore, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if let Some(ema) = &self.ema {
            // Both files are checked by loading into scratch copies before either is applied.
            let mut main = Averager::new(vs, *self.averager.config())?;
            main.load(path)?;
            let mut e = Averager::new(vs, *ema.config())?;
            e.load(ema_path(path))?;
            self.averager = main;
            self.ema = Some(e);
            let lr = self.lr();
            return self.opt.set_lr(lr);
        }
        self.averager.model_variables(vs)?;
        self.averager.load(path)?;
        let lr = self.lr();
        self.opt.set_lr(lr)
    }
}

fn ema_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".ema");
    p.into()
}
