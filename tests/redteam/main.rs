//! The red-team suite: each test is an attack that someone without credentials (or a web
//! page the user merely visits) could make on the relay, and the bound that holds it.
//! Every attack runs on loopback only, is bounded in count and time, and stops by itself.
//! One binary with a module per area (rust-analyzer's slow-tests shape), so the attacks
//! are read together and share one build.

mod browser_origin;
mod forwards;
mod front_door;
mod logs;
mod page;
mod places;
mod session_bounds;
