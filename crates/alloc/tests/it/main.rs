//! Integration tests for bob-alloc: one binary (house style: link time on 2 cores).

mod behaviour;
mod decode_fuzz;
mod model;
