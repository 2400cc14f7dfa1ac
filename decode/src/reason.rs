//! Why a message, or one element of it, cannot become rows.

/// Why a message was rejected. The names are stable: they label metrics and
/// are stored in dead-letter files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Not valid JSON.
    MalformedJson,
    /// Not valid UTF-8.
    InvalidUtf8,
    /// Longer than `ingest.max_message_bytes`.
    Oversized,
    /// Valid JSON that cannot be flattened (not an object, column collision).
    Flatten,
    /// A value whose type the column does not accept.
    Schema,
    /// The source could not be read past this position (e.g. a truncated gzip file).
    Source,
    /// A file with no content.
    EmptyFile,
    /// A framing (AWS Glue, Confluent, Avro single-object) that cannot be
    /// read: truncated, unknown header or compression, corrupt or oversized zlib.
    Framing,
    /// A schema the registry confirmed it does not know, or none configured.
    UnknownSchema,
    /// A payload that does not decode with its schema.
    Decode,
    /// A Kafka message without a value (a compaction tombstone).
    NoValue,
    /// A JSON payload its JSON Schema does not accept (when
    /// `ingest.registry.validate_json` is on).
    Validation,
    /// A row whose routing field has a value `ingest.routing.fields` does
    /// not list, with `unlisted = "dead-letter"`.
    Unrouted,
}

impl Reason {
    /// Every reason, so metrics can start each at zero.
    pub const ALL: [Reason; 13] = [
        Reason::MalformedJson,
        Reason::InvalidUtf8,
        Reason::Oversized,
        Reason::Flatten,
        Reason::Schema,
        Reason::Source,
        Reason::EmptyFile,
        Reason::Framing,
        Reason::UnknownSchema,
        Reason::Decode,
        Reason::NoValue,
        Reason::Validation,
        Reason::Unrouted,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::Oversized => "oversized",
            Reason::Flatten => "flatten",
            Reason::Schema => "schema",
            Reason::Source => "source",
            Reason::EmptyFile => "empty_file",
            Reason::Framing => "framing",
            Reason::UnknownSchema => "unknown_schema",
            Reason::Decode => "decode",
            Reason::NoValue => "no_value",
            Reason::Validation => "validation",
            Reason::Unrouted => "unrouted",
        }
    }
}

/// A rejection: its reason and the error that names the bad value.
pub type Rejection = (Reason, String);
