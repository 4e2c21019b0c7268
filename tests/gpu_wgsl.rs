//! Every WGSL family parses and validates with the naga that wgpu re-exports, and every Rust
//! params struct matches its WGSL twin's layout (names, offsets, size). Needs no GPU.

use qronos::backend::gpu::param_layouts;
use qronos::backend::gpu::shaders::Shader;
use wgpu::naga;

fn parse(shader: Shader) -> naga::Module {
    let module = naga::front::wgsl::parse_str(shader.source()).unwrap_or_else(|e| {
        panic!(
            "{}.wgsl does not parse:\n{}",
            shader.name(),
            e.emit_to_string(shader.source())
        )
    });
    module
}

#[test]
fn every_shader_parses_and_validates() {
    let mut failures = Vec::new();
    for shader in Shader::ALL {
        let module = parse(shader);
        let mut v = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        );
        if let Err(e) = v.validate(&module) {
            failures.push(format!(
                "{}.wgsl: {}",
                shader.name(),
                e.emit_to_string(shader.source())
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} shader(s) invalid:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn params_structs_match_wgsl_layout() {
    let mut problems = Vec::new();
    let layouts = param_layouts();
    assert!(!layouts.is_empty());
    for (shader, layout) in layouts {
        let module = parse(shader);
        let found = module
            .types
            .iter()
            .find_map(|(_, ty)| match (&ty.name, &ty.inner) {
                (Some(name), naga::TypeInner::Struct { members, span }) if name == layout.name => {
                    Some((members.clone(), *span))
                }
                _ => None,
            });
        let Some((members, span)) = found else {
            problems.push(format!(
                "{}: struct {} not found",
                shader.name(),
                layout.name
            ));
            continue;
        };
        if span as usize != layout.size {
            problems.push(format!(
                "{}: {} is {} bytes in WGSL, {} in Rust",
                shader.name(),
                layout.name,
                span,
                layout.size
            ));
        }
        let wgsl: Vec<(String, usize)> = members
            .iter()
            .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
            .collect();
        let rust: Vec<(String, usize)> = layout
            .fields
            .iter()
            .map(|(n, o)| (n.to_string(), *o))
            .collect();
        if wgsl != rust {
            problems.push(format!(
                "{}: {} fields differ:\n  wgsl {wgsl:?}\n  rust {rust:?}",
                shader.name(),
                layout.name
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} layout mismatch(es):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
