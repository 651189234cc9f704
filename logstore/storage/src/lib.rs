//! Storage for Woodpecker: object stores (S3-compatible, local directory, memory) and the segment formats
//! written to them (object blocks, local `data.log`).

pub mod object;
pub mod segment;
