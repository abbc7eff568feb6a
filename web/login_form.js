// The connection form's fields: target, access token, user name and credentials. Secrets
// (password, private key, passphrase) are read at connect time and handed to the SSH
// client; they are never written to storage, the URL or the console.

import { messageOf } from "./text.js";

const $ = (id) => document.getElementById(id);

/** Largest key file read: anything bigger is not a private key. */
const MAX_KEY_FILE = 64 * 1024;

export class LoginForm {
  /** `showError(text)` reports a key file that cannot be used ("" clears). */
  constructor(showError) {
    this.showError = showError;
    this.target = $("target");
    this.token = $("token");
    this.username = $("username");
    this.authPassword = $("auth-password");
    this.authKey = $("auth-key");
    this.password = $("password");
    this.keyfile = $("keyfile");
    this.privateKey = $("private-key");
    this.passphrase = $("passphrase");
    this.authPassword.addEventListener("change", () => this.showAuthFields());
    this.authKey.addEventListener("change", () => this.showAuthFields());
    this.keyfile.addEventListener("change", () => this.readKeyFile());
    this.showAuthFields();
  }

  /** Every control that is editable only while disconnected (the target aside). */
  get controls() {
    return [this.token, this.username, this.authPassword, this.authKey, this.password, this.keyfile,
      this.privateKey, this.passphrase];
  }

  get usesKey() {
    return this.authKey.checked;
  }

  showAuthFields() {
    $("key-fields").hidden = !this.usesKey;
    $("password-fields").hidden = this.usesKey;
  }

  /**
   * The options for the SSH client's connect(), or { error, focus } saying what is missing.
   * `targetsLoaded` tells "pick one" from "there is none to pick".
   */
  read(targetsLoaded) {
    const target = this.target.value;
    const username = this.username.value.trim();
    if (!target) {
      const error = targetsLoaded ? "Pick a target." : "No target to connect to: the relay's target list is unavailable or empty.";
      return { error, focus: this.target };
    }
    if (!username) return { error: "Enter a user name.", focus: this.username };
    const options = { target, username };
    const token = this.token.value.trim();
    if (token) options.token = token;
    if (this.usesKey) {
      const key = this.privateKey.value.trim();
      if (!key) return { error: "Paste a private key or choose a key file.", focus: this.privateKey };
      options.privateKey = `${key}\n`;
      if (this.passphrase.value !== "") options.passphrase = this.passphrase.value;
    } else if (this.password.value !== "") {
      // Empty is fine: the server's questions (password, codes) are then asked in a dialog.
      options.password = this.password.value;
    }
    return { options };
  }

  async readKeyFile() {
    const file = this.keyfile.files && this.keyfile.files[0];
    if (!file) return;
    this.showError("");
    if (file.size > MAX_KEY_FILE) {
      this.showError(`${file.name} is too large to be a private key.`);
      return;
    }
    try {
      this.privateKey.value = await file.text();
      this.authKey.checked = true;
      this.showAuthFields();
    } catch (err) {
      this.showError(`Could not read ${file.name}: ${messageOf(err)}`);
    }
  }
}
