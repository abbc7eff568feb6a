// The page's shape by state. While a session is up the connection card folds into one
// line (status, Details, Disconnect) and the forwards come next, the paste card after
// them; Details unfolds the card, Escape folds it again.

const $ = (id) => document.getElementById(id);

export class PageLayout {
  constructor() {
    this.card = $("connection");
    this.details = $("connection-details");
    this.unfolded = false;
    this.live = false;
    this.details.addEventListener("click", () => {
      this.unfolded = !this.unfolded;
      this.render(this.live);
    });
    this.card.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && this.live && this.unfolded) {
        ev.preventDefault();
        this.unfolded = false;
        this.render(this.live);
        this.details.focus();
      }
    });
  }

  /**
   * `state`: the connection's. Any state but "disconnected" and "connecting" has a
   * session (so a "reconnecting" one keeps the forwards first, too).
   */
  render(state) {
    const live = state !== "disconnected" && state !== "connecting";
    if (!live) this.unfolded = false;
    const cameUp = live && !this.live;
    this.live = live;
    const folded = live && !this.unfolded;
    this.card.classList.toggle("folded", folded);
    document.body.dataset.session = live ? "live" : "none";
    this.details.hidden = !live;
    this.details.textContent = folded ? "Details" : "Hide details";
    this.details.setAttribute("aria-expanded", String(!folded));
    // The paste card moves, never the others: it is the one that does not hold the focus
    // when the state changes (Connect and Disconnect are in the connection card).
    const paste = $("paste");
    const forwards = $("forwarding");
    const pasteFirst = paste.compareDocumentPosition(forwards) & Node.DOCUMENT_POSITION_FOLLOWING;
    if (live && pasteFirst) forwards.after(paste);
    else if (!live && !pasteFirst) forwards.before(paste);
    // Once the session is up, the focus goes on at the forwards: the login it was in is
    // folded away, and on Connect, now Disconnect, a second Enter would end the session.
    const active = document.activeElement;
    if (cameUp && (!active || active === document.body || this.card.contains(active))) {
      $("forwards-title").focus();
    }
  }
}
