//! The workflow that calls built by the testkit map to: the unit tests, property tests
//! and fuzz targets of the call machine all start from the same one.

use crate::call::workflow::Workflow;

/// Workflow 456 (`customer-support`, organisation 789), whose endpoint is a closed
/// loopback port: a machine test never sends anything.
pub fn sample_workflow() -> Workflow {
    Workflow {
        id: 456,
        slug: "customer-support".into(),
        organization_id: 789,
        events_webhook_url: "http://127.0.0.1:1/".into(),
        call_started_hook: None,
        room_pattern: None,
        signing_keys: vec![],
    }
}
