//! The directory source: Gateway API and Kubernetes objects in YAML/JSON files, re-read when
//! they change.
//!
//! **Change detection by polling** (every `poll_interval`, 500 ms by default) rather than
//! inotify (`notify`): a poll is a `stat` per file, which costs nothing at the sizes a config
//! directory has; it sees changes inotify misses or reports oddly (a ConfigMap volume swaps a
//! `..data` symlink, editors replace files by rename, network and overlay filesystems may not
//! deliver events at all); it needs no extra dependency; and its timing is predictable
//! (a change is live within two intervals). A file is read again when its (length, mtime,
//! inode) differs from the last read, or when its mtime is less than two seconds old: file
//! times are only as fine as the kernel's clock tick, so two same-length writes within one
//! tick look identical (git's "racily clean" problem). A re-read whose bytes hash the same as
//! before is not parsed again. A file that changes while being read is read again at the next
//! poll.
//!
//! **A change is read once it is stable:** after the first poll, a changed or new file is
//! read only when its fingerprint is the same as at the previous poll, so a writer has one
//! interval to finish before any prefix of the file is parsed (a prefix that parses, say a
//! route without its `rules`, would otherwise be served until the next poll). The first poll
//! reads every file at once, so the agent starts with the whole directory; a file being
//! written at that very moment is corrected by the stable read that follows. Replacing files
//! by rename is still the way to make a change atomic.
//!
//! Files: those `meridian_gwapi::config_files` lists, the same set `meridian gateway
//! --config-dir` reads: every `*.yaml`, `*.yml` and `*.json` directly in the directory (like
//! `kubectl apply -f DIR` without `-R`), skipping names that start with `.` (editor swap files,
//! a ConfigMap volume's `..data`); symlinks are followed. Each file is one [`SourceUnit`] whose
//! id is its file name.
//!
//! **Last good content.** A file is the unit of change, like one `kubectl apply`: if reading
//! or parsing it yields a fatal problem (bad YAML, an object dropped by validation: a type
//! error, an invalid name, a Gateway without listeners), nothing of the new content is used;
//! the problem is logged at warn with its file, document and field path, counted in
//! `meridian_agent_source_reads{result="invalid"}`, and listed on `/status`, while the file's
//! last good content keeps being served. Problems that are not fatal (the object is kept: a
//! listener with an unsupported protocol, an invalid route rule, a rejected route) do not hold
//! the file back: its objects are applied and programming turns those problems into status
//! conditions (`UnsupportedProtocol`, `PartiallyInvalid`, ...), as `meridian gateway
//! --config-dir` does; they are logged and listed on `/status` too. A deleted file removes its
//! objects. An unreadable directory changes nothing (a transient error must not delete
//! everything).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meridian_gwapi::{Object, Origin, Problem};
use tokio::sync::{mpsc, watch};

use super::{Event, Source, SourceUnit, SourceUpdate};
use crate::metrics::Metrics;

/// A directory of YAML/JSON files.
pub struct FileSource {
    dir: PathBuf,
    poll_interval: Duration,
    files: BTreeMap<String, FileState>,
    /// Every file's fingerprint at the previous poll: a change is read once it stays.
    last_poll: BTreeMap<String, Fingerprint>,
    problems: Vec<Problem>,
    initialized: bool,
    metrics: Option<Metrics>,
}

/// What the source remembers about one file.
#[derive(Debug)]
struct FileState {
    fingerprint: Fingerprint,
    /// Hash of the bytes last read, to skip parsing a re-read that found the same bytes.
    content_hash: u64,
    /// The content in use; `None` when the file never parsed cleanly.
    last_good: Option<Arc<Vec<Object>>>,
    /// Problems of the latest read (empty when it was clean).
    problems: Vec<Problem>,
}

/// What "changed" is judged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

// === impl FileSource ===

impl FileSource {
    /// A source over `dir`, polled every `poll_interval`.
    pub fn new(dir: impl Into<PathBuf>, poll_interval: Duration) -> Self {
        Self {
            dir: dir.into(),
            poll_interval,
            files: BTreeMap::new(),
            last_poll: BTreeMap::new(),
            problems: Vec::new(),
            initialized: false,
            metrics: None,
        }
    }

