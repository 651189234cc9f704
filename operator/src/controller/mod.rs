//! Controller: load, validate, render, apply, observe, roll/scale, status.
