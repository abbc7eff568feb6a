//! The red-team suite: each test is an attack that someone without credentials (or a web
//! page the user merely visits) could make on the relay, and the bound that holds it.
//! Every attack runs on loopback only, is bounded in count and time, and stops by itself.
//! A module per area, so the attacks are read together; they are part of the one e2e
//! binary (`cargo test -p tabtunnel-e2e -- redteam::` runs just them).

mod browser_origin;
mod forwards;
mod front_door;
mod logs;
mod page;
mod places;
mod session_bounds;
