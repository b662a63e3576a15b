//! The GC journal, `<state_dir>/gc.json`: the newest collections' reports (what was
//! deleted, bytes freed), replaced atomically after each run; read by `/metrics`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hostctl_schemas::api::gc::GcReport;

/// How many reports are kept.
const KEEP: usize = 50;

/// The journal file and what it holds.
#[derive(Debug)]
pub struct GcLog {
    file: PathBuf,
    reports: Mutex<Vec<GcReport>>,
}

impl GcLog {
    /// Reads `file` (a missing or unreadable one starts empty, with a warning).
    pub fn open(file: &Path) -> Self {
        let reports = match std::fs::read(file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %file.display(), error = %e, "cannot read the GC journal; starting a new one");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Self { file: file.to_path_buf(), reports: Mutex::new(reports) }
    }

    /// The reports, oldest first.
    pub fn reports(&self) -> Vec<GcReport> {
        self.reports.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Adds `report` and writes the file; a failed write is a warning (the run happened).
    pub fn append(&self, report: &GcReport) {
        let Ok(mut reports) = self.reports.lock() else { return };
        reports.push(report.clone());
        let excess = reports.len().saturating_sub(KEEP);
        reports.drain(..excess);
        let written = serde_json::to_vec_pretty(&*reports)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::journal::write_atomically(&self.file, &bytes));
        if let Err(e) = written {
            tracing::warn!(file = %self.file.display(), error = %e, "cannot write the GC journal");
        }
    }
}
