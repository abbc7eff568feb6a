//! The browser's known hosts: [`KnownHosts`] over `localStorage`, in the format the page
//! has always used, so keys users remembered survive: one JSON object under
//! `tabtunnel.knownHosts`, keyed `RELAY|TARGET|ALGORITHM`, each value
//! `{ fingerprint, algorithm, added }` (`added` an ISO date).

use js_sys::{Array, Date, JSON, Object, Reflect};
use tabtunnel_client::{KnownHostId, KnownHosts, KnownHostsError};
use wasm_bindgen::{JsCast, JsValue};

const STORAGE_KEY: &str = "tabtunnel.knownHosts";

/// Reads and writes `localStorage` on every call: another tab of the page may have
/// changed it meanwhile. Holds nothing, so it is `Send` as russh's handler needs.
#[derive(Debug, Default)]
pub struct BrowserKnownHosts;

fn storage() -> Result<web_sys::Storage, KnownHostsError> {
    web_sys::window()
        .and_then(|w| w.local_storage().ok().flatten())
        .ok_or_else(|| KnownHostsError("this browser offers no localStorage".into()))
}

fn key(id: &KnownHostId) -> String {
    format!("{}|{}|{}", id.relay, id.target, id.algorithm)
}

/// The stored object; anything unreadable counts as empty, as it always has.
fn load() -> Object {
    let Ok(storage) = storage() else {
        return Object::new();
    };
    let Some(raw) = storage.get_item(STORAGE_KEY).ok().flatten() else {
        return Object::new();
    };
    match JSON::parse(&raw) {
        Ok(value) if value.is_object() && !Array::is_array(&value) => value.unchecked_into(),
        _ => Object::new(),
    }
}

fn save(all: &Object) -> Result<(), KnownHostsError> {
    let text = JSON::stringify(all)
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| KnownHostsError("the known hosts could not be written as JSON".into()))?;
    storage()?
        .set_item(STORAGE_KEY, &text)
        .map_err(|_| KnownHostsError("localStorage refused the write (full or disabled)".into()))
}

impl KnownHosts for BrowserKnownHosts {
    fn get(&self, id: &KnownHostId) -> Option<String> {
        let entry = Reflect::get(&load(), &key(id).into()).ok()?;
        if !entry.is_object() {
            return None;
        }
        Reflect::get(&entry, &"fingerprint".into())
            .ok()?
            .as_string()
    }

    fn put(&mut self, id: &KnownHostId, fingerprint: &str) -> Result<(), KnownHostsError> {
        let all = load();
        let entry = Object::new();
        let set = |k: &str, v: JsValue| Reflect::set(&entry, &k.into(), &v).map(|_| ());
        set("fingerprint", fingerprint.into())
            .and_then(|()| set("algorithm", id.algorithm.as_str().into()))
            .and_then(|()| set("added", Date::new_0().to_iso_string().into()))
            .and_then(|()| Reflect::set(&all, &key(id).into(), &entry).map(|_| ()))
            .map_err(|_| KnownHostsError("the entry could not be built".into()))?;
        save(&all)
    }

    fn forget(&mut self, id: &KnownHostId) -> Result<(), KnownHostsError> {
        let all = load();
        let _ = Reflect::delete_property(&all, &key(id).into());
        save(&all)
    }

    fn algorithms(&self, relay: &str, target: &str) -> Vec<String> {
        let prefix = format!("{relay}|{target}|");
        Object::keys(&load())
            .iter()
            .filter_map(|k| k.as_string())
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}
