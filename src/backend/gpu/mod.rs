//! GPU backend: the [`Backend`] operations as WGSL compute shaders through wgpu, on any
//! Vulkan / Metal / DX12 / GL adapter (lavapipe in CI).
//!
//! Layout of this module (one kernel family = one `.wgsl` + one launcher file here):
//! - `mod.rs` (this file): the device context created once, matrices and index vectors, the
//!   one readback ([`Backend::download`]), error scopes, and binding-range ("panel") helpers;
//! - [`shaders`]: the one place where `.wgsl` files enter the binary;
//! - `pipeline`: the only code that creates bind-group layouts and pipelines (cached by a typed
//!   key, specialised by WGSL `override` constants);
//! - `gemm`, `gram`, `elementwise`, `dot`, `damping`, `cholesky`, `sweep`: launchers of the
//!   quantization engine; `gather`, `rmsnorm`, `rope`, `attention`, `silu_mul`, `nll`,
//!   `fake_quant` (and `elementwise`'s add_bias): launchers of the forward family, whose
//!   [`Forward`](super::Forward) impl is in `forward`.
//!
//! GPU rules kept here (DESIGN §2): nothing is read back except in `download` (damping λ and
//! the Cholesky status stay on the device as `1 × 1` matrices); each operation records one
//! command encoder and submits it; every storage binding is at most `binding_limit` bytes —
//! larger matrices are processed in column panels bound as sub-ranges of one buffer, at an
//! offset aligned down to `min_storage_buffer_offset_alignment`, with the remaining element
//! offset passed in the kernel's params.

mod attention;
mod cholesky;
mod damping;
mod dot;
mod elementwise;
mod fake_quant;
mod forward;
mod gather;
mod gemm;
mod gram;
mod nll;
mod pipeline;
mod rmsnorm;
mod rope;
pub mod shaders;
mod silu_mul;
mod sweep;

use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use super::{Backend, BackendInfo, DampRule, Grams, Region, SweepSpec};
use crate::grid::{Clip, Grid};
use crate::{Error, Result};
use pipeline::{PipelineCache, PipelineKey};

/// Which adapters [`GpuBackend::new`] may choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterChoice {
    /// Only discrete or integrated GPUs (what `--device gpu` / `auto` want for real work).
    HardwareOnly,
    /// Anything, software adapters (lavapipe) included — tests and CI.
    Any,
}

/// What an adapter offers, for `qronos devices` and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
}

/// Whether an [`AdapterReport::device_type`] names a hardware GPU (discrete or integrated).
pub fn is_hardware(device_type: &str) -> bool {
    device_type == device_type_name(wgpu::DeviceType::DiscreteGpu)
        || device_type == device_type_name(wgpu::DeviceType::IntegratedGpu)
}

fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "DiscreteGpu",
        wgpu::DeviceType::IntegratedGpu => "IntegratedGpu",
        wgpu::DeviceType::VirtualGpu => "VirtualGpu",
        wgpu::DeviceType::Cpu => "Cpu",
        wgpu::DeviceType::Other => "Other",
    }
}

fn backend_name(b: wgpu::Backend) -> String {
    match b {
        wgpu::Backend::Vulkan => "Vulkan".into(),
        wgpu::Backend::Metal => "Metal".into(),
        wgpu::Backend::Dx12 => "DX12".into(),
        wgpu::Backend::Gl => "GL".into(),
        other => format!("{other:?}"),
    }
}

fn new_instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

fn report(adapter: &wgpu::Adapter) -> AdapterReport {
    let info = adapter.get_info();
    let limits = adapter.limits();
    AdapterReport {
        name: info.name.clone(),
        backend: backend_name(info.backend),
        device_type: device_type_name(info.device_type).into(),
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_buffer_size: limits.max_buffer_size,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
    }
}

/// Preference order: hardware before software, then Vulkan/Metal/DX12 before GL.
fn preference(adapter: &wgpu::Adapter) -> (u8, u8) {
    let info = adapter.get_info();
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let api = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal => 0,
        wgpu::Backend::Dx12 => 1,
        wgpu::Backend::Gl => 3,
        _ => 2,
    };
    (kind, api)
}

