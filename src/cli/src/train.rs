//! SGD with momentum and weight decay plus SWA, after the official `train2.py` (scheduled by the
//! library's optimizer wrapper, `asymvalley::optim`), and evaluation.
use crate::data::Split;
use crate::model::Network;
use asymvalley::average::{Averager, Rule};
use asymvalley::error::{Error, Result};
use asymvalley::optim::{Averaging, LrPolicy, Schedule, Unit};
use tch::{nn::VarStore, COptimizer, Kind, Tensor};

/// The demo's SWA settings: the official `train2.py` schedule, run by the library's optimizer
/// wrapper [`Averaging`] (this type only names the numbers and converts them).
///
/// With `t = epoch / swa_start` and `r = swa_lr/lr_init`: factor 1 for t ≤ 0.5,
/// `1 − (1 − r)(t − 0.5)/0.4` for t ≤ 0.9, r after; `lr = lr_init·factor`. SWA averages the
/// end-of-epoch weights from epoch `swa_start` (1-based) on.
///
/// ```
/// use asymvalley_cli::train::SwaSchedule;
/// let s = SwaSchedule { lr_init: 0.1, swa_lr: 0.05, swa_start: 126, epochs: 225 };
/// assert!((s.learning_rate(64) - 0.099008).abs() < 1e-6);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SwaSchedule {
    /// The initial learning rate.
    pub lr_init: f64,
    /// The constant rate while averaging.
    pub swa_lr: f64,
    /// The epoch (1-based count) from whose end SWA averages.
    pub swa_start: usize,
    /// The number of epochs.
    pub epochs: usize,
}

impl SwaSchedule {
    /// The wrapper's schedule (averages after every epoch from `swa_start` on) and learning rate.
    pub fn wrapper(&self) -> (Schedule, LrPolicy) {
        (
            Schedule {
                unit: Unit::Epochs,
                start: self.swa_start as u64,
                frequency: 1,
                end: Some(self.epochs as u64),
            },
            LrPolicy::Train2 {
                lr: self.lr_init,
                swa_lr: self.swa_lr,
            },
        )
    }

    /// The learning rate of 0-based epoch `epoch`.
    pub fn learning_rate(&self, epoch: usize) -> f64 {
        let (schedule, lr) = self.wrapper();
        lr.lr_at(&schedule, epoch as u64)
    }

    /// Whether SWA averages after 0-based epoch `epoch` (`train2.py`: `epoch + 1 >= swa_start`).
    pub fn averages_after(&self, epoch: usize) -> bool {
        self.wrapper().0.averages_at(epoch as u64 + 1)
    }
}

/// Mean cross-entropy of `logits` (`[N, C]`) against class indices `targets` (`[N]`).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    Ok(logits.f_cross_entropy_loss::<Tensor>(targets, None, tch::Reduction::Mean, -100, 0.0)?)
}

/// Loss (mean cross-entropy) and top-1 accuracy in percent.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Top-1 accuracy, percent.
    pub accuracy: f64,
}

/// Evaluates in eval mode (running BN statistics), `utils.eval` semantics: Σ(mean CE·b)/N.
pub fn evaluate<N: Network + ?Sized>(net: &N, split: &Split, batch: i64) -> Result<Evaluation> {
    let _guard = tch::no_grad_guard();
    let (mut loss_sum, mut correct, mut n) = (0.0, 0i64, 0i64);
    for (xs, ys) in split.batches(batch, None)? {
        let logits = net.forward_t(&xs, false)?;
        let b = ys.size().first().copied().unwrap_or(0);
        loss_sum += cross_entropy(&logits, &ys)?.f_double_value(&[])? * b as f64;
        correct += logits
            .f_argmax(-1, false)?
            .f_eq_tensor(&ys)?
            .f_sum(Kind::Int64)?
            .f_int64_value(&[])?;
        n += b;
    }
    if n == 0 {
        return Err(Error::invalid(
            "split",
            "an empty split",
            "at least one example",
        ));
    }
    let loss = loss_sum / n as f64;
    if !loss.is_finite() {
        return Err(Error::NotFinite {
            what: "evaluation loss".into(),
            value: loss,
        });
    }
    Ok(Evaluation {
        loss,
        accuracy: 100.0 * correct as f64 / n as f64,
    })
}