    /// Counts reads in the agent's metrics.
    pub(crate) fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Looks at the directory once and returns the updates to send: the `Init..InitDone`
    /// sequence on the first call, `Apply`/`Delete` for changed files after that, and the
    /// problem list whenever it changed.
    pub fn poll(&mut self) -> Vec<SourceUpdate> {
        let mut updates = Vec::new();
        let listing = match list_files(&self.dir) {
            Ok(listing) => listing,
            Err(problem) => {
                let problems = vec![*problem];
                if problems != self.problems {
                    tracing::warn!(problem = %problems[0], "cannot read the config directory; keeping everything as it was");
                    self.problems = problems.clone();
                    updates.push(SourceUpdate::Problems(problems));
                }
                return updates;
            }
        };

        let initial = !self.initialized;
        if initial {
            updates.push(SourceUpdate::Event(Event::Init));
        }

        let removed: Vec<String> = self
            .files
            .keys()
            .filter(|id| !listing.contains_key(*id))
            .cloned()
            .collect();
        for id in removed {
            let had_content = self
                .files
                .remove(&id)
                .and_then(|state| state.last_good)
                .is_some();
            tracing::info!(file = %id, "config file removed; its objects are gone");
            self.count("removed");
            if had_content && !initial {
                updates.push(SourceUpdate::Event(Event::Delete(SourceUnit {
                    id,
                    objects: Arc::new(Vec::new()),
                })));
            }
        }

        let now = SystemTime::now();
        let previous_poll = std::mem::replace(&mut self.last_poll, listing.clone());
        for (id, fingerprint) in listing {
            let unchanged = !recently_modified(&fingerprint, now)
                && self
                    .files
                    .get(&id)
                    .is_some_and(|state| state.fingerprint == fingerprint);
            if unchanged {
                if initial
                    && let Some(objects) = self.files.get(&id).and_then(|s| s.last_good.clone())
                {
                    updates.push(SourceUpdate::Event(Event::InitApply(SourceUnit {
                        id,
                        objects,
                    })));
                }
                continue;
            }
            if !initial && previous_poll.get(&id) != Some(&fingerprint) {
                // Changed since the previous poll: perhaps still being written. Read it once
                // it has stayed the same for a poll.
                continue;
            }
            let path = self.dir.join(&id);
            let (read, fingerprint) = match read_stable(&path, fingerprint) {
                Some(read) => read,
                // Changed while being read: look again at the next poll.
                None => continue,
            };
            let content_hash = match &read {
                Ok(text) => hash(text),
                Err(message) => hash(message) ^ 1,
            };
            let known = self.files.contains_key(&id);
            let state = self.files.entry(id.clone()).or_insert(FileState {
                fingerprint,
                content_hash,
                last_good: None,
                problems: Vec::new(),
            });
            state.fingerprint = fingerprint;
            if known && state.content_hash == content_hash {
                // Same bytes (or the same read error) as last time: a touch, or a racy
                // re-check. Nothing to do, and nothing new to warn about.
                if initial && let Some(objects) = state.last_good.clone() {
                    updates.push(SourceUpdate::Event(Event::InitApply(SourceUnit {
                        id,
                        objects,
                    })));
                }
                continue;
            }
            state.content_hash = content_hash;
            let parsed = read.map(|text| meridian_gwapi::parse_documents(&text, &id));
            match parsed {
                Ok((objects, problems)) if !problems.iter().any(|p| p.fatal) => {
                    // Problems that kept their object (a listener with an unsupported
                    // protocol, a dropped rule) are status, not a reason to hold the file
                    // back: the object goes to programming, which reports them as conditions.
                    for problem in &problems {
                        tracing::warn!(
                            file = %id,
                            %problem,
                            "config file applied; this part of it is not (see the object's status conditions)"
                        );
                    }
                    state.problems = problems;
                    let objects = Arc::new(objects);
                    let changed = state.last_good.as_deref() != Some(objects.as_ref());
                    if changed {
                        tracing::info!(file = %id, "config file read");
                    }
                    count(self.metrics.as_ref(), "ok");
                    state.last_good = Some(objects.clone());
                    let unit = SourceUnit { id, objects };
                    if initial {
                        updates.push(SourceUpdate::Event(Event::InitApply(unit)));
                    } else if changed {
                        updates.push(SourceUpdate::Event(Event::Apply(unit)));
                    }
                }
                result => {
                    let problems = match result {
                        Ok((_, problems)) => problems,
                        Err(message) => vec![Origin::new(id.clone(), None).problem(message)],
                    };
                    for problem in &problems {
                        tracing::warn!(
                            file = %id,
                            kept = if state.last_good.is_some() { "last good content" } else { "nothing (never valid)" },
                            %problem,
                            "invalid config file; not applied"
                        );
                    }
                    count(self.metrics.as_ref(), "invalid");
                    state.problems = problems;
                    if initial && let Some(objects) = state.last_good.clone() {
                        updates.push(SourceUpdate::Event(Event::InitApply(SourceUnit {
                            id,
                            objects,
                        })));
                    }
                }
            }
        }

        if initial {
            updates.push(SourceUpdate::Event(Event::InitDone));
            self.initialized = true;
        }
        let problems: Vec<Problem> = self
            .files
            .values()
            .flat_map(|state| state.problems.iter().cloned())
            .collect();
        if problems != self.problems || initial {
            if let Some(metrics) = &self.metrics {
                metrics
                    .source_problems
                    .set(i64::try_from(problems.len()).unwrap_or(i64::MAX));
            }
            self.problems = problems.clone();
            updates.push(SourceUpdate::Problems(problems));
        }
        updates
    }

