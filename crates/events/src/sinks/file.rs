//! `kind = "file"`: JSON lines (ECS) or CEF lines in a file, rotated by size
//! and by UTC day, keeping the newest `keep` rotated files.

use std::io::Write;
use std::path::PathBuf;

use keyward_core::time::now_ms;
use serde::{Deserialize, Serialize};

use super::Output;
use crate::error::SinkError;
use crate::format::{Body, Record};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    pub name: String,
    /// Where to write.
    pub path: PathBuf,
    /// `ecs` (default) or `cef`.
    pub format: Option<Body>,
    /// Rotate past this size (default 100 MiB).
    pub max_bytes: Option<u64>,
    /// Also rotate when the UTC day changes (default true).
    pub rotate_daily: Option<bool>,
    /// Rotated files kept (default 7).
    pub keep: Option<u32>,
    pub batch_size: Option<u32>,
    pub from_beginning: Option<bool>,
}

impl FileSink {
    pub(super) fn problems(&self, at: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.path.as_os_str().is_empty() {
            p.push(format!("{at}.path: must not be empty"));
        }
        if self.max_bytes == Some(0) {
            p.push(format!("{at}.max_bytes: must be at least 1"));
        }
        p
    }

    pub(super) fn output(&self, host: &str) -> Box<dyn Output> {
        Box::new(FileOut {
            path: self.path.clone(),
            max_bytes: self.max_bytes.unwrap_or(100 * 1024 * 1024),
            daily: self.rotate_daily.unwrap_or(true),
            keep: self.keep.unwrap_or(7),
            body: self.format.unwrap_or(Body::Ecs),
            host: host.to_owned(),
            file: None,
        })
    }
}

/// A rotated file of lines.
struct FileOut {
    path: PathBuf,
    max_bytes: u64,
    daily: bool,
    keep: u32,
    body: Body,
    host: String,
    /// The open file, its size, and the UTC day it was opened on.
    file: Option<(std::fs::File, u64, i64)>,
}

impl Output for FileOut {
    fn ship(&mut self, batch: &[Record]) -> Result<(), SinkError> {
        let mut buf = Vec::with_capacity(batch.len() * 700);
        for e in batch {
            match self.body {
                Body::Ecs => serde_json::to_writer(&mut buf, &e.ecs(&self.host)).map_err(std::io::Error::other)?,
                Body::Cef => buf.extend_from_slice(e.cef().as_bytes()),
            }
            buf.push(b'\n');
        }
        let today = now_ms().div_euclid(86_400_000);
        let rotate = match &self.file {
            Some((_, size, day)) => {
                *size > 0 && (*size + buf.len() as u64 > self.max_bytes || (self.daily && *day != today))
            }
            None => false,
        };
        if rotate {
            self.rotate()?;
        }
        let (f, size, _) = match &mut self.file {
            Some(open) => open,
            None => {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
                let meta = f.metadata()?;
                let day = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| (d.as_millis() as i64).div_euclid(86_400_000))
                    .unwrap_or(today);
                self.file.insert((f, meta.len(), if meta.len() == 0 { today } else { day }))
            }
        };
        f.write_all(&buf)?;
        f.sync_data()?;
        *size += buf.len() as u64;
        Ok(())
    }
}

impl FileOut {
    /// Renames the current file to `<path>.<UTC timestamp>` and drops the
    /// oldest rotated files beyond `keep`.
    fn rotate(&mut self) -> Result<(), SinkError> {
        self.file = None;
        let stamp = keyward_core::time::to_rfc3339(now_ms()).replace([':', '-'], "").replace('.', "");
        let rotated = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        std::fs::rename(&self.path, &rotated)?;
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let dir = self.path.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        let mut old: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}."))))
            .collect();
        old.sort();
        while old.len() > self.keep as usize {
            let p = old.remove(0);
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }
}
