//! `parse_forward`, `parse_dynamic` and `parse_remote` on arbitrary text.
//!
//! Properties: they return (never panic); a spec `parse_forward` accepts has a
//! destination port in 1-65535, a non-empty destination host of at most 253 bytes, no
//! spaces or control characters in host or bind address; a `-D` spec has no spaces or
//! control characters in its bind address; a `-R` spec holds what a `-L` spec does; and
//! each one's `Display` form (what the page shows) parses back to the same spec.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tabtunnel_spec::{
    DynamicSpec, ForwardSpec, RemoteSpec, parse_dynamic, parse_forward, parse_remote,
};

fuzz_target!(|input: &[u8]| {
    let text = valid_utf8_prefix(input);
    if let Ok(spec) = parse_dynamic(text) {
        assert!(
            !spec
                .bind
                .chars()
                .any(|c| c.is_whitespace() || c.is_control()),
            "{text:?} gave {spec:?}"
        );
        let shown = spec.to_string();
        assert_eq!(
            shown.parse::<DynamicSpec>().as_ref(),
            Ok(&spec),
            "{text:?} gave {spec:?}, shown as {shown:?}"
        );
    }
    if let Ok(spec) = parse_remote(text) {
        assert_ne!(spec.host_port, 0, "{text:?} gave {spec:?}");
        assert!(
            !spec.host.is_empty() && spec.host.len() <= 253,
            "{text:?} gave {spec:?}"
        );
        for field in [&spec.host, &spec.bind] {
            assert!(
                !field.chars().any(|c| c.is_whitespace() || c.is_control()),
                "{text:?} gave {spec:?}"
            );
        }
        let shown = spec.to_string();
        assert_eq!(
            shown.parse::<RemoteSpec>().as_ref(),
            Ok(&spec),
            "{text:?} gave {spec:?}, shown as {shown:?}"
        );
    }
    let Ok(spec) = parse_forward(text) else {
        return;
    };
    assert_ne!(spec.host_port, 0, "{text:?} gave {spec:?}");
    assert!(
        !spec.host.is_empty() && spec.host.len() <= 253,
        "{text:?} gave {spec:?}"
    );
    for field in [&spec.host, &spec.bind] {
        assert!(
            !field.chars().any(|c| c.is_whitespace() || c.is_control()),
            "{text:?} gave {spec:?}"
        );
    }
    let shown = spec.to_string();
    assert_eq!(
        shown.parse::<ForwardSpec>().as_ref(),
        Ok(&spec),
        "{text:?} gave {spec:?}, shown as {shown:?}"
    );
});

/// Text typed in a form is UTF-8; the fuzzer's bytes need not be.
fn valid_utf8_prefix(input: &[u8]) -> &str {
    match std::str::from_utf8(input) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&input[..e.valid_up_to()]).unwrap_or_default(),
    }
}
