//! fleetgate-gossip (placeholder, being written).
