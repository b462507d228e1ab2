//! What the library's stateful types are under threads, checked when the crate compiles.
//!
//! [`Averager`] and [`Averaging`] hold `tch::Tensor`s, which tch makes `Send` (a tensor handle may
//! move to another thread) but not `Sync` (libtorch does not make concurrent in-place writes to
//! one tensor safe). Both types are therefore `Send` and not `Sync`:
//!
//! - an averager (or an `Averaging` optimizer) can be built on one thread and moved to another,
//!   which then updates it (tested below);
//! - it cannot be shared by reference between threads; every update takes `&mut self`, and
//!   sharing one needs a `Mutex`, which then serializes the updates.
//!
//! The assertions below make a change that loses `Send` (a raw pointer in a field) or gains `Sync`
//! (an `unsafe impl` that would allow `&Averager` on two threads) a compile error here.
use crate::average::flat::FlatStorage;
use crate::average::Averager;
use crate::optim::Averaging;

/// Compiles only for `T: Send`.
const fn assert_send<T: Send>() {}

/// Compiles for every `T` unless `T: Sync`: with `T: Sync` both impls apply, and the inferred
/// marker `M` of `not_sync::<T, _>()` is ambiguous (the `static_assertions` crate's trick).
trait NotSync<M> {
    fn check() {}
}
impl<T: ?Sized> NotSync<()> for T {}
/// The marker of the impl that exists only for `Sync` types.
#[allow(dead_code)]
struct IsSync;
impl<T: ?Sized + Sync> NotSync<IsSync> for T {}

const _: () = assert_send::<Averager>();
const _: () = assert_send::<FlatStorage>();
const _: () = assert_send::<Averaging>();
const _: fn() = || <Averager as NotSync<_>>::check();
const _: fn() = || <FlatStorage as NotSync<_>>::check();
const _: fn() = || <Averaging as NotSync<_>>::check();

#[cfg(test)]
mod tests {
    use crate::average::{Averager, AveragerConfig};
    use tch::{nn::VarStore, Device, Kind, Tensor};

    /// Built here, moved to another thread with its model, updated there: the running mean of the
    /// values fed there (a closed form), and the averager comes back with it.
    #[test]
    fn an_averager_moved_to_another_thread_updates_there() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[4]);
        let averager = Averager::new(&vs, AveragerConfig::swa()).unwrap();
        let (averager, vs) = std::thread::spawn(move || {
            let mut averager = averager;
            let mut w = w;
            for v in [1.0, 2.0, 6.0] {
                tch::no_grad(|| {
                    let _ = w.fill_(v);
                });
                averager.update(&vs).unwrap();
            }
            (averager, vs)
        })
        .join()
        .unwrap();
        assert_eq!(averager.n_averaged(), 3);
        let three = Tensor::full([4], 3.0, (Kind::Float, Device::Cpu));
        assert!(averager
            .averaged("w")
            .unwrap()
            .allclose(&three, 1e-6, 1e-6, false));
        // Back on this thread, the same averager keeps averaging the same model.
        let mut averager = averager;
        let mut w = vs.variables()["w"].shallow_clone();
        tch::no_grad(|| {
            let _ = w.fill_(7.0);
        });
        averager.update(&vs).unwrap();
        let four = Tensor::full([4], 4.0, (Kind::Float, Device::Cpu));
        assert!(averager
            .averaged("w")
            .unwrap()
            .allclose(&four, 1e-6, 1e-6, false));
    }
}
