// Forward specs and who can reach a forward. No DOM here: tested by web/test/reach.test.js.

/** An IPv6 address in brackets, as a spec needs it; anything else as it is. */
export function bracketIfV6(s) {
  return s.includes(":") && !s.startsWith("[") ? `[${s}]` : s;
}

/** `[bind:]port:host:hostport` from the form's separate fields, or "" when all are empty. */
export function specFromFields({ bind, port, host, hostport }) {
  if (!bind && !port && !host && !hostport) return "";
  const parts = [port, bracketIfV6(host), hostport];
  if (bind) parts.unshift(bracketIfV6(bind));
  return parts.join(":");
}

/**
 * Who can reach a forward listening on `listen` ("127.0.0.1:20001", "0.0.0.0:20001",
 * "[::]:20001"), and the address to give them: the relay's public_host if it has one,
 * else for a wildcard bind the name the page was loaded from (`pageHost`).
 * `relay` is { publicHost, allowedSources } from /api/targets.
 */
export function reachOf(listen, relay, pageHost) {
  const colon = listen.lastIndexOf(":");
  const host = listen.slice(0, colon).replace(/^\[|\]$/g, "");
  const port = listen.slice(colon + 1);
  // The relay closes clients from outside its allowed sources, loopback ones included.
  const sources = relay.allowedSources;
  const only = sources.length > 0 ? `, from ${sources.join(" or ")} only` : "";
  if (colon < 0 || host === "localhost" || host === "::1" || host.startsWith("127.")) {
    return {
      connect: null,
      sentence: `Only programs on the relay host (any user on it) can use this forward${only}.`,
    };
  }
  const wildcard = host === "0.0.0.0" || host === "::";
  const page = pageHost.replace(/^\[|\]$/g, "");
  const name = relay.publicHost ?? (wildcard ? page : host);
  const connect = name.includes(":") ? `[${name}]:${port}` : `${name}:${port}`;
  // A page loaded as localhost (through a tunnel, say) must not make a forward open to the
  // whole network look local.
  const who = wildcard && relay.publicHost == null
    ? `Anyone who can reach any address of the relay host on port ${port}`
    : `Anyone who can reach ${connect}`;
  return { connect, sentence: `${who} can use this forward${only}.` };
}

/**
 * A remote forward's row (`-R [bind:]port:host:hostport`): where the SSH server listens
 * (`listen`, as the forward reports it: "localhost:8080", "*:8080"), where the relay
 * connects (`destination`, from the spec), and who can use it. Null for any other spec.
 */
export function remoteOf(spec, listen) {
  const text = String(spec).trim();
  if (!text.startsWith("-R")) return null;
  // host:hostport are the last two fields; a host in brackets may hold colons.
  const match = /(\[[^\]]*\]|[^:]*):(\d+)$/.exec(text.slice(2).trim());
  const destination = match ? `${match[1]}:${match[2]}` : "";
  const colon = listen.lastIndexOf(":");
  const host = listen.slice(0, colon).replace(/^\[|\]$/g, "");
  const port = listen.slice(colon + 1);
  const local = host === "localhost" || host === "::1" || host.startsWith("127.");
  const who = local
    ? "Programs on the SSH server"
    : host === "*"
      ? `Anyone who can reach the SSH server on port ${port} (if its GatewayPorts allows it)`
      : `Anyone who can reach ${listen} on the SSH server`;
  return {
    listen,
    destination,
    sentence: `${who} reach ${destination} through the relay host.`,
  };
}