fn sorted_adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.sort_by_key(preference);
    adapters
}

/// Every adapter wgpu can see, best first.
pub fn list_adapters() -> Vec<AdapterReport> {
    sorted_adapters(&new_instance())
        .iter()
        .map(report)
        .collect()
}

/// A dense column-major f32 matrix in one device buffer (see `backend` for the conventions).
#[derive(Debug)]
pub struct GpuMat {
    buf: wgpu::Buffer,
    rows: usize,
    cols: usize,
}

impl GpuMat {
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// A u32 index vector on the device. The host copy is kept as well (indices are always
/// uploaded from the host, so this is not a readback): launchers use it to bind only the
/// column panels an indexed kernel actually touches.
#[derive(Debug)]
pub struct GpuIdx {
    buf: wgpu::Buffer,
    host: Vec<u32>,
}

impl GpuIdx {
    pub fn len(&self) -> usize {
        self.host.len()
    }
    pub fn is_empty(&self) -> bool {
        self.host.is_empty()
    }
}

/// One storage binding: a byte range of a buffer.
#[derive(Clone, Copy)]
pub(crate) struct Bind<'a> {
    buf: &'a wgpu::Buffer,
    offset: u64,
    size: u64,
}

/// Columns `[c0, c1)` of a column-major matrix with `ld` rows, bound as one storage range.
/// `elem_off` is where element `(0, c0)` sits inside the binding (the binding starts at an
/// offset aligned down to the device's storage offset alignment).
#[derive(Clone, Copy)]
pub(crate) struct ColView<'a> {
    bind: Bind<'a>,
    elem_off: u32,
}

/// One compute dispatch, described the same way for every launcher: pipeline key, bindings
/// (read-only inputs first, then outputs), params bytes, workgroup counts.
pub(crate) struct Dispatch<'a> {
    pub key: PipelineKey,
    pub reads: Vec<Bind<'a>>,
    pub writes: Vec<Bind<'a>>,
    pub params: &'a [u8],
    pub groups: [u32; 3],
}

/// The GPU backend: one device, one queue, the pipeline cache.
pub struct GpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    /// Largest storage binding in bytes (the device limit, or less for tests).
    binding_limit: u64,
    /// `min_storage_buffer_offset_alignment`.
    align: u64,
    pipelines: PipelineCache,
    /// Errors no scope caught (device lost, uncaptured validation); reported by the next op.
    uncaptured: Arc<Mutex<Option<String>>>,
    /// A tiny buffer bound where a kernel's optional input is absent.
    dummy: wgpu::Buffer,
    /// Device buffers reused for streamed host inputs (the gram's token chunks), by slot;
    /// see [`GpuBackend::stream_upload`].
    streams: Mutex<Vec<Option<wgpu::Buffer>>>,
}

/// Bindings are also kept below 2 GiB so every element index fits a u32 with room to spare.
const MAX_BINDING: u64 = 1 << 31;
/// Smallest buffer we create (bindings must be non-empty).
const MIN_BUFFER: u64 = 16;
/// Workgroups per grid dimension a launcher may count on (WebGPU's guaranteed minimum of
/// `max_compute_workgroups_per_dimension`); larger grids are split into several dispatches.
pub(crate) const MAX_GROUPS_PER_DIM: usize = 65535;

impl GpuBackend {
    /// The best adapter allowed by `choice`, with the adapter's own limits requested.
    pub fn new(choice: AdapterChoice) -> Result<GpuBackend> {
        Self::with_binding_limit(choice, u64::MAX)
    }

