//! fleetgate — the facade crate embedders depend on (placeholder, being written).
