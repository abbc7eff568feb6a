//! Parsing what users type: `ssh -L`, `ssh -D` and `ssh -R` forward specs and whole `ssh`
//! command lines.
//!
//! Its own crate, with no I/O and no SSH: the client re-exports it as
//! `tabtunnel_client::spec`, and the fuzz targets build it without the SSH stack.

use std::fmt;

/// A local forward as `ssh -L [bind_address:]port:host:hostport` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    /// Where the relay listens; empty means the default (loopback). `*` means all.
    pub bind: String,
    /// Port the relay listens on; 0 asks for any free port in the relay's range.
    pub port: u16,
    /// Destination host, as the SSH server resolves it (IPv6 without brackets).
    pub host: String,
    /// Destination port.
    pub host_port: u16,
}

/// Why a spec or command line could not be understood; the message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(message.into()))
}

impl fmt::Display for ForwardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = |h: &str| {
            if h.contains(':') {
                format!("[{h}]")
            } else {
                h.to_owned()
            }
        };
        if !self.bind.is_empty() {
            write!(f, "{}:", bracket(&self.bind))?;
        }
        write!(
            f,
            "{}:{}:{}",
            self.port,
            bracket(&self.host),
            self.host_port
        )
    }
}

impl std::str::FromStr for ForwardSpec {
    type Err = ParseError;

    fn from_str(spec: &str) -> Result<Self, ParseError> {
        parse_forward(spec)
    }
}

/// A dynamic forward (a SOCKS proxy) as `ssh -D [bind_address:]port` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicSpec {
    /// Where the relay listens; empty means the default (loopback). `*` means all.
    pub bind: String,
    /// Port the relay listens on; 0 asks for any free port in the relay's range.
    pub port: u16,
}

impl fmt::Display for DynamicSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bind.as_str() {
            "" => write!(f, "{}", self.port),
            bind if bind.contains(':') => write!(f, "[{bind}]:{}", self.port),
            bind => write!(f, "{bind}:{}", self.port),
        }
    }
}

impl std::str::FromStr for DynamicSpec {
    type Err = ParseError;

    fn from_str(spec: &str) -> Result<Self, ParseError> {
        parse_dynamic(spec)
    }
}

/// A remote forward as `ssh -R [bind_address:]port:host:hostport` describes it: the SSH
/// server listens on `bind_address:port`, and each connection it takes goes to
/// `host:hostport`, which the relay connects to from its own host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    /// Where the SSH server listens; empty means its default (loopback, as `ssh -R`
    /// asks for `localhost`). `*` means all its addresses (sshd's GatewayPorts decides).
    pub bind: String,
    /// Port the SSH server listens on; 0 lets it pick one.
    pub port: u16,
    /// Destination host, as the relay reaches it (IPv6 without brackets).
    pub host: String,
    /// Destination port.
    pub host_port: u16,
}

impl fmt::Display for RemoteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ForwardSpec {
            bind: self.bind.clone(),
            port: self.port,
            host: self.host.clone(),
            host_port: self.host_port,
        }
        .fmt(f)
    }
}

impl std::str::FromStr for RemoteSpec {
    type Err = ParseError;

    fn from_str(spec: &str) -> Result<Self, ParseError> {
        parse_remote(spec)
    }
}

/// A forward of any kind, as an `ssh` option names it: `-L spec`, `-D spec` or
/// `-R spec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnySpec {
    Local(ForwardSpec),
    Dynamic(DynamicSpec),
    Remote(RemoteSpec),
}

impl fmt::Display for AnySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnySpec::Local(spec) => write!(f, "-L {spec}"),
            AnySpec::Dynamic(spec) => write!(f, "-D {spec}"),
            AnySpec::Remote(spec) => write!(f, "-R {spec}"),
        }
    }
}

/// Longest host name DNS allows.
const MAX_HOST: usize = 253;

const SPEC_HELP: &str =
    "write it as [bind_address:]port:host:hostport, e.g. 1100:mail.example.com:110";

