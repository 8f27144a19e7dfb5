//! `smidge lint`: reads manifest files offline and reports every problem with its file and object.

use std::path::{Path, PathBuf};

use crate::diagnose::{self, Scope};
use crate::index::Index;
use crate::manifest::{read_file, Outcome};
use crate::model::ObjectId;

/// One problem, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LintProblem {
    pub file: PathBuf,
    /// `Kind namespace/name`, or `document N` when the object could not be identified.
    pub object: String,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for LintProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: ", self.file.display(), self.object)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// The files to read for `paths`: files as given, directories expanded to their `.yaml`/`.yml`
/// files (recursively, in name order).
pub fn expand(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            entries.sort();
            let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.is_dir());
            out.extend(files.into_iter().filter(|f| is_manifest(f)));
            out.extend(expand(&dirs)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Whether a path looks like a manifest file.
pub fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Lints `files` (path and contents) together: references resolve across all of them; a later
/// definition of the same object replaces an earlier one, as `kubectl apply` would.
pub fn lint(files: &[(PathBuf, String)]) -> Vec<LintProblem> {
    let mut problems = Vec::new();
    let mut index = Index::default();
    let mut defined_in: std::collections::HashMap<ObjectId, PathBuf> = Default::default();
    for (path, text) in files {
        for (pos, outcome) in read_file(text) {
            match outcome {
                Outcome::Object { object, notices } => {
                    for n in notices {
                        problems.push(LintProblem {
                            file: path.clone(),
                            object: object.id.to_string(),
                            field: n.field,
                            message: n.message,
                        });
                    }
                    defined_in.insert(object.id.clone(), path.clone());
                    index.apply(object);
                }
                Outcome::Skipped { .. } => {}
                Outcome::Invalid { id, what, errors } => {
                    let object = match id {
                        Some(id) => id.to_string(),
                        None => format!("document {} (line {}) {what}", pos.document, pos.line),
                    };
                    for e in errors.0 {
                        problems.push(LintProblem {
                            file: path.clone(),
                            object: object.clone(),
                            field: e.field,
                            message: e.message,
                        });
                    }
                }
            }
        }
    }
    for p in diagnose::all(
        &index,
        Scope {
            only_where_present: true,
        },
    ) {
        let file = defined_in.get(&p.object).cloned().unwrap_or_default();
        problems.push(LintProblem {
            file,
            object: p.object.to_string(),
            field: p.finding.field,
            message: p.finding.message,
        });
    }
    problems
}
