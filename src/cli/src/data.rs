//! The embedded UCI optical digits data (1,797 8×8 images, 10 classes, CC BY 4.0), with the
//! fixed train/test split made by `fixtures/make_digits.py`, and seeded mini-batches.
use asymvalley::error::{Error, Result};
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

const DIGITS: &[u8] = include_bytes!("../../../fixtures/digits.safetensors");

/// Inputs (`[N, 64]`, fp32 in [0, 1]) and labels (`[N]`, int64).
#[derive(Debug)]
pub struct Split {
    /// The inputs.
    pub inputs: Tensor,
    /// The class labels.
    pub targets: Tensor,
}

impl Split {
    /// The detector's evaluation data: this split's batches in order, `batch` examples at a time.
    pub fn probe_data(&self, batch: i64) -> Result<asymvalley::valley::ProbeData> {
        Ok(asymvalley::valley::ProbeData {
            batches: self.batches(batch, None)?,
        })
    }

    /// The number of examples.
    pub fn len(&self) -> i64 {
        self.targets.size().first().copied().unwrap_or(0)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Mini-batches of at most `batch` examples, in a seeded shuffled order (`seed = None`: in order).
    pub fn batches(&self, batch: i64, seed: Option<u64>) -> Result<Vec<(Tensor, Tensor)>> {
        if batch < 1 {
            return Err(Error::invalid("batch", batch, "an integer >= 1"));
        }
        let n = self.len();
        let order = match seed {
            Some(s) => {
                let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(s);
                let mut idx: Vec<i64> = (0..n).collect();
                rand::seq::SliceRandom::shuffle(idx.as_mut_slice(), &mut rng);
                Tensor::from_slice(&idx).f_to_device(self.inputs.device())?
            }
            None => Tensor::f_arange(n, (Kind::Int64, self.inputs.device()))?,
        };
        let mut out = Vec::new();
        let mut start = 0;
        while start < n {
            let idx = order.f_narrow(0, start, batch.min(n - start))?;
            out.push((
                self.inputs.f_index_select(0, &idx)?,
                self.targets.f_index_select(0, &idx)?,
            ));
            start += batch;
        }
        Ok(out)
    }
}

/// The digits data set, split.
#[derive(Debug)]
pub struct Digits {
    /// 1,437 training examples.
    pub train: Split,
    /// 360 test examples.
    pub test: Split,
}

fn tensor(st: &SafeTensors, name: &str, device: Device) -> Result<Tensor> {
    let bad = |reason: String| Error::Data {
        path: "fixtures/digits.safetensors (embedded)".into(),
        reason,
    };
    let view = st
        .tensor(name)
        .map_err(|_| bad(format!("tensor `{name}` is missing")))?;
    let kind = match view.dtype() {
        safetensors::Dtype::U8 => Kind::Uint8,
        safetensors::Dtype::I64 => Kind::Int64,
        other => {
            return Err(bad(format!(
                "tensor `{name}` has dtype {other:?}, expected U8 or I64"
            )))
        }
    };
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_data_size(view.data(), &shape, kind)?.f_to_device(device)?)
}

impl Digits {
    /// Loads the embedded data onto `device`; pixels (0..16) are scaled to [0, 1].
    pub fn load(device: Device) -> Result<Self> {
        let st = SafeTensors::deserialize(DIGITS).map_err(|e| Error::Data {
            path: "fixtures/digits.safetensors (embedded)".into(),
            reason: format!("{e:?}"),
        })?;
        let split = |prefix: &str| -> Result<Split> {
            let images = tensor(&st, &format!("{prefix}_inputs"), device)?;
            let n = images.size().first().copied().unwrap_or(0);
            Ok(Split {
                inputs: images
                    .f_to_kind(Kind::Float)?
                    .f_div_scalar(16.0)?
                    .f_reshape([n, 64])?,
                targets: tensor(&st, &format!("{prefix}_targets"), device)?,
            })
        };
        Ok(Digits {
            train: split("train")?,
            test: split("test")?,
        })
    }
}
