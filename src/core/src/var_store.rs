//! The one walk over a tch `VarStore`: its variables sorted by name.
//!
//! `VarStore::variables()` is a `HashMap`, whose order changes from run to run; every consumer
//! that pairs variables across calls (the averager's flat storage, a detector's directions, the
//! experiment's snapshots) needs one fixed order, and the same one, so they all walk here.
use tch::nn::VarStore;
use tch::Tensor;

/// Which variables of a `VarStore` a walk visits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vars {
    /// Every variable.
    All,
    /// Those that require a gradient: the parameters.
    Trainable,
    /// Those that do not: the buffers (BatchNorm running statistics, counters).
    Buffers,
}

/// The variables of `vs` that `which` selects, as `(name, alias)` pairs sorted by name. The
/// tensors alias the store's: writing into them (under `no_grad`) moves the model.
pub fn sorted_variables(vs: &VarStore, which: Vars) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| match which {
            Vars::All => true,
            Vars::Trainable => t.requires_grad(),
            Vars::Buffers => !t.requires_grad(),
        })
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn walks_are_sorted_by_name_and_split_parameters_from_buffers() {
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        for name in ["c", "a", "b"] {
            let _ = root.zeros(name, &[1]);
        }
        for name in ["z_buf", "m_buf"] {
            let _ = root.zeros_no_train(name, &[1]);
        }
        let names = |w| -> Vec<String> {
            sorted_variables(&vs, w)
                .into_iter()
                .map(|(n, t)| {
                    assert_eq!(t.kind(), Kind::Float);
                    n
                })
                .collect()
        };
        assert_eq!(names(Vars::Trainable), ["a", "b", "c"]);
        assert_eq!(names(Vars::Buffers), ["m_buf", "z_buf"]);
        assert_eq!(names(Vars::All), ["a", "b", "c", "m_buf", "z_buf"]);
    }
}
