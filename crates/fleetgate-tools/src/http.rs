//! The HTTP API (`fleetgate serve`): not mounted yet.
