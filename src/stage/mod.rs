//! Staging: cleaned rows become gzipped JSON-lines parts plus one COPY manifest per
//! table, under `<staging>/<load_id>/`. `rows` and `part` are pure; `writer` is the
//! thin shell that uploads parts as they fill.

pub(crate) mod file;
pub(crate) mod part;
pub mod pool;
pub(crate) mod rows;
pub(crate) mod writer;

pub use file::{clean_object, CleanedFile, FileError};
pub use part::{GzPart, Manifest};
pub use rows::FileRow;
pub use writer::{ManifestOrder, StageWriter, StagedLoad};
