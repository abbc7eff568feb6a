// Host keys this browser trusts, in localStorage. Like OpenSSH's known_hosts: one key per
// relay, target and key type; a server that offers another type is a new key to
// confirm, not a changed one.

const KNOWN_HOSTS_KEY = "tabtunnel.knownHosts";

export class KnownHosts {
  /** `relay`: the relay's origin, the first part of every entry's id. */
  constructor(relay) {
    this.relay = relay;
  }

  id(target, algorithm) {
    return `${this.relay}|${target}|${algorithm}`;
  }

  load() {
    try {
      const raw = window.localStorage.getItem(KNOWN_HOSTS_KEY);
      if (!raw) return {};
      const obj = JSON.parse(raw);
      return obj && typeof obj === "object" && !Array.isArray(obj) ? obj : {};
    } catch {
      return {};
    }
  }

  save(obj) {
    try {
      window.localStorage.setItem(KNOWN_HOSTS_KEY, JSON.stringify(obj));
      return true;
    } catch {
      return false;
    }
  }

  /** { fingerprint, algorithm, added } remembered for the target's key type, or null. */
  get(target, algorithm) {
    const entry = this.load()[this.id(target, algorithm)];
    return entry && typeof entry.fingerprint === "string" ? entry : null;
  }

  remember(target, fingerprint, algorithm) {
    const all = this.load();
    all[this.id(target, algorithm)] = { fingerprint, algorithm, added: new Date().toISOString() };
    return this.save(all);
  }

  /** Key types other than `algorithm` this browser knows for the target. */
  otherTypes(target, algorithm) {
    const prefix = `${this.relay}|${target}|`;
    return Object.keys(this.load())
      .filter((id) => id.startsWith(prefix) && id !== this.id(target, algorithm))
      .map((id) => id.slice(prefix.length));
  }

  forget(target, algorithm) {
    const all = this.load();
    delete all[this.id(target, algorithm)];
    this.save(all);
  }
}
