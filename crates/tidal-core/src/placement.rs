//! Placement (cluster format version 5): what tasks ask of placement (label
//! constraints, tags and tag rules, GPU shapes, a hash key), the GPU devices
//! their assignments hold, queues' strategies and GPU models' weights.
//!
//! - `types`: the data and the limits.
//! - `constraint`, `rules`, `devices`, `hrw`: pure matchers shared by the
//!   planner and by apply.

pub mod constraint;
pub mod devices;
pub mod hrw;
pub mod rules;
pub mod types;
pub mod validate;
