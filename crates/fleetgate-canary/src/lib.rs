//! fleetgate-canary (placeholder, being written).
