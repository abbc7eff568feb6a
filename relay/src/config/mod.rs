//! The operator's policy: which SSH targets exist, which ports and bind addresses a
//! forward may use. Deny by default: no target is reachable unless named here.
//!
//! Settings come from the config file ([`Settings`], its keys) and the command line
//! ([`Flags`], the same names in kebab case); each value type has one parser in
//! [`values`]. The flags overlay the file, then one [`Config::validate`] gives the
//! [`Config`] the rest of the relay reads ([`Config::load`]).

mod effective;
mod flags;
mod policy;
mod settings;
pub mod values;

pub use flags::Flags;
pub use policy::{
    Config, ConfigError, Limits, LogFormat, Target, WEB_FORWARD_ID_LEN, WebForwardMode,
    is_web_forward_id,
};
pub use settings::Settings;
pub use values::AccessToken;

/// An IPv4 or IPv6 network in CIDR form, as `forward_allowed_sources` holds them.
pub use ipnet::IpNet;
