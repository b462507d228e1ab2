//! The fused kernel on CUDA: compiled at run time by NVRTC, launched through the driver API.
//!
//! Why this route: the torch wheel already ships NVRTC 13.0 (`nvidia/cu13/lib/libnvrtc.so.13`,
//! a dependency of torch), so it costs no set-up time and no download, where an ahead-of-time
//! nvcc build needs four more pinned packages (264 MB). Both libraries are `dlopen`ed on first
//! use, so the crate has no link-time CUDA dependency: without a driver or without NVRTC a call
//! here returns an error that says which is missing, and the CPU path is unaffected.
//!
//! - **Compile** once per process per architecture (`sm_XY` of the device): `average.cu` with
//!   `plan.cuh` as an in-memory header and the options of `csrc/fused/nvrtc_options.txt` (the
//!   same options the host-side test compiles with), to a cubin; cached.
//! - **Load** once per device, into the device's primary context (the one torch uses); cached.
//! - **Launch** one kernel per update on torch's current stream of that device (read through
//!   `c10::cuda::getCurrentCUDAStream`, resolved from the already-loaded `libc10_cuda`), with the
//!   plan's tables in device memory (uploaded when the plan is built, never per step). A launch
//!   does not synchronize and does not allocate, so it can be captured in a CUDA graph.
use super::ffi::{AvLayout, AV_OP_BIAS, AV_OP_COPY_IN, AV_OP_COPY_OUT, AV_OP_LERP};
use super::fused_cpu::dtype_code;
use crate::plan::{FusedOp, Layout};
use crate::{Error, Result};
use libloading::os::unix::{Library, Symbol, RTLD_GLOBAL, RTLD_LOCAL, RTLD_NOW};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use tch::{Device, Tensor};

/// The kernel's source, exactly as the launcher compiles it.
pub const KERNEL_SOURCE: &str = include_str!("../../csrc/fused/average.cu");
/// The header `average.cu` includes, handed to NVRTC in memory under the name `plan.cuh`.
pub const PLAN_HEADER: &str = include_str!("../../csrc/fused/plan.cuh");
/// NVRTC options, one per line (the architecture and include path are added by [`options`]).
pub const OPTIONS_FILE: &str = include_str!("../../csrc/fused/nvrtc_options.txt");
/// The kernel's entry point.
pub const KERNEL_NAME: &str = "av_apply";
/// Threads per block: 256 threads × 4-element vectors cover a 4096-element block in 4 steps.
pub const THREADS: u32 = 256;

/// `RTLD_NOLOAD` (glibc): open only if already loaded.
const RTLD_NOLOAD: c_int = 0x4;

/// The full NVRTC option list for `sm_{arch}`, with the CUDA headers from `include`.
pub fn options(arch: u32, include: &Path) -> Vec<String> {
    let mut out = vec![
        format!("--gpu-architecture=sm_{arch}"),
        format!("--include-path={}", include.display()),
    ];
    out.extend(
        OPTIONS_FILE
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from),
    );
    out
}

/// The folder of the torch wheel's CUDA libraries (`<site-packages>/nvidia/cu13`), found next to
/// the loaded `libtorch_cpu.so`, or `ASYMVALLEY_CUDA_HOME` when set.
pub fn cuda_home() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ASYMVALLEY_CUDA_HOME") {
        return Ok(PathBuf::from(dir));
    }
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let torch_lib = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| Path::new(p).parent().map(Path::to_path_buf));
    let Some(lib) = torch_lib else {
        return Err(unavailable(
            "NVRTC unavailable",
            "libtorch_cpu.so is not loaded, so the torch wheel's nvidia/cu13 folder is unknown \
             (set ASYMVALLEY_CUDA_HOME to it)",
        ));
    };
    // <site-packages>/torch/lib -> <site-packages>/nvidia/cu13
    let home = lib.join("../../nvidia/cu13");
    if home.join("lib").join("libnvrtc.so.13").exists() {
        return Ok(home);
    }
    Err(unavailable(
        "NVRTC",
        &format!(
            "{} has no lib/libnvrtc.so.13 (the nvidia-cuda-nvrtc wheel torch depends on); set \
             ASYMVALLEY_CUDA_HOME to the folder that has it",
            home.display()
        ),
    ))
}

