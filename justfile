# Every recipe is a thin alias for `cargo xtask <name>`; the xtask is the source of truth.

# List the recipes.
default:
    @just --list

# Install what is missing (wasm target, apt packages, e2e user, wasm-bindgen-cli).
setup:
    cargo xtask setup

# Build the wasm client into web/pkg.
wasm:
    cargo xtask wasm

# Build the wasm client and run the relay in demo mode (e.g. `just demo --listen 0.0.0.0:8080`).
demo *ARGS:
    cargo xtask demo {{ARGS}}

# Setup, wasm, fmt, clippy, the whole test suite and a short fuzzing run (what CI runs).
test:
    cargo xtask test

# Fuzz the frame decoder and the command-line parsers (e.g. `just fuzz --seconds 600 frame_decode`).
fuzz *ARGS:
    cargo xtask fuzz {{ARGS}}

# Throughput table: native client, browser tab and ssh -L over the same sshd; wasm size.
bench:
    cargo xtask bench
