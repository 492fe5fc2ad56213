//! The LearnerSpace operator: one isolated namespace per learner.
//!
//! [`objects`], [`status`] and [`tombstone`] build values (pure); the
//! reconciler compares them with what the watch caches hold and applies only
//! what differs.

pub mod objects;
pub mod status;
pub mod tombstone;
