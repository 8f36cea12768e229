//! How the objects of a response are represented: as they are, as PartialObjectMetadata,
//! or as a Table, by what the client's `Accept` asks for and the verb allows.

use serde_json::Value;

use crate::accept::{self, Representation};
use crate::error::ApiError;
use crate::handlers::metadata_only;
use crate::hooks::Verb;
use crate::kinds::ResourceKind;
use crate::path::Query;
use crate::table::{self, TableRequest};

#[derive(Debug, Clone, Copy)]
pub enum Render {
    Json,
    Metadata,
    /// Tables are served for reads only (get, list, watch).
    Table(TableRequest),
}

impl Render {
    pub fn negotiate(accept: Option<&str>, verb: Verb, q: &Query) -> Result<Self, ApiError> {
        let reads = matches!(verb, Verb::Get | Verb::List | Verb::Watch);
        let wanted = accept::negotiate(accept, |r| {
            r == Representation::Metadata || matches!(r, Representation::Table(_)) && reads
        })?;
        Ok(match wanted {
            Representation::Table(version) => Self::Table(TableRequest::new(version, q)?),
            Representation::Metadata => Self::Metadata,
            _ => Self::Json,
        })
    }

    /// A response document (an object, a list or a Status) as represented; `headers` false
    /// leaves a Table's column definitions out.
    pub fn apply(&self, kind: &ResourceKind, doc: Value, headers: bool) -> Value {
        let is_status = doc.get("kind").and_then(Value::as_str) == Some("Status");
        match self {
            Self::Json => doc,
            Self::Metadata => metadata_only(doc),
            Self::Table(_) if is_status => doc,
            Self::Table(t) => table::convert(kind, &doc, t, headers),
        }
    }
}
