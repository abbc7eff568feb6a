//! The few runtime services the client needs, for tokio and for the browser.

use std::future::Future;

/// Runs `task` in the background.
#[cfg(not(target_arch = "wasm32"))]
pub fn spawn<F: Future<Output = ()> + Send + 'static>(task: F) {
    tokio::spawn(task);
}

/// Runs `task` in the background on the browser's event loop.
#[cfg(target_arch = "wasm32")]
pub fn spawn<F: Future<Output = ()> + 'static>(task: F) {
    wasm_bindgen_futures::spawn_local(task);
}