fn unavailable(what: &str, why: &str) -> Error {
    Error::Shim {
        op: "fused CUDA update",
        msg: format!("{what}: {why}"),
    }
}

fn open(path: &str, flags: c_int, what: &str) -> Result<Library> {
    // SAFETY: loading a shared library runs its initializers; these are NVIDIA's CUDA libraries,
    // loaded the way torch itself loads them.
    unsafe { Library::open(Some(path), flags) }.map_err(|e| unavailable(what, &e.to_string()))
}

type NvrtcProgram = *mut c_void;

/// The NVRTC functions the launcher calls.
struct Nvrtc {
    create: Symbol<
        unsafe extern "C" fn(
            *mut NvrtcProgram,
            *const c_char,
            *const c_char,
            c_int,
            *const *const c_char,
            *const *const c_char,
        ) -> c_int,
    >,
    compile: Symbol<unsafe extern "C" fn(NvrtcProgram, c_int, *const *const c_char) -> c_int>,
    log_size: Symbol<unsafe extern "C" fn(NvrtcProgram, *mut usize) -> c_int>,
    log: Symbol<unsafe extern "C" fn(NvrtcProgram, *mut c_char) -> c_int>,
    cubin_size: Symbol<unsafe extern "C" fn(NvrtcProgram, *mut usize) -> c_int>,
    cubin: Symbol<unsafe extern "C" fn(NvrtcProgram, *mut c_char) -> c_int>,
    destroy: Symbol<unsafe extern "C" fn(*mut NvrtcProgram) -> c_int>,
    include: PathBuf,
    _builtins: Library,
    _lib: Library,
}

// SAFETY: NVRTC's API is thread-safe (each program is used by one call at a time here); the
// symbols are plain function pointers into libraries that are never unloaded.
unsafe impl Send for Nvrtc {}
unsafe impl Sync for Nvrtc {}

fn nvrtc() -> Result<&'static Nvrtc> {
    static NVRTC: OnceLock<std::result::Result<Nvrtc, String>> = OnceLock::new();
    NVRTC
        .get_or_init(|| load_nvrtc().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Shim {
            op: "fused CUDA update",
            msg: e.clone(),
        })
}

fn load_nvrtc() -> Result<Nvrtc> {
    let home = cuda_home()?;
    let lib = home.join("lib");
    // libnvrtc dlopens its builtins by bare soname, which the loader does not find inside a
    // wheel: loading them first, globally, by absolute path makes that dlopen find them loaded.
    let builtins = open(
        &lib.join("libnvrtc-builtins.so.13.0").to_string_lossy(),
        RTLD_NOW | RTLD_GLOBAL,
        "NVRTC",
    )?;
    let nv = open(
        &lib.join("libnvrtc.so.13").to_string_lossy(),
        RTLD_NOW | RTLD_LOCAL,
        "NVRTC",
    )?;
    let sym = |name: &str| -> Result<*mut c_void> {
        // SAFETY: looked up as an untyped pointer; each is cast below to its documented type.
        unsafe { nv.get::<*mut c_void>(name.as_bytes()) }
            .map(|s| *s)
            .map_err(|e| unavailable("NVRTC unavailable", &format!("{name}: {e}")))
    };
    for name in [
        "nvrtcCreateProgram",
        "nvrtcCompileProgram",
        "nvrtcGetProgramLogSize",
        "nvrtcGetProgramLog",
        "nvrtcGetCUBINSize",
        "nvrtcGetCUBIN",
        "nvrtcDestroyProgram",
    ] {
        sym(name)?;
    }
    // SAFETY: the signatures are those of nvrtc.h (CUDA 13.0); every symbol was found above.
    unsafe {
        Ok(Nvrtc {
            create: nv.get(b"nvrtcCreateProgram").map_err(sym_err)?,
            compile: nv.get(b"nvrtcCompileProgram").map_err(sym_err)?,
            log_size: nv.get(b"nvrtcGetProgramLogSize").map_err(sym_err)?,
            log: nv.get(b"nvrtcGetProgramLog").map_err(sym_err)?,
            cubin_size: nv.get(b"nvrtcGetCUBINSize").map_err(sym_err)?,
            cubin: nv.get(b"nvrtcGetCUBIN").map_err(sym_err)?,
            destroy: nv.get(b"nvrtcDestroyProgram").map_err(sym_err)?,
            include: home.join("include"),
            _builtins: builtins,
            _lib: nv,
        })
    }
}

