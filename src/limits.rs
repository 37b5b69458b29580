//! Limits shared by cleaning and reading, in a leaf module so that neither depends on
//! the other for them.

/// Lines longer than this (terminator excluded) are rejected as `record_too_large`; the
/// reader keeps only their start.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Longest accepted `event_name`, in bytes.
pub const MAX_EVENT_NAME_BYTES: usize = 128;
