// Types of the tabtunnel client package (hand-written: the package's API is the worker-based
// client in wasm.js, whose shape wasm-bindgen cannot see). Keep in step with
// client-wasm/src/lib.rs (options, states, errors) and web/wasm.js (the proxies).

/** Starts the client's worker; resolves once the wasm has loaded. */
export function loadClient(options?: LoadOptions): Promise<Client>;

export interface LoadOptions {
  /** Told, once, why the client could not load or why it stopped later. */
  onStop?: (reason: string) => void;
}

export interface Client {
  /** Opens an SSH session through the relay. Rejects with a {@link ClientError}. */
  connect(options: ConnectOptions): Promise<Session>;
  /** Parses `[bind:]port:host:hostport`. Rejects with code "bad-spec". */
  parseForwardSpec(text: string): Promise<ForwardSpec>;
  /** Parses `[bind:]port`, an `ssh -D` spec. Rejects with code "bad-spec". */
  parseDynamicSpec(text: string): Promise<DynamicSpec>;
  /** Parses a pasted `ssh ...` line. Rejects with code "bad-command". */
  parseSshCommand(text: string): Promise<SshCommand>;
  /** Forgets the remembered host key of `target` (of type `algorithm`) at this relay. */
  forgetHostKey(target: string, algorithm: string): Promise<void>;
}

export interface ConnectOptions {
  /** The relay's origin (`https://relay.example`); default: the page's own origin. */
  relay?: string;
  /** The relay's target name (its config's `[targets]`). */
  target: string;
  /** A relay access token, if the relay requires one. */
  token?: string;
  username: string;
  password?: string;
  /** An OpenSSH or PEM private key. */
  privateKey?: string;
  passphrase?: string;
  /**
   * The server's host key as an SHA256 fingerprint (`SHA256:...`): a different key is
   * refused with code "host-key-mismatch".
   */
  hostKey?: string;
  /**
   * `true`: remember accepted host keys in this origin's localStorage (per relay, target
   * and key type); a changed key is refused with code "host-key-changed".
   */
  knownHosts?: boolean;
  /**
   * Asked about a host key not known before; answer true to accept. `pinned`: the relay
   * pins keys for this target; `knownTypes`: key types already remembered for it.
   */
  onHostKey?: (
    fingerprint: string,
    algorithm: string,
    pinned: boolean,
    knownTypes: string[],
  ) => boolean | Promise<boolean>;
  /** Keyboard-interactive prompts; answer one string per prompt, or null to cancel. */
  onPrompt?: (request: PromptRequest) => string[] | null | undefined | Promise<string[] | null | undefined>;
  /** Called once when the session ends, with why. */
  onClose?: (reason: string) => void;
  /** The session's link changes (implies `reconnect: true` unless it is `false`). */
  onStateChange?: (state: ConnectionState) => void;
  /** Reconnect after a transient drop: true, false, or the backoff. */
  reconnect?: boolean | ReconnectOptions;
  /** Seconds between keepalives (0: none), as OpenSSH's ServerAliveInterval. */
  serverAliveInterval?: number;
  /** Unanswered keepalives before the session is dropped (at least 1). */
  serverAliveCountMax?: number;
}

export interface ReconnectOptions {
  firstDelayMs?: number;
  maxDelayMs?: number;
  giveUpAfterMs?: number;
}

export interface PromptRequest {
  name: string;
  instructions: string;
  prompts: { prompt: string; echo: boolean }[];
}

/** The link of a session that reconnects. */
export type ConnectionState =
  | { state: "live" }
  | { state: "reconnecting"; attempt: number; nextTryMs: number; reason: string }
  | { state: "restored"; resumed: boolean }
  | { state: "gave-up"; reason: string };

export type ConnectionStateName = ConnectionState["state"];

