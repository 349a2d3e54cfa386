//! `[[service]]`s in the loop.

use super::Supervisor;

impl Supervisor {
    /// One JSON object per service for `forkctl status` (`name`, `state`,
    /// `workers`, counters).
    pub fn services_status(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }
}