    fn count(&self, result: &'static str) {
        count(self.metrics.as_ref(), result);
    }
}

impl Source for FileSource {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    async fn run(
        mut self,
        updates: mpsc::Sender<SourceUpdate>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(self.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            // Reading and parsing is blocking file IO; move the state to a blocking thread
            // and back.
            let polled = tokio::task::spawn_blocking(move || {
                let batch = self.poll();
                (self, batch)
            })
            .await;
            let batch;
            (self, batch) = match polled {
                Ok(polled) => polled,
                Err(error) => {
                    tracing::error!(%error, "the config directory poll panicked; the source stops");
                    return;
                }
            };
            for update in batch {
                if updates.send(update).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn count(metrics: Option<&Metrics>, result: &'static str) {
    if let Some(metrics) = metrics {
        metrics
            .source_reads
            .get_or_create(&[("result", result)])
            .inc();
    }
}

/// Reads a file and checks that it did not change meanwhile. `None` means it changed (read
/// again later); `Some((Err(message), _))` means it cannot be read.
fn read_stable(path: &Path, before: Fingerprint) -> Option<(Result<String, String>, Fingerprint)> {
    let read = std::fs::read(path);
    let after = std::fs::metadata(path).ok().map(|m| fingerprint(&m));
    match read {
        Ok(bytes) => {
            if after != Some(before) {
                return None;
            }
            let text = String::from_utf8(bytes).map_err(|error| format!("not UTF-8 text: {error}"));
            Some((text, before))
        }
        Err(error) => Some((
            Err(format!("cannot read: {error}")),
            after.unwrap_or(before),
        )),
    }
}

/// The config files of `dir` by file name, with their fingerprints.
fn list_files(dir: &Path) -> Result<BTreeMap<String, Fingerprint>, Box<Problem>> {
    let paths = meridian_gwapi::config_files(dir).map_err(|error| {
        Box::new(
            Origin::new(dir.display().to_string(), None)
                .problem(format!("cannot list directory: {error}")),
        )
    })?;
    let mut files = BTreeMap::new();
    for path in paths {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // `metadata` follows symlinks, as a ConfigMap volume needs. A file that vanished
        // since the listing is simply not there this time.
        if let Ok(metadata) = std::fs::metadata(&path) {
            files.insert(name.to_string(), fingerprint(&metadata));
        }
    }
    Ok(files)
}

/// Whether a file was modified so recently that a later write in the same clock tick could
/// leave its fingerprint unchanged.
fn recently_modified(fingerprint: &Fingerprint, now: SystemTime) -> bool {
    fingerprint.modified.is_none_or(|modified| {
        now.duration_since(modified)
            .map_or(true, |age| age < Duration::from_secs(2))
    })
}

fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

fn fingerprint(metadata: &std::fs::Metadata) -> Fingerprint {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Fingerprint {
        len: metadata.len(),
        modified: metadata.modified().ok(),
        inode,
    }
}

#[cfg(test)]
mod tests;