    /// Like [`GpuBackend::new`], with storage bindings capped at `limit` bytes (lower than the
    /// device's limit): tests use it to exercise column paneling at small sizes.
    pub fn with_binding_limit(choice: AdapterChoice, limit: u64) -> Result<GpuBackend> {
        let instance = new_instance();
        let adapters = sorted_adapters(&instance);
        if adapters.is_empty() {
            return Err(Error::NoAdapter("wgpu found no adapter".into()));
        }
        let adapter = adapters
            .into_iter()
            .find(|a| choice == AdapterChoice::Any || is_hardware(&report(a).device_type))
            .ok_or_else(|| {
                Error::NoAdapter("no hardware GPU (only software adapters were found)".into())
            })?;
        let info = adapter.get_info();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("qronos"),
            required_features: wgpu::Features::empty(),
            required_limits: adapter.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::NoAdapter(format!("{}: request_device failed: {e}", info.name)))?;
        let limits = device.limits();
        let align = u64::from(limits.min_storage_buffer_offset_alignment).max(4);
        let binding_limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(MAX_BINDING)
            .min(limit);
        if binding_limit < 4 * align {
            return Err(Error::config(
                "binding limit",
                format!("{binding_limit} bytes is below 4 × the storage offset alignment {align}"),
            ));
        }
        log::info!(
            "gpu: {} ({}), {:?}; storage binding limit {} B (device {} B), max buffer {} B, \
             offset alignment {} B, workgroup storage {} B",
            info.name,
            backend_name(info.backend),
            info.device_type,
            binding_limit,
            limits.max_storage_buffer_binding_size,
            limits.max_buffer_size,
            align,
            limits.max_compute_workgroup_storage_size
        );
        let uncaptured = Arc::new(Mutex::new(None::<String>));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            log::error!("gpu: uncaptured error: {e}");
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));
        let sink = uncaptured.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if reason == wgpu::DeviceLostReason::Destroyed {
                log::debug!("gpu: device destroyed: {msg}");
                return;
            }
            log::error!("gpu: device lost ({reason:?}): {msg}");
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| format!("device lost ({reason:?}): {msg}"));
        });
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("qronos.dummy"),
            size: MIN_BUFFER,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Ok(GpuBackend {
            device,
            queue,
            info,
            limits,
            binding_limit,
            align,
            pipelines: PipelineCache::default(),
            uncaptured,
            dummy,
            streams: Mutex::new(Vec::new()),
        })
    }

    /// The adapter's name, e.g. `"llvmpipe (LLVM 15.0.6, 256 bits)"`.
    pub fn adapter_name(&self) -> String {
        self.info.name.clone()
    }

    /// Everything about the adapter in use, as [`list_adapters`] reports it (device limits).
    pub fn adapter_report(&self) -> AdapterReport {
        AdapterReport {
            name: self.info.name.clone(),
            backend: backend_name(self.info.backend),
            device_type: device_type_name(self.info.device_type).into(),
            max_storage_buffer_binding_size: self.limits.max_storage_buffer_binding_size,
            max_buffer_size: self.limits.max_buffer_size,
            max_compute_workgroup_storage_size: self.limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: self
                .limits
                .max_compute_invocations_per_workgroup,
        }
    }

    /// The storage binding size this backend panels to, in bytes.
    pub fn binding_limit(&self) -> u64 {
        self.binding_limit
    }

    // ----- buffers -----

    fn storage_usage() -> wgpu::BufferUsages {
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
    }

    fn check_size(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes > self.limits.max_buffer_size {
            return Err(Error::gpu(
                what,
                format!(
                    "{bytes} bytes exceed the adapter's max_buffer_size {}",
                    self.limits.max_buffer_size
                ),
            ));
        }
        Ok(())
    }

    /// A zero-initialised matrix buffer (wgpu zero-initialises every new buffer).
    pub(crate) fn new_mat(&self, label: &str, rows: usize, cols: usize) -> Result<GpuMat> {
        let bytes = (rows as u64 * cols as u64 * 4).max(MIN_BUFFER);
        self.check_size(label, bytes)?;
        let buf = self.scoped(label, || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage: Self::storage_usage(),
                mapped_at_creation: false,
            })
        })?;
        Ok(GpuMat { buf, rows, cols })
    }

    /// A read-only storage buffer holding `data` (uploaded at creation).
    pub(crate) fn init_buffer(&self, label: &str, data: &[u8]) -> Result<wgpu::Buffer> {
        self.check_size(label, data.len() as u64)?;
        if data.len() < MIN_BUFFER as usize {
            let mut padded = [0u8; MIN_BUFFER as usize];
            padded[..data.len()].copy_from_slice(data);
            return self.init_buffer(label, &padded);
        }
        self.scoped(label, || {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: data,
                    usage: Self::storage_usage(),
                })
        })
    }

    /// Upload `data` into the reusable stream buffer `slot` (grown when too small, else kept)
    /// and return that buffer; its first `data.len()` bytes (rounded up to 4) hold `data`.
    /// Saves a fresh device allocation per streamed chunk. Safe to call again while earlier
    /// submissions still read the buffer: `write_buffer` is ordered on the queue timeline,
    /// after everything already submitted.
    pub(crate) fn stream_upload(
        &self,
        slot: usize,
        label: &str,
        data: &[u8],
    ) -> Result<wgpu::Buffer> {
        let buf = self.stream_buffer(slot, label, data.len() as u64)?;
        if data.len() % 4 == 0 {
            self.queue.write_buffer(&buf, 0, data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(data.len().next_multiple_of(4), 0);
            self.queue.write_buffer(&buf, 0, &padded);
        }
        Ok(buf)
    }

    /// The reusable stream buffer `slot`, at least `bytes` long (grown when too small, else
    /// kept). Its contents are whatever was last written to it.
    pub(crate) fn stream_buffer(
        &self,
        slot: usize,
        label: &str,
        bytes: u64,
    ) -> Result<wgpu::Buffer> {
        let len = bytes.next_multiple_of(4).max(MIN_BUFFER);
        self.check_size(label, len)?;
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if streams.len() <= slot {
            streams.resize(slot + 1, None);
        }
        let buf = match &streams[slot] {
            Some(b) if b.size() >= len => b.clone(),
            _ => {
                // drop the old one first: its memory is released once in-flight work is done
                streams[slot] = None;
                let b = self.scoped(label, || {
                    self.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(label),
                        size: len,
                        usage: Self::storage_usage(),
                        mapped_at_creation: false,
                    })
                })?;
                streams[slot] = Some(b.clone());
                b
            }
        };
        Ok(buf)
    }

    // ----- panels -----

    /// How many whole columns of a matrix with `ld` rows fit one binding (≥ 1, else an error:
    /// a single column larger than the binding limit cannot be bound).
    pub(crate) fn panel_cols(&self, op: &str, ld: usize) -> Result<usize> {
        let col = (ld as u64 * 4).max(4);
        let usable = self.binding_limit - (self.align - 4);
        let n = usable / col;
        if n == 0 {
            return Err(Error::gpu(
                op,
                format!(
                    "one column of {ld} floats does not fit the storage binding limit of {} bytes",
                    self.binding_limit
                ),
            ));
        }
        Ok(n.min(u32::MAX as u64) as usize)
    }

    /// Bind columns `[c0, c1)` of `buf`, a column-major matrix with `ld` rows.
    pub(crate) fn view<'a>(
        &self,
        buf: &'a wgpu::Buffer,
        ld: usize,
        c0: usize,
        c1: usize,
    ) -> ColView<'a> {
        debug_assert!(c0 <= c1);
        let start = c0 as u64 * ld as u64 * 4;
        let end = c1 as u64 * ld as u64 * 4;
        if start >= buf.size() {
            // An empty panel at the very end (nothing is read or written through it), still
            // a valid non-empty binding.
            debug_assert!(c0 == c1 || ld == 0);
            return ColView {
                bind: Bind {
                    buf,
                    offset: 0,
                    size: 4,
                },
                elem_off: 0,
            };
        }
        let base = start - start % self.align;
        let mut size = (end - base).max(4);
        if base + size > buf.size() {
            size = buf.size() - base;
        }
        assert!(
            size <= self.binding_limit,
            "internal: panel of {size} bytes exceeds the binding limit {}",
            self.binding_limit
        );
        ColView {
            bind: Bind {
                buf,
                offset: base,
                size,
            },
            elem_off: ((start - base) / 4) as u32,
        }
    }

    /// Bind a whole buffer (must fit one binding; small vectors and scalars).
    pub(crate) fn whole<'a>(&self, op: &str, buf: &'a wgpu::Buffer) -> Result<Bind<'a>> {
        if buf.size() > self.binding_limit {
            return Err(Error::gpu(
                op,
                format!(
                    "a {}-byte vector exceeds the storage binding limit of {} bytes",
                    buf.size(),
                    self.binding_limit
                ),
            ));
        }
        Ok(Bind {
            buf,
            offset: 0,
            size: buf.size(),
        })
    }

    pub(crate) fn dummy(&self) -> Bind<'_> {
        Bind {
            buf: &self.dummy,
            offset: 0,
            size: MIN_BUFFER,
        }
    }

    /// Workgroups needed to cover `n` items, `per` items per workgroup, checked against the
    /// device's per-dimension limit.
    pub(crate) fn groups(&self, op: &str, n: usize, per: usize) -> Result<u32> {
        let g = n.div_ceil(per) as u64;
        if g > u64::from(self.limits.max_compute_workgroups_per_dimension) {
            return Err(Error::gpu(
                op,
                format!(
                    "{g} workgroups exceed max_compute_workgroups_per_dimension {}",
                    self.limits.max_compute_workgroups_per_dimension
                ),
            ));
        }
        Ok(g as u32)
    }

    // ----- recording -----

    /// Pipeline, bind, params, grid, dispatch: the five steps of every launch.
    pub(crate) fn record(&self, enc: &mut wgpu::CommandEncoder, d: Dispatch<'_>) -> Result<()> {
        if d.groups.contains(&0) {
            return Ok(());
        }
        let (layout, pipe) = self.pipelines.get(&self.device, &d.key);
        let label = d.key.label();
        let params = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(&label),
                contents: d.params,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries: Vec<wgpu::BindGroupEntry> = d
            .reads
            .iter()
            .chain(d.writes.iter())
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: b.buf,
                    offset: b.offset,
                    size: wgpu::BufferSize::new(b.size),
                }),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: entries.len() as u32,
            resource: params.as_entire_binding(),
        });
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&label),
            layout: &layout,
            entries: &entries,
        });
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(&label),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipe);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
        Ok(())
    }

    /// Run `f` inside validation / out-of-memory / internal error scopes; a captured error
    /// becomes `Error::Gpu { op, .. }`.
    fn scoped<T>(&self, op: &str, f: impl FnOnce() -> T) -> Result<T> {
        let s_internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let s_oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let s_valid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let errs = [
            pollster::block_on(s_valid.pop()),
            pollster::block_on(s_oom.pop()),
            pollster::block_on(s_internal.pop()),
        ];
        if let Some(e) = errs.into_iter().flatten().next() {
            return Err(Error::gpu(op, e));
        }
        self.take_uncaptured(op)?;
        Ok(out)
    }

    fn take_uncaptured(&self, op: &str) -> Result<()> {
        let mut slot = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = slot.take() {
            return Err(Error::gpu(op, e));
        }
        Ok(())
    }

    /// One operation: record into one encoder and submit it, all inside error scopes.
    pub(crate) fn op<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<T>,
    ) -> Result<T> {
        Ok(self.op_indexed(name, f)?.0)
    }

    /// [`GpuBackend::op`], also returning the submission (to wait for it).
    pub(crate) fn op_indexed<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<T>,
    ) -> Result<(T, wgpu::SubmissionIndex)> {
        let r = self.scoped(name, || {
            let mut enc = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(name) });
            let t = f(&mut enc)?;
            Ok((t, self.queue.submit([enc.finish()])))
        })?;
        // Non-blocking: lets wgpu release what finished submissions no longer need (params
        // buffers, uploaded token chunks) without waiting for anything.
        let _ = self.device.poll(wgpu::PollType::Poll);
        r
    }

    /// Block until `index` has finished on the device.
    pub(crate) fn wait_for(&self, op: &str, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| Error::gpu(op, format!("poll failed: {e}")))?;
        self.take_uncaptured(op)
    }
}

