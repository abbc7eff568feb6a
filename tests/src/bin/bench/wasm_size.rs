//! The page's wasm bundle: its size as built, and gzipped as the relay serves it to
//! browsers that accept gzip.

use std::io::Write;

use anyhow::{Context, Result};
use tabtunnel_e2e::relay::web_dir;

#[derive(Debug, Clone, Copy)]
pub struct WasmSize {
    pub raw: usize,
    pub gzip: usize,
}

pub fn measure() -> Result<WasmSize> {
    let wasm = web_dir().join("pkg/client_wasm_bg.wasm");
    let raw = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&raw)?;
    Ok(WasmSize {
        raw: raw.len(),
        gzip: encoder.finish()?.len(),
    })
}
