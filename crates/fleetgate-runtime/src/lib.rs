//! fleetgate-runtime (placeholder, being written).