impl Backend for GpuBackend {
    type Mat = GpuMat;
    type Idx = GpuIdx;

    fn finish(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::gpu("finish", format!("poll failed: {e}")))?;
        self.take_uncaptured("finish")
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            device: "gpu".into(),
            adapter: format!("{} ({})", self.info.name, backend_name(self.info.backend)),
        }
    }

    fn upload(&self, rows: usize, cols: usize, data: &[f32]) -> Result<GpuMat> {
        assert_eq!(
            data.len(),
            rows * cols,
            "upload: {} values for a {rows} × {cols} matrix",
            data.len()
        );
        let buf = self.init_buffer("upload", bytemuck::cast_slice(data))?;
        Ok(GpuMat { buf, rows, cols })
    }

    fn zeros(&self, rows: usize, cols: usize) -> Result<GpuMat> {
        self.new_mat("zeros", rows, cols)
    }

    fn shape(&self, a: &GpuMat) -> (usize, usize) {
        (a.rows, a.cols)
    }

    fn download(&self, a: &GpuMat) -> Result<Vec<f32>> {
        let n = a.rows * a.cols;
        if n == 0 {
            return Ok(Vec::new());
        }
        let bytes = n as u64 * 4;
        let staging = self.scoped("download", || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("download.staging"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        self.op("download", |enc| {
            enc.copy_buffer_to_buffer(&a.buf, 0, &staging, 0, bytes);
            Ok(())
        })?;
        let result = Arc::new(Mutex::new(None));
        let slot = result.clone();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::gpu("download", format!("poll failed: {e}")))?;
        let mapped = result.lock().unwrap_or_else(|p| p.into_inner()).take();
        match mapped {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(Error::gpu("download", format!("map_async failed: {e}"))),
            None => return Err(Error::gpu("download", "map_async did not complete")),
        }
        self.take_uncaptured("download")?;
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::gpu("download", format!("mapped range: {e}")))?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        staging.unmap();
        Ok(out)
    }

    fn upload_idx(&self, data: &[u32]) -> Result<GpuIdx> {
        let buf = self.init_buffer("upload_idx", bytemuck::cast_slice(data))?;
        Ok(GpuIdx {
            buf,
            host: data.to_vec(),
        })
    }

    fn copy(&self, dst: &mut GpuMat, rd: Region, src: &GpuMat, rs: Region) -> Result<()> {
        elementwise::copy(self, dst, rd, src, rs)
    }

    fn gram_init(&self, d: usize, mismatched: bool, delta: bool) -> Result<Grams<GpuMat>> {
        gram::init(self, d, mismatched, delta)
    }

    fn gram_update(
        &self,
        acc: &mut Grams<GpuMat>,
        x: &[f32],
        xq: Option<&[f32]>,
        tokens: usize,
    ) -> Result<()> {
        gram::update(self, acc, x, xq, tokens)
    }

    fn gram_update_mat(
        &self,
        acc: &mut Grams<GpuMat>,
        x: &GpuMat,
        xq: Option<&GpuMat>,
    ) -> Result<()> {
        gram::update_mat(self, acc, x, xq)
    }

    fn gram_finish(&self, acc: &mut Grams<GpuMat>) -> Result<()> {
        gram::finish(self, acc)
    }

    fn axpy(
        &self,
        y: &mut GpuMat,
        ry: Region,
        alpha: f32,
        x: &GpuMat,
        rx: Region,
        scalar: Option<&GpuMat>,
    ) -> Result<()> {
        elementwise::axpy(self, y, ry, alpha, x, rx, scalar)
    }

    fn add_diag(&self, a: &mut GpuMat, alpha: f32, scalar: &GpuMat) -> Result<()> {
        elementwise::add_diag(self, a, alpha, scalar)
    }

    fn permute(&self, a: &GpuMat, rows: Option<&GpuIdx>, cols: Option<&GpuIdx>) -> Result<GpuMat> {
        elementwise::permute(self, a, rows, cols)
    }

    fn fix_dead(&self, h: &mut GpuMat, w: &mut GpuMat, dead: &GpuIdx) -> Result<()> {
        elementwise::fix_dead(self, h, w, dead)
    }

    fn gemm(
        &self,
        c: &mut GpuMat,
        rc: Region,
        alpha: f32,
        a: &GpuMat,
        ra: Region,
        ta: bool,
        b: &GpuMat,
        rb: Region,
        tb: bool,
        beta: f32,
    ) -> Result<()> {
        gemm::gemm(self, c, rc, alpha, a, ra, ta, b, rb, tb, beta)
    }

    fn dot_cols(&self, a: &GpuMat, ra: Region, b: &GpuMat, rb: Region) -> Result<GpuMat> {
        dot::dot_cols(self, a, ra, b, rb)
    }

    fn damping(&self, h: &GpuMat, rule: DampRule) -> Result<GpuMat> {
        damping::damping(self, h, rule)
    }

    fn inverse_cholesky(&self, a: &GpuMat) -> Result<(GpuMat, GpuMat)> {
        cholesky::inverse_cholesky(self, a)
    }

    fn sweep(
        &self,
        spec: &SweepSpec,
        w: &mut GpuMat,
        u: &GpuMat,
        q: &mut GpuMat,
        codes: &mut GpuMat,
        scales: &mut GpuMat,
        zeros: &mut GpuMat,
        err: &mut GpuMat,
        group_of: &GpuIdx,
        c0: usize,
        c1: usize,
    ) -> Result<()> {
        sweep::sweep(
            self, spec, w, u, q, codes, scales, zeros, err, group_of, c0, c1,
        )
    }

    fn group_params(
        &self,
        grid: Grid,
        clip: Clip,
        col_weights: Option<&[f32]>,
        w: &GpuMat,
        group_size: usize,
        scales: &mut GpuMat,
        zeros: &mut GpuMat,
    ) -> Result<()> {
        sweep::group_params(self, grid, clip, col_weights, w, group_size, scales, zeros)
    }
}

