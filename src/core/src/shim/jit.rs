//! A safe handle on a `torch::jit::Module` (csrc/torchscript.cpp).
//!
//! tch 0.24's `CModule` exposes `named_parameters` but no buffers, so a scripted model's
//! BatchNorm running statistics can be neither read nor reset through it. [`JitModule`] owns a
//! module loaded by the shim and lends its parameters and buffers as aliases (writing into them
//! moves the model). Every call turns a C++ exception into [`Error::Shim`].
use super::{ffi, status};
use crate::error::{Error, Result};
use std::ffi::{c_void, CStr, CString};
use std::os::raw::{c_char, c_int};
use std::path::Path;
use tch::Tensor;
use torch_sys::C_tensor;

/// An owned TorchScript module (freed on drop). Not `Send`: libtorch modules are not safe to
/// share across threads without a lock, and nothing here needs to.
#[derive(Debug)]
pub struct JitModule {
    ptr: *mut c_void,
}

impl Drop for JitModule {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `asymvalley_jit_load` and is freed exactly once, here.
        unsafe { ffi::asymvalley_jit_free(self.ptr) }
    }
}

extern "C" fn collect(data: *mut c_void, name: *const c_char, t: *mut C_tensor) {
    // SAFETY: `data` is the `&mut Vec` that `JitModule::named` passes for the duration of the
    // call, `name` a NUL-terminated string alive during the callback, and `t` a fresh
    // `new at::Tensor` whose ownership passes to the `Tensor` built here.
    unsafe {
        let v = &mut *(data as *mut Vec<(String, Tensor)>);
        let name = CStr::from_ptr(name).to_string_lossy().into_owned();
        v.push((name, Tensor::from_ptr(t)));
    }
}

impl JitModule {
    /// Loads a `torch.jit.save` file and puts the module in eval mode.
    pub fn load(path: &Path) -> Result<Self> {
        let c = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| Error::invalid("model", path.display(), "a path without NUL bytes"))?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: `c` is a valid C string for the call; `ptr` receives a new module on success
        // and is left NULL on failure.
        status("torch::jit::load", unsafe {
            ffi::asymvalley_jit_load(c.as_ptr(), &mut ptr)
        })?;
        Ok(JitModule { ptr })
    }

    /// Loads the bytes of a `torch.jit.save` (e.g. a Python caller's `io.BytesIO`) and puts the
    /// module in eval mode; nothing touches the disk.
    pub fn load_bytes(bytes: &[u8]) -> Result<Self> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: `bytes` is valid for `bytes.len()` bytes for the call (C++ copies them before
        // it returns); `ptr` receives a new module on success and is left NULL on failure.
        status("torch::jit::load", unsafe {
            ffi::asymvalley_jit_load_bytes(bytes.as_ptr().cast(), bytes.len(), &mut ptr)
        })?;
        Ok(JitModule { ptr })
    }

    /// The parameters (`buffers` false) or buffers (true) with their dotted names, in the
    /// module's order, as aliases of the module's tensors.
    pub fn named(&self, buffers: bool) -> Result<Vec<(String, Tensor)>> {
        let mut v: Vec<(String, Tensor)> = Vec::new();
        // SAFETY: `ptr` is a live module; `collect` pushes into `v` only during this call.
        status("named tensors", unsafe {
            ffi::asymvalley_jit_named(
                self.ptr,
                c_int::from(buffers),
                &mut v as *mut _ as *mut c_void,
                collect,
            )
        })?;
        Ok(v)
    }

    /// Switches train mode on or off (for every submodule).
    pub fn train(&self, on: bool) -> Result<()> {
        // SAFETY: `ptr` is a live module.
        status("train", unsafe {
            ffi::asymvalley_jit_train(self.ptr, c_int::from(on))
        })
    }

    /// Moves every parameter and buffer to `device` (the CPU or a CUDA device). Aliases taken
    /// before the move still point at the old tensors: take them again afterwards.
    pub fn to_device(&self, device: tch::Device) -> Result<()> {
        let code = match device {
            tch::Device::Cpu => -1,
            tch::Device::Cuda(i) => c_int::try_from(i)
                .map_err(|_| Error::invalid("device", format!("cuda:{i}"), "a CUDA index"))?,
            other => {
                return Err(Error::invalid(
                    "device",
                    format!("{other:?}"),
                    "cpu or cuda:N",
                ))
            }
        };
        // SAFETY: `ptr` is a live module.
        status("to device", unsafe {
            ffi::asymvalley_jit_to(self.ptr, code)
        })
    }

    /// `forward(xs)`; a tuple result gives its first element, anything else not a tensor is an error.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut out = std::ptr::null_mut();
        // SAFETY: `ptr` is a live module and `xs` a live tensor borrowed for the call; `out`
        // receives a new tensor on success.
        status("the model's forward", unsafe {
            ffi::asymvalley_jit_forward(self.ptr, xs.as_ptr(), &mut out)
        })?;
        // SAFETY: on success `out` is a fresh `new at::Tensor` whose ownership we take.
        Ok(unsafe { Tensor::from_ptr(out) })
    }
}
