//! The body of `torch.ops.asymvalley.valley_probe` (registered in `src/ops/csrc/valley_op.cpp`):
//! the library's probe ([`avcore::valley::probe::run_probe`], the one `asymvalley probe` runs)
//! on a TorchScript module handed over as the bytes of a `torch.jit.save`.
//!
//! The request is a JSON object `{"config": {…}, "between_names": […], "direction_names": […],
//! "model": "…"}`: `config` is a [`ProbeConfig`] (missing fields take the CLI's defaults, unknown
//! ones are refused); `between_names` names the tensors of the two checkpoints of a line probe,
//! when given; `direction_names` names given directions as a directions file does
//! (`d{i}/{parameter}`, checked the same way); `model` is how errors and the report name the
//! module. The tensors come in one list: `inputs, targets`, then `test_inputs, test_targets`
//! when there is held-out data, then the checkpoints A and B (one tensor per name each), then
//! the given directions (one per direction name).
//!
//! The reply is `{"result": "profiles" | "surface", "report": …, "parameters": […]}` with the
//! probed directions as tensors, direction after direction, one tensor per name of
//! `parameters` (float32 or the parameter's dtype, on the CPU).
use avcore::error::{Error, Result};
use avcore::valley::directions::Direction;
use avcore::valley::probe::{
    run_probe, Dataset, DirectionSource, ProbeConfig, ProbeResult, StateSource,
};
use avcore::valley::torchscript::ScriptModel;
use tch::{Device, Tensor};

/// What Python sends besides the tensors.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Request {
    config: ProbeConfig,
    between_names: Vec<String>,
    direction_names: Vec<String>,
    model: Option<String>,
}

/// What goes back besides the tensors.
#[derive(serde::Serialize)]
struct Reply<'a, R: serde::Serialize> {
    result: &'static str,
    report: &'a R,
    parameters: Vec<String>,
}

/// Loads `bytes` (a `torch.jit.save` of the caller's module) in memory, nothing on disk.
fn load_module(bytes: &[u8], label: &str) -> Result<ScriptModel> {
    ScriptModel::load_bytes(bytes, label).map_err(|e| {
        Error::invalid(
            "module",
            label,
            format!("a torch.jit.save of a module ({e})"),
        )
    })
}

/// Runs the probe; returns the reply's JSON and the directions' tensors.
pub fn valley_probe(
    module: &[u8],
    tensors: Vec<Tensor>,
    has_test: bool,
    request: &str,
) -> Result<(String, Vec<Tensor>)> {
    let request: Request = serde_json::from_str(request).map_err(|e| {
        Error::invalid(
            "config",
            e,
            "a JSON object {\"config\": {probe settings}, \"between_names\": [...], \"model\": ...}",
        )
    })?;
    let k = request.between_names.len();
    let g = request.direction_names.len();
    if k > 0 && g > 0 {
        return Err(Error::invalid(
            "directions",
            g,
            "no given directions with a line (between): the line is the direction",
        ));
    }
    let want = 2 + if has_test { 2 } else { 0 } + 2 * k + g;
    if tensors.len() != want {
        return Err(Error::invalid(
            "tensors",
            tensors.len(),
            format!(
                "{want} tensors (inputs, targets{}, and {k} per checkpoint)",
                if has_test {
                    ", test inputs, test targets"
                } else {
                    ""
                }
            ),
        ));
    }
    let label = request.model.clone().unwrap_or_else(|| "<module>".into());
    let mut model = load_module(module, &label)?;
    let mut it = tensors.into_iter();
    let mut next = || {
        it.next()
            .ok_or_else(|| Error::invalid("tensors", want, "more tensors"))
    };
    let train = Dataset {
        inputs: next()?,
        targets: next()?,
        label: "inputs".into(),
    };
    let test = match has_test {
        true => Some(Dataset {
            inputs: next()?,
            targets: next()?,
            label: "test".into(),
        }),
        false => None,
    };
    let source = if k > 0 {
        let mut state = |name: &str| -> Result<StateSource> {
            let mut v = Vec::with_capacity(k);
            for n in &request.between_names {
                v.push((n.clone(), next()?));
            }
            Ok(StateSource::Tensors {
                label: name.into(),
                tensors: v,
            })
        };
        let a = state("between[0]")?;
        let b = state("between[1]")?;
        DirectionSource::Line([a, b])
    } else if g > 0 {
        let mut v = Vec::with_capacity(g);
        for n in &request.direction_names {
            v.push((n.clone(), next()?));
        }
        DirectionSource::Tensors {
            label: "directions".into(),
            tensors: v,
        }
    } else {
        DirectionSource::Draw
    };
    // No progress to report: Python waits for the result (the op runs to completion).
    let outcome = run_probe(
        &mut model,
        &train,
        test.as_ref(),
        source,
        &request.config,
        &mut |_| {},
    )?;
    let parameters = outcome
        .directions
        .first()
        .map(|d| d.names.clone())
        .unwrap_or_default();
    let json = match &outcome.result {
        ProbeResult::Profiles(r) => serde_json::to_string(&Reply {
            result: "profiles",
            report: r.as_ref(),
            parameters,
        })?,
        ProbeResult::Surface(r) => serde_json::to_string(&Reply {
            result: "surface",
            report: r.as_ref(),
            parameters,
        })?,
    };
    Ok((json, flatten(&outcome.directions)?))
}

/// Every direction's tensors, in order, copied to the CPU (independent of the module, which is
/// freed when the op returns).
fn flatten(directions: &[Direction]) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    for d in directions {
        for t in &d.tensors {
            out.push(t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?);
        }
    }
    Ok(out)
}
