//! The system account that the sshd password-authentication tests log in as.
//!
//! `cargo xtask setup` creates it (`useradd --system --no-create-home --shell
//! /usr/sbin/nologin`) and (re)sets its password with `chpasswd`.

/// Login name of the end-to-end test account (the tests read the same values from
/// `tests/src/lib.rs`; change both together).
pub const E2E_USER: &str = "tabtunnel-e2e";

/// Password of the end-to-end test account (test-only; the account has no shell).
pub const E2E_PASSWORD: &str = "tabtunnel-e2e-password";

/// Login shell of the account: no interactive logins.
pub const E2E_SHELL: &str = "/usr/sbin/nologin";
