//! fleetgate-fleet (placeholder, being written).
