//! fleetgate-store (placeholder, being written).
