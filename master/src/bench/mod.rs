//! `master bench`: run policies on a testbed profile and compare them.
//!
//! * [`report`] — medians, ratios against BSP, `policies.json` and `policies.png`.

pub mod report;