fn sym_err(e: libloading::Error) -> Error {
    unavailable("a CUDA library lacks a symbol", &e.to_string())
}

/// A compiled kernel: the cubin and NVRTC's log (empty when there is no warning).
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The `sm_{arch}` cubin.
    pub cubin: Vec<u8>,
    /// NVRTC's log.
    pub log: String,
}

/// Compiles the kernel for `sm_{arch}` with NVRTC (no GPU or driver needed), uncached: the
/// host-side check that the exact source and options the launcher uses build.
///
/// # Errors
/// NVRTC unavailable, or the compile failed (the error carries NVRTC's log).
pub fn compile(arch: u32) -> Result<Compiled> {
    let nv = nvrtc()?;
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| Error::Shim {
            op: "NVRTC",
            msg: "a NUL byte in the kernel source or options".into(),
        })
    };
    let src = cstr(KERNEL_SOURCE)?;
    let name = cstr("average.cu")?;
    let header = cstr(PLAN_HEADER)?;
    let header_name = cstr("plan.cuh")?;
    let opts: Vec<CString> = options(arch, &nv.include)
        .iter()
        .map(|o| cstr(o))
        .collect::<Result<_>>()?;
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    let mut prog: NvrtcProgram = std::ptr::null_mut();
    // SAFETY: every string outlives the calls; `prog` is destroyed on every path below.
    unsafe {
        let rc = (nv.create)(
            &mut prog,
            src.as_ptr(),
            name.as_ptr(),
            1,
            &header.as_ptr(),
            &header_name.as_ptr(),
        );
        if rc != 0 {
            return Err(Error::Shim {
                op: "NVRTC",
                msg: format!("nvrtcCreateProgram failed with code {rc}"),
            });
        }
        let rc = (nv.compile)(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr());
        let mut size = 0usize;
        (nv.log_size)(prog, &mut size);
        let mut log = vec![0u8; size.max(1)];
        (nv.log)(prog, log.as_mut_ptr().cast());
        let log = CStr::from_bytes_until_nul(&log)
            .map(|c| c.to_string_lossy().trim().to_string())
            .unwrap_or_default();
        if rc != 0 {
            (nv.destroy)(&mut prog);
            return Err(Error::Shim {
                op: "NVRTC",
                msg: format!("compiling the fused kernel for sm_{arch} failed (code {rc}):\n{log}"),
            });
        }
        let mut size = 0usize;
        (nv.cubin_size)(prog, &mut size);
        let mut cubin = vec![0u8; size];
        let rc = (nv.cubin)(prog, cubin.as_mut_ptr().cast());
        (nv.destroy)(&mut prog);
        if rc != 0 || size == 0 {
            return Err(Error::Shim {
                op: "NVRTC",
                msg: format!("nvrtcGetCUBIN for sm_{arch} failed (code {rc}, {size} bytes)"),
            });
        }
        Ok(Compiled { cubin, log })
    }
}