const BRACKET_HELP: &str = "only a whole IPv6 address goes in brackets, e.g. [2001:db8::1]";

/// Parses `[bind_address:]port:host:hostport`. IPv6 addresses go in brackets.
pub fn parse_forward(spec: &str) -> Result<ForwardSpec, ParseError> {
    let (bind, port, host, host_port) = parse_four(spec, SPEC_HELP, "the forward")?;
    Ok(ForwardSpec {
        bind,
        port,
        host,
        host_port,
    })
}

/// The fields of `[bind_address:]port:host:hostport`, shared by `-L` and `-R`: `help`
/// says how to write the kind's spec, `empty` names it when nothing was typed.
fn parse_four(
    spec: &str,
    help: &str,
    empty: &str,
) -> Result<(String, u16, String, u16), ParseError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return err(format!("{empty} is empty; {help}"));
    }
    let parts = split_colons(spec)
        .ok_or_else(|| ParseError(format!("{spec:?} has an unclosed '['; {help}")))?;
    let (bind, port, host, host_port) = match parts.as_slice() {
        [port, host, host_port] => ("", *port, *host, *host_port),
        [bind, port, host, host_port] => (*bind, *port, *host, *host_port),
        _ => {
            return err(format!(
                "{spec:?} has {} parts separated by ':'; {help} (IPv6 addresses go in [brackets])",
                parts.len()
            ));
        }
    };
    let port = parse_port_with(port, "listen port", true, help)?;
    let host_port = parse_port_with(host_port, "destination port", false, help)?;
    let host = unbracket(host);
    if host.is_empty() {
        return err(format!("{spec:?} has no destination host; {help}"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return err(format!(
            "destination host {host:?} contains spaces or control characters"
        ));
    }
    // Brackets only ever enclose a whole field: anything else would be shown back
    // (Display) as a spec that no longer parses, or parses to something else.
    if host.contains(['[', ']']) {
        return err(format!(
            "destination host {host:?} has a stray '[' or ']'; {BRACKET_HELP}"
        ));
    }
    if host.len() > MAX_HOST {
        return err(format!(
            "the destination host is {} characters; a host name has at most {MAX_HOST}",
            host.len()
        ));
    }
    let bind = check_bind(unbracket(bind))?;
    Ok((bind.to_owned(), port, host.to_owned(), host_port))
}

const DYNAMIC_HELP: &str = "write it as [bind_address:]port, e.g. 1080 or 127.0.0.1:1080";

/// Parses `[bind_address:]port`, the argument of `ssh -D`. An IPv6 bind address goes
/// in brackets.
pub fn parse_dynamic(spec: &str) -> Result<DynamicSpec, ParseError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return err(format!("the SOCKS forward is empty; {DYNAMIC_HELP}"));
    }
    let parts = split_colons(spec)
        .ok_or_else(|| ParseError(format!("{spec:?} has an unclosed '['; {DYNAMIC_HELP}")))?;
    let (bind, port) = match parts.as_slice() {
        [port] => ("", *port),
        [bind, port] => (*bind, *port),
        [_, _, _] | [_, _, _, _] => {
            return err(format!(
                "{spec:?} names a destination, which a SOCKS forward (-D) does not: each client names its own; {DYNAMIC_HELP}, or use -L for a fixed destination"
            ));
        }
        _ => {
            return err(format!(
                "{spec:?} has {} parts separated by ':'; {DYNAMIC_HELP} (IPv6 addresses go in [brackets])",
                parts.len()
            ));
        }
    };
    let port = match port.parse::<u16>() {
        Ok(port) => port,
        Err(_) if port.is_empty() => {
            return err(format!("the listen port is missing; {DYNAMIC_HELP}"));
        }
        Err(_) => {
            return err(format!(
                "the listen port {port:?} is not a number from 0-65535; {DYNAMIC_HELP}"
            ));
        }
    };
    let bind = check_bind(unbracket(bind))?;
    Ok(DynamicSpec {
        bind: bind.to_owned(),
        port,
    })
}

