//! Which GPU devices a task takes on an agent: the same pure function runs in
//! the planner and in `Assign`'s apply, so both pick the same devices.
//!
//! A task asks for shapes in order (`2xA100`, else `4xA40`), or, without
//! shapes, for `spec.gpus` devices of any model with `spec.gpu_memory_mb`
//! each. The first shape with enough free matching devices wins, and takes
//! the lowest free indexes that match.

use crate::model::Gpu;
use crate::placement::types::GpuShape;

/// The devices a task would take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pick {
    /// The shape's index in the task's list (0 without shapes).
    pub shape: u8,
    /// Device indexes, ascending.
    pub devices: Vec<u16>,
    /// The devices' weights, summed (thousandths).
    pub gpu_milli: u32,
}

/// The shapes a task asks for: its own, or the one its spec implies.
pub fn shapes_of(shapes: &[GpuShape], gpus: u32, gpu_memory_mb: u64) -> Vec<GpuShape> {
    if shapes.is_empty() {
        vec![GpuShape {
            count: gpus,
            model: None,
            min_memory_mb: gpu_memory_mb,
        }]
    } else {
        shapes.to_vec()
    }
}

/// Whether device `g` can serve `shape`.
pub fn matches(g: &Gpu, shape: &GpuShape) -> bool {
    shape.model.as_ref().is_none_or(|m| *m == g.model) && g.memory_mb >= shape.min_memory_mb
}

/// The first shape that `free` (whether each of `gpus` is free) can hold, and
/// the lowest matching free devices for it. A shape of 0 GPUs always fits
/// and takes none.
pub fn pick(
    gpus: &[Gpu],
    free: impl Fn(u16) -> bool,
    shapes: &[GpuShape],
    weight: impl Fn(&str) -> u32,
) -> Option<Pick> {
    for (i, shape) in shapes.iter().enumerate() {
        let mut devices = Vec::with_capacity(shape.count as usize);
        let mut gpu_milli = 0u32;
        for (index, g) in gpus.iter().enumerate() {
            if devices.len() as u32 >= shape.count {
                break;
            }
            let Ok(index) = u16::try_from(index) else {
                break;
            };
            if free(index) && matches(g, shape) {
                devices.push(index);
                gpu_milli = gpu_milli.saturating_add(weight(&g.model));
            }
        }
        if devices.len() as u32 >= shape.count {
            return Some(Pick {
                shape: i as u8,
                devices,
                gpu_milli,
            });
        }
    }
    None
}

/// Whether some shape could fit on the agent were all its devices free (the
/// static part, cached per task shape in a round).
pub fn possible(gpus: &[Gpu], shapes: &[GpuShape]) -> bool {
    shapes
        .iter()
        .any(|s| gpus.iter().filter(|g| matches(g, s)).count() as u64 >= u64::from(s.count))
}

#[cfg(test)]
#[path = "devices_test.rs"]
mod tests;
