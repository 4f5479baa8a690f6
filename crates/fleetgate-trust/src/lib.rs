//! fleetgate-trust (placeholder, being written).