/// Layout of a Rust params struct, checked against its WGSL twin by `tests/gpu_wgsl.rs`.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct ParamLayout {
    /// The WGSL struct's name (same as the Rust struct's).
    pub name: &'static str,
    pub size: usize,
    /// `(field name, byte offset)` in declaration order.
    pub fields: &'static [(&'static str, usize)],
}

/// Declares a `#[repr(C)]` params struct of 4-byte scalars, its layout description, and a
/// compile-time check that its size is a multiple of 16 bytes (uniform buffer rules).
macro_rules! gpu_params {
    ($(#[$meta:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub(crate) struct $name { $(pub $field: $ty),* }
        impl $name {
            #[allow(dead_code)]
            pub(crate) const LAYOUT: $crate::backend::gpu::ParamLayout =
                $crate::backend::gpu::ParamLayout {
                    name: stringify!($name),
                    size: std::mem::size_of::<$name>(),
                    fields: &[$((stringify!($field), std::mem::offset_of!($name, $field))),*],
                };
        }
        const _: () = assert!(std::mem::size_of::<$name>() % 16 == 0);
        $(const _: () = assert!(std::mem::size_of::<$ty>() == 4);)*
    };
}
pub(crate) use gpu_params;

/// Every params struct and the shader it is declared in (for the WGSL layout test).
#[doc(hidden)]
pub fn param_layouts() -> Vec<(shaders::Shader, ParamLayout)> {
    let mut v = Vec::new();
    v.extend(gemm::layouts());
    v.extend(gram::layouts());
    v.extend(elementwise::layouts());
    v.extend(dot::layouts());
    v.extend(damping::layouts());
    v.extend(cholesky::layouts());
    v.extend(sweep::layouts());
    v.extend(gather::layouts());
    v.extend(rmsnorm::layouts());
    v.extend(rope::layouts());
    v.extend(attention::layouts());
    v.extend(silu_mul::layouts());
    v.extend(nll::layouts());
    v.extend(fake_quant::layouts());
    v
}

// The CLI may move the backend across threads (progress reporting, cancellation).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<GpuBackend>();
    send_sync::<GpuMat>();
    send_sync::<GpuIdx>();
};
