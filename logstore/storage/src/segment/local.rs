//! Local segment format: one `data.log` per segment, `write.fence` and `write.lock` beside it.
