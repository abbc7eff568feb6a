//! Memory a path holds at one moment: the relay's RSS, the tab renderer's RSS (a client in
//! a Worker lives there too) and the page's JS heap; read before and after the bulk run
//! to see that they stay flat.

use anyhow::Result;

use crate::paths::{Path, Role};
use crate::procs;
use crate::tab_probe;

#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    pub relay_rss: Option<u64>,
    pub renderer_rss: Option<u64>,
    pub js_heap: Option<u64>,
}

pub async fn read(path: &Path) -> Result<Footprint> {
    let renderer_rss = path
        .processes
        .iter()
        .find(|(role, _)| *role == Role::Renderer)
        .map(|(_, group)| group.rss());
    Ok(Footprint {
        relay_rss: path.relay.map(procs::rss).transpose()?,
        renderer_rss,
        js_heap: match &path.browser {
            Some(browser) => Some(tab_probe::js_heap(browser).await?),
            None => None,
        },
    })
}