const REMOTE_HELP: &str = "write it as [bind_address:]port:host:hostport, e.g. 8080:127.0.0.1:3000 (the SSH server listens on port; the relay connects to host:hostport)";

/// Parses `[bind_address:]port:host:hostport`, the argument of `ssh -R`: the SSH server
/// listens on `bind_address:port` (port 0: it picks one), and the relay connects to
/// `host:hostport`. IPv6 addresses go in brackets.
pub fn parse_remote(spec: &str) -> Result<RemoteSpec, ParseError> {
    let trimmed = spec.trim();
    // `ssh -R [bind_address:]port` alone asks the server's side for a SOCKS proxy.
    if let Some(parts) = split_colons(trimmed)
        && (1..=2).contains(&parts.len())
        && !trimmed.is_empty()
    {
        return err(format!(
            "{trimmed:?} names no destination: a remote forward (-R) here carries each connection the SSH server takes to one host:hostport (a SOCKS proxy on the server's side, -R with a port alone, is not supported); {REMOTE_HELP}"
        ));
    }
    let (bind, port, host, host_port) = parse_four(spec, REMOTE_HELP, "the remote forward")?;
    Ok(RemoteSpec {
        bind,
        port,
        host,
        host_port,
    })
}

/// Parses a forward as an `ssh` option writes it: `-L [bind_address:]port:host:hostport`,
/// `-D [bind_address:]port` or `-R [bind_address:]port:host:hostport` (the space after
/// the letter is optional). Text without any is a `-L` spec, read as [`parse_forward`]
/// reads it.
pub fn parse_any(text: &str) -> Result<AnySpec, ParseError> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("-D") {
        return parse_dynamic(rest).map(AnySpec::Dynamic);
    }
    if let Some(rest) = text.strip_prefix("-R") {
        return parse_remote(rest).map(AnySpec::Remote);
    }
    let local = text.strip_prefix("-L").unwrap_or(text);
    parse_forward(local).map(AnySpec::Local)
}

/// The checks every bind address gets, with the messages `-L` has always given.
fn check_bind(bind: &str) -> Result<&str, ParseError> {
    if bind.len() > MAX_HOST {
        return err(format!(
            "the bind address is {} characters; an address has at most {MAX_HOST}",
            bind.len()
        ));
    }
    if bind.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return err(format!(
            "bind address {bind:?} contains spaces or control characters"
        ));
    }
    if bind.contains(['[', ']']) {
        return err(format!(
            "bind address {bind:?} has a stray '[' or ']'; {BRACKET_HELP}"
        ));
    }
    Ok(bind)
}

/// Splits on ':' outside brackets; `None` if a bracket is left open.
fn split_colons(spec: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0u32, 0usize);
    for (i, c) in spec.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1)?,
            ':' if depth == 0 => {
                parts.push(&spec[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    (depth == 0).then(|| {
        parts.push(&spec[start..]);
        parts
    })
}

fn unbracket(s: &str) -> &str {
    s.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s)
}

fn parse_port(text: &str, what: &str, zero_ok: bool) -> Result<u16, ParseError> {
    parse_port_with(text, what, zero_ok, SPEC_HELP)
}

fn parse_port_with(text: &str, what: &str, zero_ok: bool, help: &str) -> Result<u16, ParseError> {
    match text.parse::<u16>() {
        Ok(0) if !zero_ok => err(format!("the {what} must be 1-65535, not 0")),
        Ok(port) => Ok(port),
        Err(_) if text.is_empty() => err(format!("the {what} is missing; {help}")),
        Err(_) => err(format!(
            "the {what} {text:?} is not a number from {}-65535",
            u16::from(!zero_ok)
        )),
    }
}

/// What a pasted `ssh ...` command line asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshCommand {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// Every `-L` spec, validated, in order.
    pub forwards: Vec<String>,
    /// Every `-D` spec, validated, in order.
    pub dynamic: Vec<String>,
    /// Every `-R` spec, validated, in order.
    pub remote: Vec<String>,
    /// Options and words tabtunnel does not use, as typed, so the page can say so.
    pub ignored: Vec<String>,
}

