//! Why a line was rejected: the closed set of reason codes stored in `event_rejects.reason`.

use std::fmt;

/// A reject reason. The string forms are a public interface (analysts filter on them),
/// so they never change once shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line is longer than [`super::MAX_LINE_BYTES`].
    RecordTooLarge,
    /// The line is not parseable JSON (or repeats a top-level key, which is ambiguous).
    MalformedJson,
    /// Valid JSON that is not an object.
    NotAnObject,
    /// `metadata` nests arrays and objects deeper than Redshift SUPER allows (1,000
    /// levels): COPY would fail the whole load on it.
    NestingTooDeep,
    MissingId,
    InvalidId,
    MissingCreatedAt,
    InvalidCreatedAt,
    CreatedAtOutOfRange,
    MissingUserEmail,
    InvalidEmail,
    MissingEventName,
    InvalidEventName,
    /// `cleaning.unknown_event_types = "reject"` and the event's type is not configured
    /// under `[event_types]`.
    UnknownEventType,
    /// `metadata` is present, not null, and not an object, or holds text no warehouse
    /// can store (a `\u0000` escape or an unpaired surrogate), or repeats a key within
    /// one of its objects (SUPER refuses that).
    InvalidMetadata,
    /// A string inside `metadata` is longer than a SUPER value may be (65,535 bytes):
    /// COPY would fail the whole load on it.
    MetadataValueTooLong,
    /// A number inside `metadata` is out of the range both warehouses store (see
    /// `clean::metadata`): COPY would fail the whole load on it.
    MetadataNumberOutOfRange,
    /// The event's type is configured with `required_metadata`, and one of those keys is
    /// absent from `metadata` or null (the reject's text names the key).
    MissingMetadataKey,
    /// The file's gzip data is damaged: a cut file's incomplete last line (its complete
    /// lines load), or the whole of a corrupt file (no row of it is staged). Not a
    /// line-level reason; see `read::gzip` and docs/cleaning-contract.md, "Damaged gzip input".
    InvalidGzip,
    /// Not the cleaner's: the load's. A copy of an id whose cleaned payload differs from
    /// every earlier copy's, within the deduplication window of one (see
    /// docs/cleaning-contract.md, "Duplicates and conflicts"). Kept as a reject so that
    /// it can be seen and recovered; not in [`Reason::ALL`], which the cleaner checks.
    ConflictingDuplicate,
}

impl Reason {
    /// Every reason, in the order the cleaner checks them (the order of the table in docs/cleaning-contract.md; a
    /// test holds the two together). `invalid_gzip` is not a line check and comes last.
    pub const ALL: [Reason; 20] = [
        Reason::RecordTooLarge,
        Reason::InvalidUtf8,
        Reason::MalformedJson,
        Reason::NotAnObject,
        Reason::MissingId,
        Reason::InvalidId,
        Reason::MissingCreatedAt,
        Reason::InvalidCreatedAt,
        Reason::CreatedAtOutOfRange,
        Reason::MissingUserEmail,
        Reason::InvalidEmail,
        Reason::MissingEventName,
        Reason::InvalidEventName,
        Reason::UnknownEventType,
        Reason::InvalidMetadata,
        Reason::NestingTooDeep,
        Reason::MetadataValueTooLong,
        Reason::MetadataNumberOutOfRange,
        Reason::MissingMetadataKey,
        Reason::InvalidGzip,
    ];

    /// The code stored in `event_rejects.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::RecordTooLarge => "record_too_large",
            Reason::MalformedJson => "malformed_json",
            Reason::NotAnObject => "not_an_object",
            Reason::NestingTooDeep => "nesting_too_deep",
            Reason::MissingId => "missing_id",
            Reason::InvalidId => "invalid_id",
            Reason::MissingCreatedAt => "missing_created_at",
            Reason::InvalidCreatedAt => "invalid_created_at",
            Reason::CreatedAtOutOfRange => "created_at_out_of_range",
            Reason::MissingUserEmail => "missing_user_email",
            Reason::InvalidEmail => "invalid_email",
            Reason::MissingEventName => "missing_event_name",
            Reason::InvalidEventName => "invalid_event_name",
            Reason::InvalidMetadata => "invalid_metadata",
            Reason::MetadataValueTooLong => "metadata_value_too_long",
            Reason::MetadataNumberOutOfRange => "metadata_number_out_of_range",
            Reason::UnknownEventType => "unknown_event_type",
            Reason::MissingMetadataKey => "missing_metadata_key",
            Reason::InvalidGzip => "invalid_gzip",
            Reason::ConflictingDuplicate => "conflicting_duplicate",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
