//! Checkpoint and resume of an [`Averager`]'s full state, in safetensors, written atomically.
//!
//! Layout: tensors `average.<name>` (the averages, fp32 for half models) and `copy.<name>` (the
//! copied variables); metadata `format`, `version`, `config` (JSON), `steps`, `n_averaged`,
//! `filled`, and `crc32` over every tensor's bytes in name order, so a corrupted file is refused
//! (safetensors alone only catches truncation). The write goes to a temporary file in the same
//! folder, is fsync'ed, then renamed over the target: a crash leaves the old checkpoint intact.
//! A resumed run continues bit for bit: the averages are stored exactly and the counters with them.
use crate::average::{Averager, AveragerConfig};
use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use tch::{Device, Kind, Tensor};

const FORMAT: &str = "asymvalley.averager";
const VERSION: &str = "1";

fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        other => {
            return Err(Error::invalid(
                "dtype",
                format!("{other:?}"),
                "a dtype safetensors can store",
            ))
        }
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// The bytes of a tensor, on the host, contiguous.
fn host_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let host = t.f_to_device(Device::Cpu)?.f_contiguous()?;
    let numel = host.numel();
    let mut bytes = vec![0u8; numel * host.kind().elt_size_in_bytes()];
    host.f_copy_data_u8(&mut bytes, numel)?;
    Ok(bytes)
}

fn crc_of<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for c in chunks {
        hasher.update(c);
    }
    hasher.finalize()
}

/// Writes `bytes` to `path` atomically: temp file in the same folder, fsync, rename, fsync folder.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        // The rename is durable only once the folder entry is on disk.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(&dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl Averager {
    /// Saves the full state (averages, copies, counters, configuration) to `path`, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut entries: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
        for (k, &i) in self.averaged_idx.iter().enumerate() {
            let v = &self.vars[i];
            let t = self
                .averages
                .view(k)
                .ok_or_else(|| Error::MissingVariable {
                    name: v.name.clone(),
                    missing_from: "the averager's storage",
                })?;
            let shape = t.size().iter().map(|&d| d as usize).collect();
            entries.insert(
                format!("average.{}", v.name),
                (dtype_of(t.kind())?, shape, host_bytes(t)?),
            );
        }
        for (k, &i) in self.copied_idx.iter().enumerate() {
            let t = &self.copies[k];
            let shape = t.size().iter().map(|&d| d as usize).collect();
            entries.insert(
                format!("copy.{}", self.vars[i].name),
                (dtype_of(t.kind())?, shape, host_bytes(t)?),
            );
        }
        let crc = crc_of(entries.values().map(|(_, _, b)| b.as_slice()));
        let metadata: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("version", VERSION.to_string()),
            ("config", serde_json::to_string(&self.config)?),
            ("steps", self.steps.to_string()),
            ("n_averaged", self.n_averaged.to_string()),
            ("filled", self.filled.to_string()),
            ("crc32", crc.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut views = Vec::with_capacity(entries.len());
        for (name, (dtype, shape, bytes)) in &entries {
            let view =
                TensorView::new(*dtype, shape.clone(), bytes).map_err(|e| Error::Checkpoint {
                    path: path.to_path_buf(),
                    reason: format!("cannot encode `{name}`: {e:?}"),
                })?;
            views.push((name.clone(), view));
        }
        let bytes = safetensors::tensor::serialize(views, &Some(metadata)).map_err(|e| {
            Error::Checkpoint {
                path: path.to_path_buf(),
                reason: format!("cannot serialize: {e:?}"),
            }
        })?;
        write_atomically(path, &bytes)
    }

    /// Replaces this averager's state with the one saved at `path`.
    ///
    /// The file must have been saved by an averager over the same variables (names, shapes,
    /// dtypes) with the same configuration. Everything is read and checked before anything is
    /// changed: on error the averager is as it was.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bad = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| match e {
            SafeTensorError::MetadataIncompleteBuffer => {
                bad("truncated: the header promises more bytes than the file holds".into())
            }
            other => bad(format!("not a safetensors file ({other:?})")),
        })?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("truncated or malformed ({e:?})")))?;
        let info = meta.metadata().clone().unwrap_or_default();
        let field = |key: &str| {
            info.get(key)
                .cloned()
                .ok_or_else(|| bad(format!("metadata `{key}` is missing")))
        };
        if field("format")? != FORMAT {
            return Err(bad(format!(
                "format `{}` is not `{FORMAT}`",
                field("format")?
            )));
        }
        if field("version")? != VERSION {
            return Err(bad(format!(
                "version `{}` is not supported (expected {VERSION})",
                field("version")?
            )));
        }
        let config: AveragerConfig = serde_json::from_str(&field("config")?).map_err(|e| {
            bad(format!(
                "metadata `config` is not a valid configuration ({e})"
            ))
        })?;
        if config != self.config {
            return Err(Error::Mismatch {
                what: "configuration of checkpoint",
                name: path.display().to_string(),
                got: format!("{config:?}"),
                expected: format!("{:?}", self.config),
            });
        }
        let number = |key: &str| -> Result<u64> {
            field(key)?
                .parse()
                .map_err(|_| bad(format!("metadata `{key}` is not an integer")))
        };
        let (steps, n_averaged) = (number("steps")?, number("n_averaged")?);
        let filled = field("filled")? == "true";
        let crc: u32 = field("crc32")?
            .parse()
            .map_err(|_| bad("metadata `crc32` is not an integer".into()))?;

        let mut names: Vec<String> = st.names().into_iter().cloned().collect();
        names.sort();
        let actual_crc = crc_of(
            names
                .iter()
                .filter_map(|n| st.tensor(n).ok())
                .map(|v| v.data()),
        );
        if actual_crc != crc {
            return Err(bad(format!(
                "corrupted: crc32 of the tensor data is {actual_crc}, the file says {crc}"
            )));
        }
        let expected: Vec<String> = self
            .averaged_idx
            .iter()
            .map(|&i| format!("average.{}", self.vars[i].name))
            .chain(
                self.copied_idx
                    .iter()
                    .map(|&i| format!("copy.{}", self.vars[i].name)),
            )
            .collect();
        if let Some(extra) = names.iter().find(|n| !expected.contains(n)) {
            return Err(Error::MissingVariable {
                name: extra.clone(),
                missing_from: "the model (it is in the checkpoint)",
            });
        }
        let want: Vec<Tensor> = self
            .averages
            .views_in_order()
            .into_iter()
            .chain(self.copies.iter().map(|t| t.shallow_clone()))
            .collect();
        let mut loaded = Vec::with_capacity(expected.len());
        for (name, target) in expected.iter().zip(&want) {
            let view = st.tensor(name).map_err(|_| Error::MissingVariable {
                name: name.clone(),
                missing_from: "the checkpoint",
            })?;
            let kind = kind_of(view.dtype())
                .ok_or_else(|| bad(format!("`{name}` has unsupported dtype {:?}", view.dtype())))?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let got = crate::average::flat::VarSpec {
                shape,
                kind,
                device: target.device(),
            };
            let spec = crate::average::flat::VarSpec {
                shape: target.size(),
                kind: target.kind(),
                device: target.device(),
            };
            crate::average::averager::check_matches(name, &spec, &got)?;
            loaded.push(Tensor::f_from_data_size(view.data(), &got.shape, kind)?);
        }
        // Everything is read and checked: now overwrite.
        let _guard = tch::no_grad_guard();
        crate::shim::foreach_copy_(&want, &loaded)?;
        self.steps = steps;
        self.n_averaged = n_averaged;
        self.filled = filled;
        Ok(())
    }
}
