// The "REMOTE HOST IDENTIFICATION HAS CHANGED" panel: both fingerprints, and the one
// explicit way to replace a remembered key (forget it, then connect and confirm anew).

const $ = (id) => document.getElementById(id);

export class MismatchPanel {
  /** `onForget(target, algorithm)` runs when the user clicks "Forget the old key". */
  constructor(onForget) {
    this.panel = $("hostkey-mismatch");
    $("hostkey-forget").addEventListener("click", () => {
      const target = this.panel.dataset.target;
      if (!target) return;
      const algorithm = this.panel.dataset.algorithm || "";
      this.hide();
      onForget(target, algorithm);
    });
  }

  /** `known` and `offered` are { fingerprint, algorithm }. */
  show(target, known, offered) {
    $("mismatch-target").textContent = target;
    $("mismatch-old").textContent = known.fingerprint;
    $("mismatch-new").textContent = offered.fingerprint;
    $("mismatch-old-alg").textContent = known.algorithm ? ` (${known.algorithm})` : "";
    $("mismatch-new-alg").textContent = offered.algorithm ? ` (${offered.algorithm})` : "";
    this.panel.dataset.target = target;
    this.panel.dataset.algorithm = known.algorithm || "";
    this.panel.hidden = false;
    this.panel.scrollIntoView({ block: "nearest" });
  }

  hide() {
    this.panel.hidden = true;
    delete this.panel.dataset.target;
    delete this.panel.dataset.algorithm;
  }
}