export interface Session {
  readonly hostKeyFingerprint: string;
  readonly hostKeyAlgorithm: string;
  /** Why the session ended, or undefined while it is live. */
  readonly closedReason: string | undefined;
  /**
   * Listens on the relay for `[bind:]port:host:hostport` (port 0: the relay picks one),
   * or, for `-D [bind:]port`, runs a SOCKS proxy there (SOCKS5, 4 and 4a; names are
   * resolved by the SSH server) like `ssh -D`. `check: true` first tries one connection
   * to a `-L` destination and fails if it cannot.
   * `-R [bind:]port:host:hostport` (or `remote: true` with the spec alone) opens a remote
   * forward: the SSH server listens (port 0: it picks one, shown in `listen`), and the
   * relay connects to `host:hostport` if its operator allows it (else code
   * "destination-not-allowed"; a server that will not listen: "remote-listen-refused").
   */
  forward(spec: string, options?: ForwardOptions): Promise<Forward>;
  close(): Promise<void>;
}

export interface ForwardOptions {
  check?: boolean;
  /**
   * Read the spec as `-D`'s (`[bind:]port`). An object also sets the SOCKS5 username and
   * password the proxy's clients must give: the relay lets a SOCKS forward without them
   * listen on loopback only.
   */
  dynamic?: boolean | { username: string; password?: string };
  /** Read the spec as `-R`'s (`[bind:]port:host:hostport`). */
  remote?: boolean;
}

export interface Forward {
  /**
   * Where the relay listens for this forward (`host:port`); for a remote forward, where
   * the SSH server listens (`localhost:8080`).
   */
  readonly listen: string;
  readonly spec: string;
  /** `"local"` (`ssh -L`), `"dynamic"` (`ssh -D`, a SOCKS proxy) or `"remote"` (`ssh -R`). */
  readonly kind: "local" | "dynamic" | "remote";
  /** Where a browser opens the forward as a web app, or null. */
  readonly webUrl: string | null;
  /**
   * The latest numbers (answers at once; asks the worker for fresh ones, so poll it on
   * a timer).
   */
  stats(): ForwardStats;
  close(): Promise<void>;
}

export interface ForwardStats {
  /** Connections accepted so far. */
  connections: number;
  /** Connections open now. */
  active: number;
  bytesUp: number;
  bytesDown: number;
  failures: number;
  lastError: string | null;
  /** Where each open connection goes (`host:port`), oldest first. */
  live?: string[];
}

export interface ForwardSpec {
  bind: string;
  port: number;
  host: string;
  hostPort: number;
}

export interface DynamicSpec {
  bind: string;
  port: number;
}

export interface SshCommand {
  user?: string;
  host: string;
  port?: number;
  /** The `-L` specs. */
  forwards: string[];
  /** The `-D` specs. */
  dynamic: string[];
  /** The `-R` specs. */
  remote: string[];
  ignored: string[];
}

/** `error.code` of the client's own errors (client-core's `ClientError::code`). */
export type ClientErrorCode =
  | "transport"
  | "auth-failed"
  | "auth-cancelled"
  | "no-credentials"
  | "bad-key"
  | "wrong-passphrase"
  | "host-key-rejected"
  | "host-key-unknown"
  | "host-key-mismatch"
  | "host-key-changed"
  | "bad-spec"
  | "bad-command"
  | "bad-options"
  | "channel-refused"
  | "remote-listen-refused"
  | "ssh"
  | "protocol"
  | "closed"
  | "known-hosts"
  | "client-stopped";

/** `error.code` of a refusal from the relay (proto's `ErrorCode`). */
export type RelayErrorCode =
  | "protocol"
  | "version"
  | "unknown-target"
  | "target-unreachable"
  | "port-not-allowed"
  | "port-in-use"
  | "bind-not-allowed"
  | "duplicate-forward"
  | "limit"
  | "shutting-down"
  | "internal"
  | "unauthorized"
  | "source-not-allowed"
  | "idle"
  | "ssh-closed"
  | "destination-not-allowed"
  | "unknown";

export type ErrorCode = ClientErrorCode | RelayErrorCode;

/** What the client's promises reject with. */
export interface ClientError extends Error {
  code: ErrorCode;
  /** "host-key-changed": the key type, the remembered and the offered fingerprints. */
  algorithm?: string;
  remembered?: string;
  offered?: string;
}
