//! Where objects come from. Every provider turns its source into [`Event`]s for the index and
//! [`Report`]s about what it could not (fully) read.

pub mod file;
pub mod kube;
#[cfg(test)]
mod kube_mock;

use std::path::PathBuf;

use tokio::sync::mpsc;

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
    /// The object this report refuses, when it is identified (an `Error` about one object):
    /// the status writer gives it `Accepted=False`.
    #[serde(skip)]
    pub refused: Option<ObjectId>,
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

/// What a source sends: index events, and every report it currently has (not only new ones).
/// A source's first batch is its complete first read: the runtime is ready once every source
/// has sent one.
pub type Batch = (Vec<Event>, Vec<Report>);

/// Where one source sends its batches: a channel shared by every source, each batch tagged
/// with the source's number.
#[derive(Clone, Debug)]
pub struct Sink {
    source: usize,
    tx: mpsc::Sender<(usize, Batch)>,
}

/// The receiving side is gone: the controller is shutting down.
#[derive(Debug)]
pub struct Closed;

impl Sink {
    pub fn new(source: usize, tx: mpsc::Sender<(usize, Batch)>) -> Self {
        Sink { source, tx }
    }

    pub async fn send(&self, batch: Batch) -> Result<(), Closed> {
        self.tx.send((self.source, batch)).await.map_err(|_| Closed)
    }
}
