//! The shared metadata scenarios against a real etcd (`WP_ETCD_ENDPOINTS`, from `scripts/testbed.sh`).

mod common;

all_scenarios!(common::etcd_fixture);