type CuResult = c_int;
type CuDevice = c_int;
type Handle = *mut c_void;

/// The driver API functions the launcher calls (`libcuda.so.1`).
struct Driver {
    device_get: Symbol<unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult>,
    attribute: Symbol<unsafe extern "C" fn(*mut c_int, c_int, CuDevice) -> CuResult>,
    primary_ctx: Symbol<unsafe extern "C" fn(*mut Handle, CuDevice) -> CuResult>,
    push: Symbol<unsafe extern "C" fn(Handle) -> CuResult>,
    pop: Symbol<unsafe extern "C" fn(*mut Handle) -> CuResult>,
    module_load: Symbol<unsafe extern "C" fn(*mut Handle, *const c_void) -> CuResult>,
    get_function: Symbol<unsafe extern "C" fn(*mut Handle, Handle, *const c_char) -> CuResult>,
    #[allow(clippy::type_complexity)]
    launch: Symbol<
        unsafe extern "C" fn(
            Handle,
            c_uint,
            c_uint,
            c_uint,
            c_uint,
            c_uint,
            c_uint,
            c_uint,
            Handle,
            *mut *mut c_void,
            *mut *mut c_void,
        ) -> CuResult,
    >,
    error_string: Symbol<unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult>,
    _lib: Library,
}

// SAFETY: the driver API is thread-safe; the symbols point into a library never unloaded.
unsafe impl Send for Driver {}
unsafe impl Sync for Driver {}

fn driver() -> Result<&'static Driver> {
    static DRIVER: OnceLock<std::result::Result<Driver, String>> = OnceLock::new();
    DRIVER
        .get_or_init(|| load_driver().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Shim {
            op: "fused CUDA update",
            msg: e.clone(),
        })
}

fn load_driver() -> Result<Driver> {
    let lib = open("libcuda.so.1", RTLD_NOW | RTLD_LOCAL, "no CUDA driver")?;
    // SAFETY: the signatures are those of cuda.h (driver API, CUDA 12/13), by exported name.
    unsafe {
        let init: Symbol<unsafe extern "C" fn(c_uint) -> CuResult> =
            lib.get(b"cuInit").map_err(sym_err)?;
        let d = Driver {
            device_get: lib.get(b"cuDeviceGet").map_err(sym_err)?,
            attribute: lib.get(b"cuDeviceGetAttribute").map_err(sym_err)?,
            primary_ctx: lib.get(b"cuDevicePrimaryCtxRetain").map_err(sym_err)?,
            push: lib.get(b"cuCtxPushCurrent_v2").map_err(sym_err)?,
            pop: lib.get(b"cuCtxPopCurrent_v2").map_err(sym_err)?,
            module_load: lib.get(b"cuModuleLoadData").map_err(sym_err)?,
            get_function: lib.get(b"cuModuleGetFunction").map_err(sym_err)?,
            launch: lib.get(b"cuLaunchKernel").map_err(sym_err)?,
            error_string: lib.get(b"cuGetErrorString").map_err(sym_err)?,
            _lib: lib,
        };
        let rc = init(0);
        if rc != 0 {
            return Err(unavailable(
                "no usable CUDA driver",
                &format!("cuInit failed: {}", d.describe(rc)),
            ));
        }
        Ok(d)
    }
}

impl Driver {
    fn describe(&self, rc: CuResult) -> String {
        let mut s: *const c_char = std::ptr::null();
        // SAFETY: cuGetErrorString writes a pointer to a static string (or leaves it null).
        unsafe {
            (self.error_string)(rc, &mut s);
            if s.is_null() {
                format!("CUDA error {rc}")
            } else {
                format!("{} (CUDA error {rc})", CStr::from_ptr(s).to_string_lossy())
            }
        }
    }

    fn check(&self, rc: CuResult, what: &str) -> Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(Error::Shim {
                op: "fused CUDA update",
                msg: format!("{what}: {}", self.describe(rc)),
            })
        }
    }
}