/// ssh options that take an argument (from ssh(1)).
const OPTIONS_WITH_ARG: &str = "BbcDEeFIiJLlmOoPpQRSWw";
/// ssh options that take none.
const FLAGS: &str = "46AaCfGgKkMNnqsTtVvXxYy";

/// Parses `ssh [options] [user@]host [command]`, as a user would paste it. The leading
/// `ssh` is optional. `-L`, `-D`, `-R`, `-p`, `-l` and the destination are used; the rest is listed
/// in `ignored`.
pub fn parse_ssh_command(line: &str) -> Result<SshCommand, ParseError> {
    let words = shell_words::split(line)
        .map_err(|_| ParseError("the command has an unclosed quote".into()))?;
    let mut words = words.into_iter().peekable();
    if words
        .peek()
        .is_some_and(|w| w == "ssh" || w.ends_with("/ssh"))
    {
        words.next();
    }
    let mut cmd = SshCommand::default();
    let mut destination = None;
    let mut options_ended = false;
    while let Some(word) = words.next() {
        if destination.is_some() {
            cmd.ignored.push(word); // the remote command
            continue;
        }
        let flags = word.strip_prefix('-').filter(|f| !f.is_empty());
        let Some(flags) = flags.filter(|_| !options_ended) else {
            destination = Some(word);
            continue;
        };
        if flags == "-" {
            options_ended = true; // "--": the next word is the destination
            continue;
        }
        for (i, flag) in flags.char_indices() {
            if OPTIONS_WITH_ARG.contains(flag) {
                let rest = &flags[i + flag.len_utf8()..];
                let arg = if rest.is_empty() {
                    words
                        .next()
                        .ok_or_else(|| ParseError(format!("option -{flag} needs a value")))?
                } else {
                    rest.to_owned()
                };
                match flag {
                    'L' => {
                        parse_forward(&arg).map_err(|e| ParseError(format!("-L {arg}: {e}")))?;
                        cmd.forwards.push(arg);
                    }
                    'D' => {
                        parse_dynamic(&arg).map_err(|e| ParseError(format!("-D {arg}: {e}")))?;
                        cmd.dynamic.push(arg);
                    }
                    'R' => {
                        parse_remote(&arg).map_err(|e| ParseError(format!("-R {arg}: {e}")))?;
                        cmd.remote.push(arg);
                    }
                    'p' => cmd.port = Some(parse_port(&arg, "SSH port", false)?),
                    'l' => cmd.user = Some(arg),
                    _ => cmd.ignored.push(format!("-{flag} {arg}")),
                }
                break;
            } else if FLAGS.contains(flag) {
                cmd.ignored.push(format!("-{flag}"));
            } else {
                return err(format!("-{flag} is not an ssh option"));
            }
        }
    }
    let Some(destination) = destination else {
        return err("the command names no host; it should end with [user@]host");
    };
    let destination = destination.strip_prefix("ssh://").unwrap_or(&destination);
    let (user, host_port) = match destination.rsplit_once('@') {
        Some((user, rest)) => (Some(user.to_owned()), rest),
        None => (None, destination),
    };
    let (host, port) = split_host_port(host_port)?;
    if let Some(port) = port {
        cmd.port = Some(parse_port(port, "SSH port", false)?);
    }
    check_ssh_host(host)?;
    cmd.host = host.to_owned();
    if user.is_some() {
        cmd.user = user;
    }
    Ok(cmd)
}

/// `host`, `host:port` (ssh:// form), `[v6]` or `[v6]:port`.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), ParseError> {
    if let Some(rest) = text.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        return match tail.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if tail.is_empty() => Ok((host, None)),
            None => err(format!(
                "{text:?} has {tail:?} after the ']'; write [address] or [address]:port"
            )),
        };
    }
    Ok(match text.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, Some(port)),
        _ => (text, None),
    })
}

