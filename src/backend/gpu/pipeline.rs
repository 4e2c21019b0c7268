//! The only code that creates shader modules, bind-group layouts and compute pipelines.
//! Everything is created once per device and cached under a typed key; kernels are
//! specialised with WGSL `override` constants named in the key, never by editing WGSL text.

use std::collections::HashMap;
use std::sync::Mutex;

use super::shaders::Shader;

/// The binding signature of a kernel: `reads` read-only storage buffers, then `writes`
/// read-write storage buffers, then one uniform params buffer (bind order convention).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) struct LayoutKey {
    pub reads: u8,
    pub writes: u8,
}

/// One compute pipeline: shader family, entry point, binding signature and override values.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct PipelineKey {
    pub shader: Shader,
    pub entry: &'static str,
    pub layout: LayoutKey,
    /// `(override name, value)`; values are u32 (booleans as 0/1).
    pub consts: Vec<(&'static str, u32)>,
}

impl PipelineKey {
    pub fn new(shader: Shader, entry: &'static str, reads: u8, writes: u8) -> Self {
        PipelineKey {
            shader,
            entry,
            layout: LayoutKey { reads, writes },
            consts: Vec::new(),
        }
    }

    pub fn with(mut self, name: &'static str, value: u32) -> Self {
        self.consts.push((name, value));
        self
    }

    /// Label used for the pipeline, its bind groups and passes, so validation errors name
    /// the kernel.
    pub fn label(&self) -> String {
        let mut s = format!("qronos.{}.{}", self.shader.name(), self.entry);
        for (k, v) in &self.consts {
            s.push_str(&format!(".{k}={v}"));
        }
        s
    }
}

#[derive(Default)]
struct Inner {
    modules: HashMap<Shader, wgpu::ShaderModule>,
    layouts: HashMap<LayoutKey, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
    pipelines: HashMap<PipelineKey, wgpu::ComputePipeline>,
}

/// Shader modules, layouts and pipelines of one device.
#[derive(Default)]
pub(crate) struct PipelineCache {
    inner: Mutex<Inner>,
}

impl PipelineCache {
    /// The bind-group layout and pipeline for `key`, created on first use.
    pub fn get(
        &self,
        device: &wgpu::Device,
        key: &PipelineKey,
    ) -> (wgpu::BindGroupLayout, wgpu::ComputePipeline) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *inner;
        let (bgl, pl) = inner
            .layouts
            .entry(key.layout)
            .or_insert_with(|| create_layout(device, key.layout))
            .clone();
        if let Some(p) = inner.pipelines.get(key) {
            return (bgl, p.clone());
        }
        let module = inner
            .modules
            .entry(key.shader)
            .or_insert_with(|| {
                device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(&format!("qronos.{}", key.shader.name())),
                    source: wgpu::ShaderSource::Wgsl(key.shader.source().into()),
                })
            })
            .clone();
        let label = key.label();
        let consts: Vec<(&str, f64)> = key.consts.iter().map(|&(k, v)| (k, f64::from(v))).collect();
        log::debug!("gpu: creating pipeline {label}");
        let pipe = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &consts,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        inner.pipelines.insert(key.clone(), pipe.clone());
        (bgl, pipe)
    }
}

fn create_layout(
    device: &wgpu::Device,
    key: LayoutKey,
) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let n = u32::from(key.reads) + u32::from(key.writes);
    let mut entries: Vec<_> = (0..n)
        .map(|i| storage(i, i < u32::from(key.reads)))
        .collect();
    entries.push(wgpu::BindGroupLayoutEntry {
        binding: n,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    });
    let label = format!("qronos.layout.r{}w{}", key.reads, key.writes);
    let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(&label),
        entries: &entries,
    });
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(&label),
        bind_group_layouts: &[Some(&bgl)],
        immediate_size: 0,
    });
    (bgl, pl)
}