/// A loaded kernel of one device: its primary context and the function handle.
#[derive(Clone, Copy)]
struct Kernel {
    ctx: usize,
    function: usize,
}

fn poisoned<T>(_: T) -> Error {
    Error::Shim {
        op: "fused CUDA update",
        msg: "the kernel cache's lock was poisoned by a panic".into(),
    }
}

/// Loads (once per device; compiling once per architecture) the kernel for CUDA device `index`.
/// A failure is remembered per device, so an update that falls back does not retry the compile.
fn kernel(index: usize) -> Result<Kernel> {
    static FAILED: OnceLock<Mutex<HashMap<usize, String>>> = OnceLock::new();
    let failed = FAILED.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(msg) = failed.lock().map_err(poisoned)?.get(&index) {
        return Err(Error::Shim {
            op: "fused CUDA update",
            msg: msg.clone(),
        });
    }
    let loaded = load_kernel(index);
    if let Err(e) = &loaded {
        let msg = match e {
            Error::Shim { msg, .. } => msg.clone(),
            other => other.to_string(),
        };
        failed.lock().map_err(poisoned)?.insert(index, msg);
    }
    loaded
}

fn load_kernel(index: usize) -> Result<Kernel> {
    static CUBINS: OnceLock<Mutex<HashMap<u32, Vec<u8>>>> = OnceLock::new();
    static KERNELS: OnceLock<Mutex<HashMap<usize, Kernel>>> = OnceLock::new();
    let kernels = KERNELS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut kernels = kernels.lock().map_err(poisoned)?;
    if let Some(&k) = kernels.get(&index) {
        return Ok(k);
    }
    let d = driver()?;
    let ordinal =
        c_int::try_from(index).map_err(|_| Error::invalid("device", index, "a CUDA ordinal"))?;
    let mut dev: CuDevice = 0;
    let (mut major, mut minor) = (0, 0);
    let mut ctx: Handle = std::ptr::null_mut();
    // SAFETY: out-pointers to locals; the attribute codes are cuda.h's
    // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR (75) and _MINOR (76).
    unsafe {
        d.check((d.device_get)(&mut dev, ordinal), "cuDeviceGet")?;
        d.check((d.attribute)(&mut major, 75, dev), "compute capability")?;
        d.check((d.attribute)(&mut minor, 76, dev), "compute capability")?;
        d.check((d.primary_ctx)(&mut ctx, dev), "cuDevicePrimaryCtxRetain")?;
    }
    let arch = (major * 10 + minor) as u32;
    let cubins = CUBINS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cubins = cubins.lock().map_err(poisoned)?;
    if let std::collections::hash_map::Entry::Vacant(slot) = cubins.entry(arch) {
        slot.insert(compile(arch)?.cubin);
    }
    let cubin = cubins
        .get(&arch)
        .map(|c| c.as_ptr())
        .unwrap_or(std::ptr::null());
    let name =
        CString::new(KERNEL_NAME).map_err(|_| Error::invalid("kernel", KERNEL_NAME, "a C name"))?;
    let mut module: Handle = std::ptr::null_mut();
    let mut function: Handle = std::ptr::null_mut();
    // SAFETY: the context is pushed around the load and popped on every path; the cubin is
    // alive (owned by the cache) for the call.
    unsafe {
        d.check((d.push)(ctx), "cuCtxPushCurrent")?;
        let rc = (d.module_load)(&mut module, cubin.cast());
        let rc2 = if rc == 0 {
            (d.get_function)(&mut function, module, name.as_ptr())
        } else {
            rc
        };
        let mut popped: Handle = std::ptr::null_mut();
        (d.pop)(&mut popped);
        d.check(rc, &format!("cuModuleLoadData (sm_{arch})"))?;
        d.check(rc2, "cuModuleGetFunction(av_apply)")?;
    }
    let k = Kernel {
        ctx: ctx as usize,
        function: function as usize,
    };
    kernels.insert(index, k);
    Ok(k)
}

