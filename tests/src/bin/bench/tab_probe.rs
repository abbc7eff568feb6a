//! What only the page can tell, read through WebDriver on the page's main thread (where
//! the UI runs, whether the client runs there or in a Worker): its longest task during
//! a span, and its JS heap.

use anyhow::{Context, Result};
use tabtunnel_e2e::browser::Browser;

/// Starts watching the main thread's long tasks (the Long Tasks API reports only tasks
/// over 50 ms). Entries that started before this call are ignored, so page load and
/// wasm compilation do not count; `buffered` loses none queued before the observer runs.
pub async fn watch_long_tasks(browser: &Browser) -> Result<()> {
    browser
        .client
        .execute(
            r#"
            window.__benchLongTasks = { since: performance.now(), longest: 0, count: 0 };
            const note = (entries) => {
                for (const e of entries) {
                    if (e.startTime < window.__benchLongTasks.since) continue;
                    window.__benchLongTasks.longest = Math.max(window.__benchLongTasks.longest, e.duration);
                    window.__benchLongTasks.count += 1;
                }
            };
            window.__benchLongTaskObserver?.disconnect();
            window.__benchLongTaskObserver = new PerformanceObserver((list) => note(list.getEntries()));
            window.__benchLongTaskObserver.observe({ type: "longtask", buffered: true });
            window.__benchLongTaskNote = note;
            "#,
            vec![],
        )
        .await
        .context("installing the long-task observer in the page")?;
    Ok(())
}

/// The longest main-thread task since [`watch_long_tasks`], in ms (0: none over 50 ms).
pub async fn longest_task_ms(browser: &Browser) -> Result<f64> {
    let longest = browser
        .client
        .execute(
            r#"
            const observer = window.__benchLongTaskObserver;
            window.__benchLongTaskNote(observer.takeRecords());
            observer.disconnect();
            return window.__benchLongTasks.longest;
            "#,
            vec![],
        )
        .await
        .context("reading the long tasks from the page")?;
    longest
        .as_f64()
        .with_context(|| format!("the page reported no longest task: {longest}"))
}

/// The main thread's used JS heap in bytes (`performance.memory`, exact with Chromium's
/// `--enable-precise-memory-info`), after garbage collections (`--js-flags=--expose-gc`)
/// on either side of a turn of the event loop, so that what is left is what the page holds.
pub async fn js_heap(browser: &Browser) -> Result<u64> {
    let used = browser
        .client
        .execute_async(
            r#"
            const done = arguments[arguments.length - 1];
            const collect = () => { if (typeof gc === "function") gc(); };
            collect();
            setTimeout(() => {
                collect();
                done(performance.memory ? performance.memory.usedJSHeapSize : null);
            }, 0);
            "#,
            vec![],
        )
        .await
        .context("reading the page's JS heap")?;
    used.as_u64()
        .with_context(|| format!("the page has no performance.memory: {used}"))
}