/// Characters OpenSSH refuses in a host name on its command line (`valid_hostname` in
/// ssh.c), and the brackets, which only enclose a whole IPv6 address.
const NOT_IN_HOST: &[char] = &[
    '\'', '`', '"', '$', '\\', ';', '&', '<', '>', '|', '(', ')', '{', '}', '[', ']',
];

/// The destination host must be something a relay target could be named.
fn check_ssh_host(host: &str) -> Result<(), ParseError> {
    if host.is_empty() {
        return err("the command names no host; it should end with [user@]host");
    }
    if host.starts_with('-') {
        return err(format!(
            "the host {host:?} starts with '-', which no host name does"
        ));
    }
    if let Some(c) = host
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || NOT_IN_HOST.contains(c))
    {
        return err(format!(
            "the host {host:?} contains {c:?}, which no host name does; \
             the command should end with [user@]host"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(bind: &str, port: u16, host: &str, host_port: u16) -> ForwardSpec {
        ForwardSpec {
            bind: bind.into(),
            port,
            host: host.into(),
            host_port,
        }
    }

    #[test]
    fn forward_specs_like_ssh() {
        assert_eq!(
            parse_forward("1100:mail.example.com:110"),
            Ok(spec("", 1100, "mail.example.com", 110))
        );
        assert_eq!(
            parse_forward("127.0.0.1:10080:mail:110"),
            Ok(spec("127.0.0.1", 10080, "mail", 110))
        );
        assert_eq!(parse_forward("*:0:db:5432"), Ok(spec("*", 0, "db", 5432)));
        assert_eq!(
            parse_forward("[::1]:8080:[::1]:80"),
            Ok(spec("::1", 8080, "::1", 80))
        );
        assert_eq!(
            parse_forward(" 8080:[2001:db8::1]:80 "),
            Ok(spec("", 8080, "2001:db8::1", 80))
        );
        assert_eq!(
            spec("::1", 8080, "::1", 80).to_string(),
            "[::1]:8080:[::1]:80"
        );
    }

    #[test]
    fn bad_forward_specs_say_how_to_fix_them() {
        let e = parse_forward("1100:mail").unwrap_err().0;
        assert!(
            e.contains("2 parts") && e.contains("[bind_address:]port:host:hostport"),
            "{e}"
        );
        let e = parse_forward("x:mail:110").unwrap_err().0;
        assert!(e.contains("listen port \"x\""), "{e}");
        let e = parse_forward("1100:mail:0").unwrap_err().0;
        assert!(e.contains("destination port must be 1-65535"), "{e}");
        let e = parse_forward("1100:mail:70000").unwrap_err().0;
        assert!(e.contains("70000"), "{e}");
        let e = parse_forward("[::1:8080:a:1").unwrap_err().0;
        assert!(e.contains("unclosed '['"), "{e}");
        assert!(parse_forward("").is_err());
        let e = parse_forward(&format!("1:{}:2", "a".repeat(300)))
            .unwrap_err()
            .0;
        assert!(e.contains("at most 253"), "{e}");
        assert!(parse_forward("1:[]:2").is_err());
    }

    /// Found by the forward_spec fuzz target: stray brackets inside a field were kept,
    /// and the spec's Display form then no longer parsed.
    #[test]
    fn stray_brackets_are_refused_not_shown_back_unparseable() {
        let e = parse_forward("[01][01]:08:[20:]:80").unwrap_err().0;
        assert!(e.contains("bind address \"01][01\" has a stray"), "{e}");
        let e = parse_forward("1:[[a]]:2").unwrap_err().0;
        assert!(e.contains("destination host \"[a]\" has a stray"), "{e}");
        let e = parse_forward("1:[a][b]:2").unwrap_err().0;
        assert!(
            e.contains("only a whole IPv6 address goes in brackets"),
            "{e}"
        );
        let ok = parse_forward("[::1]:1:[20::]:80").unwrap();
        assert_eq!(parse_forward(&ok.to_string()), Ok(ok));
    }

    #[test]
    fn pasted_commands_fill_the_form() {
        let cmd =
            parse_ssh_command("ssh -N -p 2222 -L 1100:mail:110 -L8080:localhost:80 alice@host")
                .unwrap();
        assert_eq!(cmd.user.as_deref(), Some("alice"));
        assert_eq!(cmd.host, "host");
        assert_eq!(cmd.port, Some(2222));
        assert_eq!(cmd.forwards, vec!["1100:mail:110", "8080:localhost:80"]);
        assert_eq!(cmd.ignored, vec!["-N"]);

        let cmd =
            parse_ssh_command("-NfL 1100:mail:110 -i ~/.ssh/id other.example.com uptime").unwrap();
        assert_eq!(cmd.user, None);
        assert_eq!(cmd.host, "other.example.com");
        assert_eq!(cmd.forwards, vec!["1100:mail:110"]);
        assert_eq!(cmd.ignored, vec!["-N", "-f", "-i ~/.ssh/id", "uptime"]);

        let cmd = parse_ssh_command("ssh ssh://bob@[::1]:2200").unwrap();
        assert_eq!(
            (cmd.user.as_deref(), cmd.host.as_str(), cmd.port),
            (Some("bob"), "::1", Some(2200))
        );
    }

    #[test]
    fn bad_commands_get_clear_errors() {
        assert!(
            parse_ssh_command("ssh -L")
                .unwrap_err()
                .0
                .contains("-L needs a value")
        );
        assert!(
            parse_ssh_command("ssh -L 1:2 host")
                .unwrap_err()
                .0
                .starts_with("-L 1:2:")
        );
        assert!(
            parse_ssh_command("ssh -N")
                .unwrap_err()
                .0
                .contains("no host")
        );
        assert!(
            parse_ssh_command("ssh -Z host")
                .unwrap_err()
                .0
                .contains("-Z is not an ssh option")
        );
        assert!(
            parse_ssh_command("ssh 'host")
                .unwrap_err()
                .0
                .contains("unclosed quote")
        );
    }

    #[test]
    fn dynamic_specs_like_ssh_d() {
        let dynamic = |bind: &str, port| DynamicSpec {
            bind: bind.into(),
            port,
        };
        assert_eq!(parse_dynamic("1080"), Ok(dynamic("", 1080)));
        assert_eq!(parse_dynamic(" 0 "), Ok(dynamic("", 0)));
        assert_eq!(
            parse_dynamic("127.0.0.1:1080"),
            Ok(dynamic("127.0.0.1", 1080))
        );
        assert_eq!(parse_dynamic("*:1080"), Ok(dynamic("*", 1080)));
        assert_eq!(parse_dynamic("[::1]:1080"), Ok(dynamic("::1", 1080)));
        for spec in ["1080", "localhost:1080", "[::1]:1080", "*:0"] {
            let parsed = parse_dynamic(spec).unwrap();
            assert_eq!(parsed.to_string(), spec);
            assert_eq!(spec.parse::<DynamicSpec>(), Ok(parsed));
        }
    }

    #[test]
    fn bad_dynamic_specs_say_how_to_fix_them() {
        let e = parse_dynamic("").unwrap_err().0;
        assert!(e.contains("e.g. 1080"), "{e}");
        let e = parse_dynamic("1080:localhost:80").unwrap_err().0;
        assert!(
            e.contains("names a destination") && e.contains("use -L"),
            "{e}"
        );
        let e = parse_dynamic("socks").unwrap_err().0;
        assert!(
            e.contains("listen port \"socks\" is not a number")
                && e.contains("[bind_address:]port"),
            "{e}"
        );
        let e = parse_dynamic("70000").unwrap_err().0;
        assert!(e.contains("70000"), "{e}");
        let e = parse_dynamic("127.0.0.1:").unwrap_err().0;
        assert!(e.contains("listen port is missing"), "{e}");
        let e = parse_dynamic("[::1:1080").unwrap_err().0;
        assert!(e.contains("unclosed '['"), "{e}");
        let e = parse_dynamic("a b:1080").unwrap_err().0;
        assert!(e.contains("spaces or control characters"), "{e}");
        let e = parse_dynamic("[a][b]:1080").unwrap_err().0;
        assert!(e.contains("stray"), "{e}");
        let e = parse_dynamic(&format!("{}:1", "a".repeat(300)))
            .unwrap_err()
            .0;
        assert!(e.contains("at most 253"), "{e}");
    }

    #[test]
    fn either_kind_by_its_option() {
        assert_eq!(
            parse_any("-D 1080"),
            Ok(AnySpec::Dynamic(DynamicSpec {
                bind: String::new(),
                port: 1080
            }))
        );
        assert_eq!(
            parse_any("-D127.0.0.1:0").unwrap().to_string(),
            "-D 127.0.0.1:0"
        );
        assert_eq!(
            parse_any("-L 1100:mail:110"),
            Ok(AnySpec::Local(spec("", 1100, "mail", 110)))
        );
        assert_eq!(
            parse_any("1100:mail:110"),
            Ok(AnySpec::Local(spec("", 1100, "mail", 110)))
        );
        // Without an option, a spec is read as -L always read it, messages and all.
        assert_eq!(parse_any("1080"), parse_forward("1080").map(AnySpec::Local));
        assert!(parse_any("-D 1:mail:2").is_err());
    }

    #[test]
    fn pasted_commands_keep_their_dynamic_forwards() {
        let cmd =
            parse_ssh_command("ssh -N -D 1080 -D127.0.0.1:1081 -L 1:mail:110 alice@host").unwrap();
        assert_eq!(cmd.dynamic, vec!["1080", "127.0.0.1:1081"]);
        assert_eq!(cmd.forwards, vec!["1:mail:110"]);
        assert_eq!(cmd.ignored, vec!["-N"]);
        let cmd = parse_ssh_command("ssh -fND 1080 host").unwrap();
        assert_eq!(cmd.dynamic, vec!["1080"]);
        let e = parse_ssh_command("ssh -D 1080:mail:80 host").unwrap_err().0;
        assert!(
            e.starts_with("-D 1080:mail:80: ") && e.contains("use -L"),
            "{e}"
        );
        assert!(
            parse_ssh_command("ssh host -D")
                .unwrap()
                .ignored
                .contains(&"-D".to_owned()),
            "after the host it is the remote command's"
        );
    }

    #[test]
    fn remote_specs_like_ssh_r() {
        let remote = |bind: &str, port, host: &str, host_port| RemoteSpec {
            bind: bind.into(),
            port,
            host: host.into(),
            host_port,
        };
        assert_eq!(
            parse_remote("8080:127.0.0.1:3000"),
            Ok(remote("", 8080, "127.0.0.1", 3000))
        );
        assert_eq!(
            parse_remote(" 0:localhost:3000 "),
            Ok(remote("", 0, "localhost", 3000)),
            "-R 0: the SSH server picks the port"
        );
        assert_eq!(
            parse_remote("*:8080:[::1]:3000"),
            Ok(remote("*", 8080, "::1", 3000))
        );
        assert_eq!(
            parse_remote("[::1]:8080:db:5432"),
            Ok(remote("::1", 8080, "db", 5432))
        );
        for spec in [
            "8080:127.0.0.1:3000",
            "*:0:[::1]:3000",
            "10.0.0.1:80:web:8080",
        ] {
            let parsed = parse_remote(spec).unwrap();
            assert_eq!(parsed.to_string(), spec);
            assert_eq!(spec.parse::<RemoteSpec>(), Ok(parsed));
        }
    }

    #[test]
    fn bad_remote_specs_say_how_to_fix_them() {
        let e = parse_remote("").unwrap_err().0;
        assert!(
            e.starts_with("the remote forward is empty") && e.contains("8080:127.0.0.1:3000"),
            "{e}"
        );
        for spec in ["8080", "127.0.0.1:8080"] {
            let e = parse_remote(spec).unwrap_err().0;
            assert!(
                e.contains("names no destination") && e.contains("not supported"),
                "{e}"
            );
        }
        let e = parse_remote("8080:web:0").unwrap_err().0;
        assert!(e.contains("destination port must be 1-65535"), "{e}");
        let e = parse_remote("8080:web:").unwrap_err().0;
        assert!(
            e.contains("destination port is missing") && e.contains("the relay connects"),
            "{e}"
        );
        let e = parse_remote("x:web:80").unwrap_err().0;
        assert!(e.contains("listen port \"x\""), "{e}");
        let e = parse_remote("1:2:3:4:5").unwrap_err().0;
        assert!(e.contains("5 parts"), "{e}");
        let e = parse_remote("[::1:8080:a:1").unwrap_err().0;
        assert!(e.contains("unclosed '['"), "{e}");
        let e = parse_remote("1:[a][b]:2").unwrap_err().0;
        assert!(e.contains("stray"), "{e}");
        // -L's messages are its own still.
        let e = parse_forward("").unwrap_err().0;
        assert_eq!(
            e,
            "the forward is empty; write it as [bind_address:]port:host:hostport, e.g. 1100:mail.example.com:110"
        );
    }

    #[test]
    fn remote_by_its_option_and_in_pasted_commands() {
        assert_eq!(
            parse_any("-R 8080:127.0.0.1:3000").unwrap().to_string(),
            "-R 8080:127.0.0.1:3000"
        );
        assert!(matches!(parse_any("-R0:db:1"), Ok(AnySpec::Remote(_))));
        assert!(parse_any("-R 8080").is_err());
        let cmd = parse_ssh_command(
            "ssh -N -R 8080:127.0.0.1:3000 -R0:db:5432 -L 1:mail:110 -D 1080 alice@host",
        )
        .unwrap();
        assert_eq!(cmd.remote, vec!["8080:127.0.0.1:3000", "0:db:5432"]);
        assert_eq!(cmd.forwards, vec!["1:mail:110"]);
        assert_eq!(cmd.dynamic, vec!["1080"]);
        assert_eq!(cmd.ignored, vec!["-N"]);
        let cmd = parse_ssh_command("ssh -fNR 80:web:8080 host").unwrap();
        assert_eq!(cmd.remote, vec!["80:web:8080"]);
        let e = parse_ssh_command("ssh -R 8080 host").unwrap_err().0;
        assert!(
            e.starts_with("-R 8080: ") && e.contains("names no destination"),
            "{e}"
        );
    }

    /// Found by the ssh_command fuzz target: garbage around a bracketed address became
    /// part of the host, or was dropped without a word.
    #[test]
    fn malformed_destinations_are_refused() {
        let e = parse_ssh_command("ssh ssh://bob@:[::]20000").unwrap_err().0;
        assert!(e.contains("contains '['"), "{e}");
        let e = parse_ssh_command("ssh [::1]2200").unwrap_err().0;
        assert!(e.contains("write [address] or [address]:port"), "{e}");
        let e = parse_ssh_command("ssh 'a b'").unwrap_err().0;
        assert!(e.contains("contains ' '"), "{e}");
        let e = parse_ssh_command("ssh -- -oProxyCommand=x").unwrap_err().0;
        assert!(e.contains("starts with '-'"), "{e}");
        let cmd = parse_ssh_command("ssh -p 22 -- host -x").unwrap();
        assert_eq!(
            (cmd.host.as_str(), cmd.ignored),
            ("host", vec!["-x".to_owned()])
        );
        assert_eq!(parse_ssh_command("ssh [::1]").unwrap().host, "::1");
    }
}