/// `c10::cuda::CUDAStream` as returned by value (a `c10::Stream`: device type, device index,
/// stream id; 16 bytes, returned in two registers).
#[repr(C)]
#[derive(Clone, Copy)]
struct StreamRepr {
    device_type: i8,
    device_index: i8,
    id: i64,
}

/// torch's current stream on device `index` (`cudaStream_t`), from the loaded libc10_cuda.
fn current_stream(index: i8) -> Result<Handle> {
    type GetCurrent = unsafe extern "C" fn(i8) -> StreamRepr;
    type Raw = unsafe extern "C" fn(*const StreamRepr) -> Handle;
    static FNS: OnceLock<std::result::Result<(usize, usize), String>> = OnceLock::new();
    let fns = FNS.get_or_init(|| {
        let lib = open(
            "libc10_cuda.so",
            RTLD_NOW | RTLD_NOLOAD,
            "libc10_cuda.so is not loaded",
        )
        .map_err(|e| e.to_string())?;
        // SAFETY: looked up as untyped pointers, cast below to the functions' C++ ABI types:
        // `CUDAStream getCurrentCUDAStream(DeviceIndex)` and `cudaStream_t CUDAStream::stream() const`.
        let get = unsafe { lib.get::<*mut c_void>(b"_ZN3c104cuda20getCurrentCUDAStreamEa") }
            .map(|s| *s as usize)
            .map_err(|e| e.to_string())?;
        let raw = unsafe { lib.get::<*mut c_void>(b"_ZNK3c104cuda10CUDAStream6streamEv") }
            .map(|s| *s as usize)
            .map_err(|e| e.to_string())?;
        // libc10_cuda stays loaded (torch holds it); keep our reference too.
        std::mem::forget(lib);
        Ok((get, raw))
    });
    let &(get, raw) = fns
        .as_ref()
        .map_err(|e| unavailable("torch's CUDA stream is unavailable", e))?;
    // SAFETY: both addresses are the functions named above, in a library that stays loaded.
    unsafe {
        let get: GetCurrent = std::mem::transmute::<usize, GetCurrent>(get);
        let raw: Raw = std::mem::transmute::<usize, Raw>(raw);
        let s = get(index);
        Ok(raw(&s))
    }
}

/// Whether the fused kernel can run on CUDA device `index` here; `Err` says why not (no driver,
/// no NVRTC, a failed compile or load).
pub fn available(index: usize) -> Result<()> {
    kernel(index).map(|_| ())
}

/// The plan on one CUDA device: its tables in device memory (kept alive here) and the kernel.
#[derive(Debug)]
pub(crate) struct DevicePlan {
    /// starts, sizes, first_tensor, avg pointers, model pointers, avg dtypes, model dtypes.
    tables: Vec<Tensor>,
    n_tensors: u32,
    total: u64,
    block_elems: u64,
    blocks: u32,
    index: usize,
}

/// `AvTensors` of `average.cu`, with device pointers.
#[repr(C)]
struct AvTensorsDev {
    avg: u64,
    model: u64,
    avg_dtype: u64,
    model_dtype: u64,
}

