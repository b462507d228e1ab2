//! Checkpoint and resume of an [`Averager`]'s full state, in safetensors, written atomically.
//!
//! Layout: tensors `average.<name>` (the averages, fp32 for half models) and `copy.<name>` (the
//! copied variables); metadata `format`, `version`, `config` (JSON), `steps`, `n_averaged`,
//! `filled`, and `crc32`.
//!
//! The checksum covers everything load trusts: every metadata entry but `crc32` itself (key and
//! value, keys sorted), then every tensor's name, dtype, shape and bytes (names sorted). CRC-32
//! detects every single-bit error and every burst up to 32 bits, so a flipped bit or a hand edit
//! anywhere in the header or body is refused (safetensors alone only catches truncation). The
//! counters are parsed strictly (canonical decimal, `true`/`false`) and must be consistent and
//! fit an `i64` (the op library's counter type), so no resumed counter can wrap.
//!
//! Version 1 files (checksum over tensor bytes only) are refused with a message saying so:
//! their metadata was never protected, so reading them would trust unchecked counters.
//!
//! The write goes to a temporary file `.<name>.tmp-<pid>` in the same folder, is fsync'ed, then
//! renamed over the target: a crash leaves the old checkpoint intact. A process killed during a
//! save leaves its temporary file; the next save to the same target removes every such file whose
//! process no longer runs, so they cannot pile up.
//! A resumed run continues bit for bit: the averages are stored exactly and the counters with them.
use crate::average::{Averager, AveragerConfig};
use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use tch::{Device, Kind, Tensor};

const FORMAT: &str = "asymvalley.averager";
const VERSION: &str = "2";
/// The largest counter a checkpoint may hold: the op library stores counters as `int64`.
const MAX_COUNTER: u64 = i64::MAX as u64;

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

/// CRC-32 of the canonical stream of what load trusts: `key \0 value \0` for each metadata
/// entry but `crc32` (sorted by key), then `name \0 dtype \0 shape \0 len bytes` for each tensor
/// (sorted by name). The lengths make the stream unambiguous (no two files give the same stream).
fn checksum<'a>(
    metadata: &BTreeMap<&str, &str>,
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (k, v) in metadata.iter().filter(|(k, _)| **k != "crc32") {
        for part in [k.as_bytes(), b"\0", v.as_bytes(), b"\0"] {
            h.update(part);
        }
    }
    for (name, dtype, shape, data) in tensors {
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(format!("{dtype:?}\0{shape:?}\0{}\0", data.len()).as_bytes());
        h.update(data);
    }
    h.finalize()
}

/// Removes `.<file_name>.tmp-<pid>` files in `dir` left by processes that no longer run (a save
/// killed half-way). Only our own naming is touched, and only where `/proc` can tell us that the
/// writer is gone; a running writer's file is left alone.
fn remove_stale_temp_files(dir: &Path, file_name: &str) {
    let proc_root = Path::new("/proc");
    if !proc_root.join("self").exists() {
        return;
    }
    let prefix = format!(".{file_name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !proc_root.join(pid.to_string()).exists() {
            // Best effort: a file another cleaner removed first is not an error.
            let _ = std::fs::remove_file(entry.path());
        }
    }
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
    remove_stale_temp_files(&dir, &file_name);
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
        let (config, steps, n_averaged, filled) = (
            serde_json::to_string(&self.config)?,
            self.steps.to_string(),
            self.n_averaged.to_string(),
            self.filled.to_string(),
        );
        let mut fields: BTreeMap<&str, &str> = [
            ("format", FORMAT),
            ("version", VERSION),
            ("config", config.as_str()),
            ("steps", steps.as_str()),
            ("n_averaged", n_averaged.as_str()),
            ("filled", filled.as_str()),
        ]
        .into_iter()
        .collect();
        let crc = checksum(
            &fields,
            entries
                .iter()
                .map(|(n, (d, s, b))| (n.as_str(), *d, s.as_slice(), b.as_slice())),
        )
        .to_string();
        fields.insert("crc32", &crc);
        let metadata: HashMap<String, String> = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
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
                .map(String::as_str)
                .ok_or_else(|| bad(format!("metadata `{key}` is missing")))
        };
        if field("format")? != FORMAT {
            return Err(bad(format!(
                "format `{}` is not `{FORMAT}`",
                field("format")?
            )));
        }
        match field("version")? {
            VERSION => {}
            "1" => {
                return Err(bad(format!(
                    "version 1 is no longer read: its checksum did not cover the counters, so \
                     they cannot be trusted (expected version {VERSION}; resume the run that \
                     wrote it from its start, or re-save it with the version that wrote it)"
                )))
            }
            other => {
                return Err(bad(format!(
                    "version `{other}` is not supported (expected {VERSION})"
                )))
            }
        }
        // The checksum first: nothing below is trusted before it matches.
        let crc: u32 = field("crc32")?
            .parse()
            .map_err(|_| bad("metadata `crc32` is not an integer".into()))?;
        let mut names: Vec<String> = st.names().into_iter().cloned().collect();
        names.sort();
        let mut views = Vec::with_capacity(names.len());
        for n in &names {
            let view = st
                .tensor(n)
                .map_err(|e| bad(format!("tensor `{n}` is malformed ({e:?})")))?;
            views.push((n.as_str(), view));
        }
        let fields: BTreeMap<&str, &str> =
            info.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let actual_crc = checksum(
            &fields,
            views
                .iter()
                .map(|(n, v)| (*n, v.dtype(), v.shape(), v.data())),
        );
        if actual_crc != crc {
            return Err(bad(format!(
                "corrupted: crc32 of the header and data is {actual_crc}, the file says {crc}"
            )));
        }
        let config: AveragerConfig = serde_json::from_str(field("config")?).map_err(|e| {
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
        // Strict: canonical decimal only (no sign, no leading zeros), at most MAX_COUNTER, so a
        // resumed counter can neither wrap nor overflow the op library's int64.
        let counter = |key: &str| -> Result<u64> {
            let text = field(key)?;
            match text.parse::<u64>() {
                Ok(v) if v.to_string() == text && v <= MAX_COUNTER => Ok(v),
                Ok(v) if v.to_string() == text => Err(bad(format!(
                    "metadata `{key}` = {v} is out of range (expected at most {MAX_COUNTER}, \
                     so the counter cannot wrap)"
                ))),
                _ => Err(bad(format!(
                    "metadata `{key}` = `{text}` is not a non-negative decimal integer"
                ))),
            }
        };
        let (steps, n_averaged) = (counter("steps")?, counter("n_averaged")?);
        let filled = match field("filled")? {
            "true" => true,
            "false" => false,
            other => {
                return Err(bad(format!(
                    "metadata `filled` = `{other}` is not `true` or `false`"
                )))
            }
        };
        if n_averaged > steps || (n_averaged > 0 && !filled) || (filled && steps == 0) {
            return Err(bad(format!(
                "inconsistent counters: steps = {steps}, n_averaged = {n_averaged}, \
                 filled = {filled} (expected n_averaged <= steps, and filled once anything \
                 was averaged and only after a step)"
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
