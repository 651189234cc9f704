//! Object-storage segment format: `<n>.blk` blocks, `footer.blk`, fence objects, merged blocks.
