//! Places held without credentials: pre-Hello WebSockets, session places, sshd
//! startups, forward ports.
