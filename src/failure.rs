//! How a failure is handled, decided where it arises (from an S3 error code or a
//! SQLSTATE), so that code far away never reads error messages to decide.

/// What a failure means for the run and for the object it concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// Asking again later may succeed (throttling, a timeout, a dropped connection, a
    /// cancelled statement): the run stops, nothing is set aside, the next run retries.
    Transient,
    /// Permanent for one object or row: that object version is quarantined and the rest
    /// loads. A run where many objects fail the same way treats it as systemic instead.
    Object,
    /// The configuration, a permission or capacity: every object would fail alike. The
    /// run stops, nothing is set aside, and the message names the likely cause.
    Systemic,
}

impl FailureClass {
    /// What an operator does about a failure of this class.
    pub fn advice(self) -> &'static str {
        match self {
            FailureClass::Transient => "transient: nothing was set aside, the next run retries",
            FailureClass::Object => "permanent for this object: it is quarantined",
            FailureClass::Systemic => {
                "systemic: nothing was set aside; fix the configuration or permission named, then rerun"
            }
        }
    }
}

/// When a share of a run's source objects failing alike is a systemic failure (a
/// changed role, a KMS grant, a lifecycle rule) rather than a property of each object:
/// more than `min_files` objects failed with the same error code, and more than
/// `min_percent` percent of the objects the run read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Systemic {
    pub min_files: u64,
    pub min_percent: u64,
}

impl Systemic {
    /// More than 3 files and more than 10% of those read.
    pub const DEFAULT: Systemic = Systemic {
        min_files: 3,
        min_percent: 10,
    };

    /// Whether `failed` alike out of `read` objects is systemic.
    pub fn holds(self, failed: u64, read: u64) -> bool {
        failed > self.min_files && failed.saturating_mul(100) > read.saturating_mul(self.min_percent)
    }
}
