//! The shared metadata scenarios against the embedded file-backed store.

mod common;

all_scenarios!(common::embedded_fixture);
