//! placeholder
pub mod object;
