//! Browser-origin attacks: DNS rebinding, framing, what the page is served with.
