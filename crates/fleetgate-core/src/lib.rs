//! fleetgate-core (placeholder, being written).
