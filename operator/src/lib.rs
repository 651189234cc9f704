//! The WoodpeckerCluster operator: pure decisions (render, roll, scale) and the controller that applies them.

pub mod admin;
pub mod controller;
pub mod decide;
pub mod leader;
pub mod metrics;
pub mod render;
