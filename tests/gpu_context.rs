//! The GPU context: adapter listing and choice, backend info, and device-side failures
//! surfacing as `Error::Gpu` / `Error::NoAdapter` values rather than panics.

#[path = "common/gpu.rs"]
mod gpu_common;

use qronos::backend::gpu::{is_hardware, list_adapters, AdapterChoice, GpuBackend};
use qronos::backend::{Backend, SweepSpec};
use qronos::grid::Grid;
use qronos::Error;

#[test]
fn hardware_classification() {
    assert!(is_hardware("DiscreteGpu"));
    assert!(is_hardware("IntegratedGpu"));
    assert!(!is_hardware("Cpu"));
    assert!(!is_hardware("VirtualGpu"));
    assert!(!is_hardware("Other"));
}

#[test]
fn adapters_are_listed_and_the_best_is_chosen() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    let all = list_adapters();
    assert!(
        !all.is_empty(),
        "a backend opened but list_adapters is empty"
    );
    for a in &all {
        assert!(
            a.max_storage_buffer_binding_size > 0 && a.max_buffer_size > 0,
            "{a:?}"
        );
        assert!(a.max_compute_invocations_per_workgroup >= 256, "{a:?}");
    }
    let info = gpu.info();
    assert_eq!(info.device, "gpu");
    let chosen = gpu.adapter_report();
    assert_eq!(
        info.adapter,
        format!("{} ({})", gpu.adapter_name(), chosen.backend)
    );
    eprintln!("chosen adapter: {} ; all: {all:?}", info.adapter);
    // best first: the chosen one is the first listed (hardware before software, Vulkan before GL)
    assert_eq!(all[0].name, chosen.name);
    assert_eq!(all[0].backend, chosen.backend);
    if all
        .iter()
        .any(|a| a.backend == "Vulkan" && a.device_type == chosen.device_type)
    {
        assert_eq!(
            chosen.backend, "Vulkan",
            "Vulkan must be preferred over {}",
            chosen.backend
        );
    }
    assert!(gpu.binding_limit() <= chosen.max_storage_buffer_binding_size);
    // With only software adapters, HardwareOnly must say so instead of picking one.
    if !all.iter().any(|a| is_hardware(&a.device_type)) {
        match GpuBackend::new(AdapterChoice::HardwareOnly) {
            Err(Error::NoAdapter(_)) => {}
            Err(e) => panic!("HardwareOnly without hardware: unexpected error {e}"),
            Ok(_) => panic!("HardwareOnly picked a software adapter"),
        }
    }
}

#[test]
fn oversized_buffers_are_errors_not_panics() {
    let Some(gpu) = gpu_common::backend() else {
        return;
    };
    let max = gpu.adapter_report().max_buffer_size;
    let cols = (max / 4 / 1024 + 1) as usize;
    match gpu.zeros(1024, cols) {
        Err(Error::Gpu { op, reason }) => eprintln!("zeros over max_buffer_size: {op}: {reason}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a buffer over max_buffer_size was created"),
    }
}

#[test]
fn a_sweep_block_wider_than_a_binding_is_an_error() {
    // 1 kB bindings: a 64-column block of a 40 × 64 U (10 kB) cannot be bound
    let Some(gpu) = gpu_common::backend_with_limit(1024) else {
        return;
    };
    let (m, d) = (40, 64);
    let mut w = gpu.zeros(m, d).unwrap();
    let u = gpu.zeros(d, d).unwrap();
    let mut q = gpu.zeros(m, d).unwrap();
    let mut codes = gpu.zeros(m, d).unwrap();
    let mut scales = gpu.zeros(m, 1).unwrap();
    let mut zeros = gpu.zeros(m, 1).unwrap();
    let mut err = gpu.zeros(m, d).unwrap();
    let group_of = gpu.upload_idx(&vec![0u32; d]).unwrap();
    let spec = SweepSpec {
        grid: Grid::new(4, true),
        group_size: d,
        dynamic: true,
        propagate: true,
    };
    let r = gpu.sweep(
        &spec,
        &mut w,
        &u,
        &mut q,
        &mut codes,
        &mut scales,
        &mut zeros,
        &mut err,
        &group_of,
        0,
        d,
    );
    match r {
        Err(Error::Gpu { op, reason }) => eprintln!("{op}: {reason}"),
        other => panic!("expected Error::Gpu, got {other:?}"),
    }
}
