//! The browser's known hosts: [`KnownHosts`] over `localStorage`, in the format the page
//! has always used, so keys users remembered survive: one JSON object under
//! `tabtunnel.knownHosts`, keyed `RELAY|TARGET|ALGORITHM`, each value
//! `{ fingerprint, algorithm, added }` (`added` an ISO date).
//!
//! The store is `localStorage` or any object with its `getItem(name)` and
//! `setItem(name, text)`: a worker has no `localStorage`, so the page's client worker
//! passes one that reads a copy the page sent and posts each write back to the page.

use js_sys::{Array, Date, Function, JSON, Object, Reflect};
use send_wrapper::SendWrapper;
use tabtunnel_client::{KnownHostId, KnownHosts, KnownHostsError};
use wasm_bindgen::{JsCast, JsValue};

const STORAGE_KEY: &str = "tabtunnel.knownHosts";

/// Reads and writes its store on every call: another tab of the page may have changed
/// it meanwhile. The JS object is wrapped to be `Send` as russh's handler needs (wasm
/// runs it on one thread).
#[derive(Debug)]
pub struct BrowserKnownHosts {
    /// `None` when the browser offers no `localStorage` (disabled): nothing is known
    /// and every write fails.
    store: SendWrapper<Option<JsValue>>,
}

impl BrowserKnownHosts {
    /// Over `store` (`getItem`/`setItem`), or this window's `localStorage` when it is
    /// `None`.
    pub fn new(store: Option<JsValue>) -> Self {
        let store = store.or_else(|| {
            web_sys::window()
                .and_then(|w| w.local_storage().ok().flatten())
                .map(JsValue::from)
        });
        Self {
            store: SendWrapper::new(store),
        }
    }

    fn call(&self, method: &str, args: &Array) -> Result<JsValue, KnownHostsError> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| KnownHostsError("this browser offers no localStorage".into()))?;
        Reflect::get(store, &method.into())
            .and_then(|f| f.dyn_into::<Function>())
            .and_then(|f| f.apply(store, args))
            .map_err(|_| {
                KnownHostsError("localStorage refused the write (full or disabled)".into())
            })
    }

    /// The stored object; anything unreadable counts as empty, as it always has.
    fn load(&self) -> Object {
        let raw = self
            .call("getItem", &Array::of1(&STORAGE_KEY.into()))
            .ok()
            .and_then(|v| v.as_string());
        let Some(raw) = raw else {
            return Object::new();
        };
        match JSON::parse(&raw) {
            Ok(value) if value.is_object() && !Array::is_array(&value) => value.unchecked_into(),
            _ => Object::new(),
        }
    }

    fn save(&self, all: &Object) -> Result<(), KnownHostsError> {
        let text = JSON::stringify(all)
            .ok()
            .and_then(|s| s.as_string())
            .ok_or_else(|| {
                KnownHostsError("the known hosts could not be written as JSON".into())
            })?;
        self.call("setItem", &Array::of2(&STORAGE_KEY.into(), &text.into()))
            .map(|_| ())
    }
}

fn key(id: &KnownHostId) -> String {
    format!("{}|{}|{}", id.relay, id.target, id.algorithm)
}

impl KnownHosts for BrowserKnownHosts {
    fn get(&self, id: &KnownHostId) -> Option<String> {
        let entry = Reflect::get(&self.load(), &key(id).into()).ok()?;
        if !entry.is_object() {
            return None;
        }
        Reflect::get(&entry, &"fingerprint".into())
            .ok()?
            .as_string()
    }

    fn put(&mut self, id: &KnownHostId, fingerprint: &str) -> Result<(), KnownHostsError> {
        let all = self.load();
        let entry = Object::new();
        let set = |k: &str, v: JsValue| Reflect::set(&entry, &k.into(), &v).map(|_| ());
        set("fingerprint", fingerprint.into())
            .and_then(|()| set("algorithm", id.algorithm.as_str().into()))
            .and_then(|()| set("added", Date::new_0().to_iso_string().into()))
            .and_then(|()| Reflect::set(&all, &key(id).into(), &entry).map(|_| ()))
            .map_err(|_| KnownHostsError("the entry could not be built".into()))?;
        self.save(&all)
    }

    fn forget(&mut self, id: &KnownHostId) -> Result<(), KnownHostsError> {
        let all = self.load();
        let _ = Reflect::delete_property(&all, &key(id).into());
        self.save(&all)
    }

    fn algorithms(&self, relay: &str, target: &str) -> Vec<String> {
        let prefix = format!("{relay}|{target}|");
        Object::keys(&self.load())
            .iter()
            .filter_map(|k| k.as_string())
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}
