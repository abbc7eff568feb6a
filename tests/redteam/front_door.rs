//! The front door: TCP connections, HTTP requests and TLS handshakes held without
//! credentials, and the client address behind trusted proxies.
