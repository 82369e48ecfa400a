//! A strategy's side of the order path: [`FateReader`] reads the router's answers.

use chronicle_core::{QueueReader, ReaderConfig, StartAt};

use super::record::{FATE, Fate, FateCode};
use crate::error::{BusError, Result};
use crate::layout::BusLayout;

/// Reads `strategies/<id>/fates`, the router's answer to each of the strategy's orders and
/// cancels, in the order the router decided them. With a reader name the position persists
/// (commit it), so a restarted strategy resumes with the first fate it has not seen.
///
/// The router creates the fates queue when it first attaches the strategy: until then
/// [`open`](FateReader::open) is [`BusError::SourceGone`]; try again later.
#[derive(Debug)]
pub struct FateReader {
    reader: QueueReader,
    path: std::path::PathBuf,
    skipped: u64,
}

impl FateReader {
    /// Opens strategy `id`'s fates queue; `reader_name` makes the position persist (a named
    /// reader starts at the oldest fate the first time).
    pub fn open(layout: &BusLayout, id: &str, reader_name: Option<&str>) -> Result<FateReader> {
        let path = layout.strategy_fates(id)?;
        let cfg = match reader_name {
            Some(n) => ReaderConfig::named(n),
            None => ReaderConfig::default(),
        }
        .start(StartAt::Earliest);
        let reader = QueueReader::open(&path, cfg).map_err(|e| BusError::queue(&path, e))?;
        Ok(FateReader {
            reader,
            path,
            skipped: 0,
        })
    }

    /// The next fate, or `None` if there is none yet. Records that are not fates are skipped
    /// (counted in [`skipped`](Self::skipped)).
    #[allow(clippy::should_implement_trait)] // fallible, and returns owned copies
    pub fn next(&mut self) -> Result<Option<Fate>> {
        loop {
            let Some(m) = self
                .reader
                .next()
                .map_err(|e| BusError::queue(&self.path, e))?
            else {
                return Ok(None);
            };
            match (m.type_id() == FATE)
                .then(|| Fate::decode(m.payload()))
                .flatten()
            {
                Some(f) => return Ok(Some(f)),
                None => self.skipped += 1,
            }
        }
    }

    /// Persists the position after the last fate returned (named readers).
    pub fn commit(&mut self) -> Result<()> {
        self.reader
            .commit()
            .map_err(|e| BusError::queue(&self.path, e))
    }

    /// Seq of the next fate record to read.
    pub fn next_seq(&self) -> u64 {
        self.reader.next_seq()
    }

    /// Records skipped because they were not fates.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// Fates counted by code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FateCounts([u64; 6]);

impl FateCounts {
    /// Counts one fate.
    pub fn add(&mut self, code: FateCode) {
        if let Some(c) = self.0.get_mut(usize::from(code.byte())) {
            *c += 1;
        }
    }

    /// How many of one code.
    pub fn get(&self, code: FateCode) -> u64 {
        self.0.get(usize::from(code.byte())).copied().unwrap_or(0)
    }

    /// All of them.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}
