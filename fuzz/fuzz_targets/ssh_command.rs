//! `parse_ssh_command` on arbitrary text.
//!
//! Properties: it returns (never panics); a command it accepts names a non-empty host,
//! an SSH port (if any) in 1-65535, and only `-L` specs that `parse_forward` accepts (and
//! `-D` specs that `parse_dynamic` accepts, `-R` specs that `parse_remote` accepts); and the
//! command rebuilt from what it found (`ssh -l USER -p PORT -L SPEC... -D SPEC... -R
//! SPEC... HOST`, shell-quoted) parses to the same
//! user, host, port and forwards, with nothing ignored.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tabtunnel_spec::{parse_dynamic, parse_forward, parse_remote, parse_ssh_command};

fuzz_target!(|input: &[u8]| {
    let text = valid_utf8_prefix(input);
    let Ok(cmd) = parse_ssh_command(text) else {
        return;
    };
    assert!(!cmd.host.is_empty(), "{text:?} gave {cmd:?}");
    assert_ne!(cmd.port, Some(0), "{text:?} gave {cmd:?}");
    for spec in &cmd.forwards {
        assert!(parse_forward(spec).is_ok(), "{text:?} gave {cmd:?}");
    }
    for spec in &cmd.dynamic {
        assert!(parse_dynamic(spec).is_ok(), "{text:?} gave {cmd:?}");
    }
    for spec in &cmd.remote {
        assert!(parse_remote(spec).is_ok(), "{text:?} gave {cmd:?}");
    }

    let mut words = vec!["ssh".to_owned()];
    if let Some(user) = &cmd.user {
        words.extend(["-l".to_owned(), user.clone()]);
    }
    if let Some(port) = cmd.port {
        words.extend(["-p".to_owned(), port.to_string()]);
    }
    for spec in &cmd.forwards {
        words.extend(["-L".to_owned(), spec.clone()]);
    }
    for spec in &cmd.dynamic {
        words.extend(["-D".to_owned(), spec.clone()]);
    }
    for spec in &cmd.remote {
        words.extend(["-R".to_owned(), spec.clone()]);
    }
    // An IPv6 address needs brackets, or its last group would read as a port.
    words.push(if cmd.host.contains(':') {
        format!("[{}]", cmd.host)
    } else {
        cmd.host.clone()
    });
    let rebuilt = shell_words::join(&words);
    let again = parse_ssh_command(&rebuilt)
        .unwrap_or_else(|e| panic!("{text:?} gave {cmd:?}, rebuilt as {rebuilt:?}: {e}"));
    assert_eq!(
        (
            &again.user,
            &again.host,
            again.port,
            &again.forwards,
            &again.dynamic,
            &again.remote
        ),
        (
            &cmd.user,
            &cmd.host,
            cmd.port,
            &cmd.forwards,
            &cmd.dynamic,
            &cmd.remote
        ),
        "{text:?} gave {cmd:?}, rebuilt as {rebuilt:?}"
    );
    assert!(again.ignored.is_empty(), "{rebuilt:?} gave {again:?}");
});

/// Text pasted in a form is UTF-8; the fuzzer's bytes need not be.
fn valid_utf8_prefix(input: &[u8]) -> &str {
    match std::str::from_utf8(input) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&input[..e.valid_up_to()]).unwrap_or_default(),
    }
}
