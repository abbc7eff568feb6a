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

/// Waits `duration` on the runtime's timer.
#[cfg(not(target_arch = "wasm32"))]
pub async fn sleep(duration: std::time::Duration) {
    tokio::time::sleep(duration).await;
}

/// Waits `duration` on the browser's timer (`setTimeout`). Browsers slow timers in
/// background tabs; callers must not read a late wake-up as an event.
#[cfg(target_arch = "wasm32")]
pub async fn sleep(duration: std::time::Duration) {
    // setTimeout takes a signed 32-bit delay: clamp, as longer ones would fire at once.
    let millis = u32::try_from(duration.as_millis())
        .unwrap_or(u32::MAX)
        .min(i32::MAX as u32);
    gloo_timers::future::TimeoutFuture::new(millis).await;
}