/// SGD settings (PyTorch `SGD(momentum, weight_decay)`) and the batch size and seed.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdConfig {
    /// Momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Mini-batch size.
    pub batch: i64,
    /// Seed of the batch order (epoch e uses seed + e).
    pub seed: u64,
}

/// An SGD optimizer over the VarStore's trainable variables.
pub fn sgd_optimizer(vs: &VarStore, lr: f64, sgd: &SgdConfig) -> Result<COptimizer> {
    let mut opt = COptimizer::sgd(lr, sgd.momentum, 0.0, sgd.weight_decay, false)?;
    for t in vs.trainable_variables() {
        opt.add_parameters(&t, 0)?;
    }
    Ok(opt)
}

/// One epoch of SGD; returns the running train-mode loss (`utils.train_epoch` semantics).
pub fn train_epoch<N: Network + ?Sized>(
    net: &N,
    opt: &mut COptimizer,
    split: &Split,
    sgd: &SgdConfig,
    epoch_seed: u64,
) -> Result<Evaluation> {
    let (mut loss_sum, mut correct, mut n) = (0.0, 0i64, 0i64);
    for (xs, ys) in split.batches(sgd.batch, Some(epoch_seed))? {
        let logits = net.forward_t(&xs, true)?;
        let loss = cross_entropy(&logits, &ys)?;
        opt.zero_grad()?;
        loss.f_backward()?;
        opt.step()?;
        let b = ys.size().first().copied().unwrap_or(0);
        loss_sum += loss.f_double_value(&[])? * b as f64;
        correct += logits
            .f_argmax(-1, false)?
            .f_eq_tensor(&ys)?
            .f_sum(Kind::Int64)?
            .f_int64_value(&[])?;
        n += b;
    }
    let loss = loss_sum / n.max(1) as f64;
    if !loss.is_finite() {
        return Err(Error::NotFinite {
            what: "training loss".into(),
            value: loss,
        });
    }
    Ok(Evaluation {
        loss,
        accuracy: 100.0 * correct as f64 / n.max(1) as f64,
    })
}

/// What SGD + SWA training produced.
pub struct SwaRun {
    /// The SWA average of the end-of-epoch weights from `swa_start` on.
    pub averager: Averager,
    /// The SGD optimizer, with its momentum buffers (the official `sgd_after_swa.py` reuses them).
    pub optimizer: COptimizer,
    /// Per epoch: learning rate and running train-mode loss/accuracy.
    pub epochs: Vec<(f64, Evaluation)>,
}

/// Trains `net` (variables in `vs`) with SGD on the `train2.py` schedule and averages with SWA
/// after every epoch from `swa_start` on. `on_epoch(epoch, lr, train)` reports progress.
pub fn train_sgd_swa<N: Network + ?Sized>(
    vs: &VarStore,
    net: &N,
    train: &Split,
    schedule: &SwaSchedule,
    sgd: &SgdConfig,
    mut on_epoch: impl FnMut(usize, f64, &Evaluation),
) -> Result<SwaRun> {
    if schedule.epochs == 0 {
        return Err(Error::invalid("epochs", 0, "at least 1 epoch"));
    }
    let (plan, lr) = schedule.wrapper();
    let optimizer = sgd_optimizer(vs, schedule.lr_init, sgd)?;
    // The wrapper validates the schedule (start in 1..=epochs) and sets each epoch's rate.
    let mut averaging = Averaging::new(vs, optimizer, Rule::Swa, plan, lr)?;
    let mut epochs = Vec::with_capacity(schedule.epochs);
    for epoch in 0..schedule.epochs {
        let lr = averaging.lr();
        let res = train_epoch(
            net,
            averaging.optimizer_mut(),
            train,
            sgd,
            sgd.seed.wrapping_add(epoch as u64),
        )?;
        averaging.end_epoch(vs)?;
        on_epoch(epoch, lr, &res);
        epochs.push((lr, res));
    }
    let (optimizer, averager) = averaging.into_parts();
    Ok(SwaRun {
        averager,
        optimizer,
        epochs,
    })
}

/// The inputs of a split's batches, for BatchNorm re-estimation.
pub fn input_batches(split: &Split, batch: i64, seed: Option<u64>) -> Result<Vec<Tensor>> {
    Ok(split
        .batches(batch, seed)?
        .into_iter()
        .map(|(xs, _)| xs)
        .collect())
}
