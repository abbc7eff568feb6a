//! Bounds inside a session: memory per connection, Listen cost, loopback families,
//! WebSocket protocol violations, idle time.
