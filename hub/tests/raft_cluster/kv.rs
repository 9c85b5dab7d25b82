//! A tiny key-value state machine for the raft tests, with a shared read view.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use meridian_hub::raft::StateMachine;

/// What readers see: the map and the last applied index (updated in `applied`).
#[derive(Clone, Debug, Default)]
pub struct View {
    pub map: BTreeMap<String, String>,
    pub applied: u64,
    pub restores: u64,
}

/// A `key=value` store. Commands are `set <key> <value>`; the outcome is the previous value.
pub struct Kv {
    map: BTreeMap<String, String>,
    view: Arc<Mutex<View>>,
}

impl Kv {
    pub fn new() -> (Self, Arc<Mutex<View>>) {
        let view = Arc::new(Mutex::new(View::default()));
        (
            Self {
                map: BTreeMap::new(),
                view: view.clone(),
            },
            view,
        )
    }
}

/// Encodes a `set` command.
pub fn set(key: &str, value: &str) -> Vec<u8> {
    format!("set {key} {value}").into_bytes()
}

impl StateMachine for Kv {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        let command = String::from_utf8_lossy(command);
        let mut parts = command.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("set"), Some(key), Some(value)) => self
                .map
                .insert(key.to_owned(), value.to_owned())
                .unwrap_or_default()
                .into_bytes(),
            _ => b"error: bad command".to_vec(),
        }
    }

    fn applied(&mut self, index: u64) {
        let mut view = self.view.lock().unwrap();
        view.map = self.map.clone();
        view.applied = index;
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.map).unwrap()
    }

    fn restore(&mut self, _index: u64, snapshot: &[u8]) -> Result<(), String> {
        self.map = serde_json::from_slice(snapshot).map_err(|e| e.to_string())?;
        self.view.lock().unwrap().restores += 1;
        Ok(())
    }
}
