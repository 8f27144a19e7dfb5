//! Where objects come from. Every provider turns its source into [`Event`]s for the index and
//! [`Report`]s about what it could not (fully) read.

pub mod file;

use std::path::PathBuf;

use crate::model::{Object, ObjectId};

/// A change for the index.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Shared: the provider, its effective set and the index hold the same allocation.
    Apply(std::sync::Arc<Object>),
    Delete(ObjectId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object is in effect, but something in it was tolerated or will not do what it says.
    Warning,
    /// The object (or document) was refused; its last good version stays in effect.
    Error,
}

/// A problem with one object or document, as shown in logs and on the admin endpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub severity: Severity,
    pub file: Option<PathBuf>,
    /// `Kind namespace/name`, or the document when the object could not be identified.
    pub object: String,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        write!(f, "{}: ", self.object)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}