impl DevicePlan {
    /// Uploads the plan's tables to device `index` (one host-to-device copy per table, at build
    /// time only). `Ok(Err(why))` when the kernel is not available on this device.
    pub(crate) fn build(
        index: usize,
        layout: &Layout,
        avg: &[Tensor],
        model: &[Tensor],
    ) -> Result<std::result::Result<Self, String>> {
        if let Err(e) = kernel(index) {
            return Ok(Err(e.to_string()));
        }
        let Ok(blocks) = u32::try_from(layout.blocks()) else {
            return Ok(Err(format!(
                "{} blocks exceed the grid's limit",
                layout.blocks()
            )));
        };
        if blocks > i32::MAX as u32 {
            return Ok(Err(format!("{blocks} blocks exceed the grid's limit")));
        }
        let device = Device::Cuda(index);
        let up = |v: Vec<i64>| Tensor::from_slice(&v).f_to_device(device);
        let as_i64 = |v: &[u64]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
        let codes = |ts: &[Tensor]| -> Result<Tensor> {
            let c: Vec<u8> = ts
                .iter()
                .map(|t| dtype_code(t.kind()).unwrap_or(u8::MAX))
                .collect();
            Ok(Tensor::from_slice(&c).f_to_device(device)?)
        };
        let first: Vec<i32> = layout.first_tensor().iter().map(|&t| t as i32).collect();
        let tables = vec![
            up(as_i64(layout.starts()))?,
            up(as_i64(layout.sizes()))?,
            Tensor::from_slice(&first).f_to_device(device)?,
            up(avg.iter().map(|t| t.data_ptr() as i64).collect())?,
            up(model.iter().map(|t| t.data_ptr() as i64).collect())?,
            codes(avg)?,
            codes(model)?,
        ];
        Ok(Ok(DevicePlan {
            tables,
            n_tensors: layout.sizes().len() as u32,
            total: layout.total(),
            block_elems: layout.block_elems(),
            blocks,
            index,
        }))
    }

    /// One launch of `op` over the whole plan on torch's current stream; no synchronization.
    /// `scalar_ptr`, when given, is the device address of a float64 the kernel reads as the op's
    /// scalar instead of the one in `op` (the caller checked it is a 0-dim float64 on this device).
    pub(crate) fn launch(&self, op: FusedOp, scalar_ptr: Option<*const f64>) -> Result<()> {
        if self.blocks == 0 {
            return Ok(());
        }
        let k = kernel(self.index)?;
        let d = driver()?;
        let stream = current_stream(self.index as i8)?;
        let ptr = |i: usize| self.tables[i].data_ptr() as u64;
        let mut layout = AvLayout {
            starts: ptr(0) as *const u64,
            sizes: ptr(1) as *const u64,
            first_tensor: ptr(2) as *const u32,
            n_tensors: self.n_tensors,
            total: self.total,
            block_elems: self.block_elems,
        };
        let mut tensors = AvTensorsDev {
            avg: ptr(3),
            model: ptr(4),
            avg_dtype: ptr(5),
            model_dtype: ptr(6),
        };
        let (mut code, mut scalar): (c_int, f64) = match op {
            FusedOp::Lerp(w) => (AV_OP_LERP, w),
            FusedOp::CopyIn => (AV_OP_COPY_IN, 0.0),
            FusedOp::CopyOut => (AV_OP_COPY_OUT, 0.0),
            FusedOp::Bias(b) => (AV_OP_BIAS, b),
        };
        let mut scalar_ptr: *const f64 = scalar_ptr.unwrap_or(std::ptr::null());
        let mut params: [*mut c_void; 5] = [
            (&mut layout as *mut AvLayout).cast(),
            (&mut tensors as *mut AvTensorsDev).cast(),
            (&mut code as *mut c_int).cast(),
            (&mut scalar as *mut f64).cast(),
            (&mut scalar_ptr as *mut *const f64).cast(),
        ];
        // SAFETY: the parameters match av_apply's signature (AvLayout, AvTensors, int, double,
        // const double*), each pointing at a live local; the tables live in `self.tables`; the
        // context is pushed and popped around the launch.
        unsafe {
            d.check((d.push)(k.ctx as Handle), "cuCtxPushCurrent")?;
            let rc = (d.launch)(
                k.function as Handle,
                self.blocks,
                1,
                1,
                THREADS,
                1,
                1,
                0,
                stream,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            );
            let mut popped: Handle = std::ptr::null_mut();
            (d.pop)(&mut popped);
            d.check(rc, "cuLaunchKernel(av_apply)")
        }
    }
}
